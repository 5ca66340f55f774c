#!/usr/bin/env bash
# The first command: set up on a fresh machine and run on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec scripts/serve.sh
