"""The work of the composite action (action.yml): install, run the plan, verify the evidence.

Reads its inputs from the environment (``INPUT_PLAN``, ``INPUT_ARGS``, ``INPUT_EVIDENCE``,
``INPUT_INSTALL``; ``GITHUB_ACTION_PATH`` is the action's own checkout), and writes ``exit-code``,
``run-id``, ``outcome`` and ``verified`` to ``GITHUB_OUTPUT``. It exits 0 whatever the plan's
verdict, so that the evidence is uploaded next; the action's last step fails the job with
``exit-code``. A run whose evidence does not verify gets exit code 1 (unless it failed already).
Runs with the Python that runs it (``python3`` on the runner), without a shell.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path


def output(**values: object) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    lines = "".join(f"{key}={value}\n" for key, value in values.items())
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(lines)
    else:
        sys.stdout.write(lines)


def main() -> int:
    plan = os.environ.get("INPUT_PLAN", "").strip()
    if not plan:
        print("::error title=pytest-release::the action's 'plan' input is empty")
        output(**{"exit-code": 4})
        return 0
    evidence = Path(os.environ.get("INPUT_EVIDENCE") or "evidence/release")
    install = os.environ.get("INPUT_INSTALL", "").strip() or os.environ.get("GITHUB_ACTION_PATH", "")
    if install and install != "none":
        print(f"::group::pip install {install}", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *shlex.split(install)])
        print("::endgroup::", flush=True)
        if done.returncode != 0:
            print(f"::error title=pytest-release::pip install {install} failed (exit code {done.returncode})")
            output(**{"exit-code": 3})
            return 0
    command = [sys.executable, "-m", "pytest", "--release-plan", plan, "--release-evidence-dir", str(evidence),
               "-p", "no:cacheprovider", *shlex.split(os.environ.get("INPUT_ARGS", ""))]
    print("pytest-release: " + shlex.join(command[1:]), flush=True)
    latest = evidence / "LATEST"
    before = latest.read_text("utf-8").strip() if latest.is_file() else ""
    env = {**os.environ, "GITHUB_ACTIONS": os.environ.get("GITHUB_ACTIONS", "true")}
    code = subprocess.run(command, env=env).returncode
    run_id = latest.read_text("utf-8").strip() if latest.is_file() else ""
    if run_id == before:
        run_id = ""  # this run sealed nothing (a plan error): an earlier run is not this one
    outcome, verified = "", False
    if run_id:
        try:
            outcome = json.loads((evidence / "runs" / run_id / "summary.json").read_text("utf-8"))["banner"]
        except (OSError, ValueError, KeyError):
            outcome = ""
        check = subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence), "--run", run_id])
        verified = check.returncode == 0
        if not verified:
            print(f"::error title=pytest-release::the evidence of run {run_id} does not verify against its manifest")
            code = code or 1
    output(**{"exit-code": code, "run-id": run_id, "outcome": outcome, "verified": str(verified).lower()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
