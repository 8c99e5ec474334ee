#!/usr/bin/env bash
# Set up (scripts/setup.sh test) and run the whole test suite; extra
# arguments go to pytest, e.g. scripts/test.sh -k registry
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
