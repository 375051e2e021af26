#!/usr/bin/env bash
# The test suite, set up from nothing: the Debian packages the tests drive (Chromium, PostgreSQL,
# Prometheus), a virtual environment in .venv with the package and its test dependencies from
# PyPI, then pytest on two workers. Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: installed when missing (needs root and apt-get; otherwise say what is missing).
# Chromium opens the HTML report; PostgreSQL's server binaries serve the dsn tests, Prometheus's
# the metrics tests (the tests start private servers of their own on 127.0.0.1 and free ports,
# never the system service the package may start).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages: ${need[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing: ${need[*]} (install them with your package manager, e.g. apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# test: what the tests drive; dev: what .ci/run checks besides them (ruff, mypy, import-linter, MkDocs).
.venv/bin/python -m pip install --quiet -e '.[test,dev]' >.venv/install.log 2>&1 || { cat .venv/install.log; exit 1; }
[ "${RELEASE_SETUP_ONLY:-}" = 1 ] && exit 0
exec .venv/bin/python -m pytest -n 2 "$@"
