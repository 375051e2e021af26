#!/usr/bin/env bash
# The test suite, set up from nothing: a virtual environment in .venv with the package and its
# test dependencies from PyPI, then pytest on two workers. Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[test]' >.venv/install.log 2>&1 || { cat .venv/install.log; exit 1; }
exec .venv/bin/python -m pytest -n 2 "$@"
