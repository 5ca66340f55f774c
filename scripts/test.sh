#!/usr/bin/env bash
# The second command: lint and run the whole test suite. Uses PostgreSQL and
# Redis when DATABASE_URL / REDIS_URL are set, SQLite and in-memory otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
