#!/usr/bin/env bash
# The example, end to end: set up .venv with pytest-release, create the shop's database, deploy a
# release, start the service on 127.0.0.1:18080, run the release plan, stop the service.
#
#   bash example_project/run.sh          # the good release 1.0.0: every required gate passes, exit 0
#   bash example_project/run.sh bad      # release 1.1.0 (a missing migration): blocked, exit 1
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
case "${1:-good}" in
    good) version=1.0.0 ;;
    bad) version=1.1.0 ;;
    *) echo "usage: bash example_project/run.sh [good|bad]" >&2; exit 2 ;;
esac

cd "$root"
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e . >.venv/install.log 2>&1 || { cat .venv/install.log; exit 1; }
py="$root/.venv/bin/python"

cd "$here"
"$py" ctl.py stop >/dev/null
"$py" ctl.py init-db
"$py" ctl.py deploy "$version"
"$py" ctl.py start
trap '"$py" ctl.py stop' EXIT

set +e
"$py" -m pytest --release-plan release-plan.yaml -p no:cacheprovider
status=$?
set -e
echo
echo "release $version: pytest exit code $status"
run=$(cat "$here/evidence/release/LATEST")
echo "evidence: $here/evidence/release/runs/$run (report.html, junit.xml, summary.json, manifest.json)"
"$py" -m pytest_release verify "$here/evidence/release" --run "$run"
exit $status
