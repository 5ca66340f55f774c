#!/usr/bin/env bash
# The second command: lint and run the whole test suite. Uses PostgreSQL and
# Redis when DATABASE_URL / REDIS_URL are set, SQLite and in-memory otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# Tests that start no server, worker or browser run on every core (pytest-xdist:
# a test database and a Redis database per worker, tests/settings.py); those
# that do, and time what they start, run one at a time after them.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" -m "not slow and not browser and not clients"
exec .venv/bin/python -m pytest -m "slow or browser or clients"
