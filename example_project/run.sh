#!/usr/bin/env bash
# The example, end to end, as a release engineer would run it:
#   1. set up .venv with pytest-release; create the shop's database; deploy release 1.0.0 and
#      start the shop service on 127.0.0.1:18080 (what production runs today);
#   2. one pytest run of the plan's release_workflow: the pre_release stage checks what runs and
#      the rollback_gate takes the backups; the deploy step (ctl.py upgrade) deploys the new
#      release and restarts the service; the release and post_release stages judge it, and
#      post_release watches it for a monitoring window. If a required gate fails or an alert
#      fires, the plan's rollback procedures put 1.0.0, its data and its config back, and verify.
#
#   bash example_project/run.sh          # release 1.0.0 again: every gate passes, exit 0
#   bash example_project/run.sh bad      # release 1.1.0 (a broken migration): rolled back, exit 1
#
# A webhook receiver (receiver.py, 127.0.0.1:18081) logs the plan's notifications to
# var/notifications.log; evidence/release/index.html shows every run so far (run good, then bad).
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
.venv/bin/python -m pip install --quiet -e '.[example]' >.venv/install.log 2>&1 || { cat .venv/install.log; exit 1; }
export PATH="$root/.venv/bin:$PATH"    # python3 in the plan's commands is the venv's

cd "$here"
python3 ctl.py stop >/dev/null
rm -rf var
python3 ctl.py init-db
python3 ctl.py deploy 1.0.0
python3 ctl.py start
# The webhook receiver the plan's notify entry posts to: it logs what it receives.
export SHOP_WEBHOOK_SECRET=${SHOP_WEBHOOK_SECRET:-example-$RANDOM$RANDOM}
python3 receiver.py 18081 var/notifications.log &
receiver=$!
trap 'kill $receiver 2>/dev/null; python3 ctl.py stop' EXIT

echo "== release_workflow: validate (pre_release, backups), deploy $version, verify (release, post_release) =="
set +e
SHOP_RELEASE=$version python3 -m pytest --release-plan release-plan.yaml -p no:cacheprovider \
    --release-workflow release_workflow --release-version "$version"
status=$?
set -e
echo
echo "release $version: pytest exit code $status"
run=$(cat "$here/evidence/release/LATEST")
echo "evidence: $here/evidence/release/runs/$run (report.html, junit.xml, summary.json, manifest.json)"
# What the deploy printed and how long the rollback took, from the run's evidence.
python3 - "$here/evidence/release" "$run" <<'PY'
import json, pathlib, sys
root, run = pathlib.Path(sys.argv[1]), sys.argv[2]
for path in sorted((root / "validation" / "gates" / run / "deploy").rglob("*.json")):
    record = json.loads(path.read_text())
    if record.get("record") == "check":
        print(f"deploy: {record['summary']}")
        print("".join(f"    {line}\n" for line in record["measured"].get("output", [])), end="")
rollback = json.loads((root / "runs" / run / "summary.json").read_text()).get("rollback")
if rollback:
    first = rollback["first_failure"] or {}
    print(f"rollback: {rollback['outcome']} in {rollback['duration_s']}s; time to restore "
          f"{rollback['time_to_restore_s']}s from the first failure ({first.get('what', 'none')}: "
          f"{first.get('check', '-')})")
PY
python3 -m pytest_release verify "$here/evidence/release" --run "$run"
echo "notifications received (var/notifications.log):"
sed 's/^/  /' var/notifications.log 2>/dev/null || echo "  none"
echo "history of every run, with delivery metrics: $here/evidence/release/index.html"
echo "serving now: $(python3 ctl.py status | tr '\n' ' ')"
exit $status
