"""Collection benchmark: a generated plan of 10,000 checks against plain pytest collecting
10,000 parametrized tests, both measured in this run (``python bench/collect.py``).

Prints the best of N wall times of ``pytest --collect-only -q`` for each and their ratio.
Goal: at most 2.0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_plan(directory: Path, checks: int) -> None:
    targets = 100
    gates = max(1, checks // (targets * 10))
    lines = ["release: {name: bench, version: '1'}", "targets:"]
    lines += [f"  svc{i}: {{url: 'http://127.0.0.1:9/{i}'}}" for i in range(targets)]
    lines += ["strategy:", "  stages: [{name: pre_release}]", "  gates: [{name: validation_gate, timeout: 30}]",
              "validation:", "  gates:"]
    for g in range(gates):
        lines.append(f"    - name: gate{g}")
        lines.append("      checks:")
        lines += [f"        - health: {{name: h{c}, path: /h{c}}}" for c in range(10)]
    (directory / "release-plan.yaml").write_text("\n".join(lines) + "\n")
    (directory / "test_plain.py").write_text(
        "import pytest\n\n\n"
        f"@pytest.mark.parametrize('i', range({checks}))\n"
        "def test_check(i):\n    pass\n"
    )
    (directory / "pytest.ini").write_text("[pytest]\n")


def collect(directory: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    took = time.perf_counter() - started
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    if done.returncode != 0:
        raise SystemExit(f"collection failed: {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_plan(directory, args.checks)
        plain_times, plan_times = [], []
        for _ in range(args.repeat):  # interleaved, so drift on a noisy machine hits both alike
            took, plain_tail = collect(directory, "test_plain.py")
            plain_times.append(took)
            took, plan_tail = collect(directory, "--release-plan", "release-plan.yaml")
            plan_times.append(took)
    plain, plan = min(plain_times), min(plan_times)
    print(f"plain pytest, {plain_tail}: best {plain:.3f}s of {args.repeat}")
    print(f"release plan, {plan_tail}: best {plan:.3f}s of {args.repeat}")
    print(f"ratio (plan / plain): {plan / plain:.2f}  (goal: at most 2.0)")


if __name__ == "__main__":
    main()
