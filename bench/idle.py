"""Idle benchmark: what installing pytest-release costs a pytest run that gives no plan
(``python bench/idle.py``), against the same run with ``-p no:release``, both measured in this run.

Each case runs ``python -m pytest -q -p no:cacheprovider ...`` in a fresh process, in pairs side by
side in time (with and without the plugin, each first in turn, after one warm-up run of each) so
drift on a noisy machine hits both alike. It prints the best and the median wall time of each (the
whole process: the interpreter's start-up, the entry points, the run) and the ratio: the median
of the pairs' ratios (and the best against the best); then the same for the CPU time (user and
system) of the process and its children, which a loaded machine disturbs less. Leaving out the
cache provider leaves out work common to both, which makes the ratio stricter, not looser. With
``--instructions`` it counts the instructions of one run of each instead (valgrind's callgrind),
which do not depend on the load. The cases:

1. one trivial test (goal: at most 1.05);
2. 1,000 trivial tests: what the plugin's hooks cost per test when no plan is given;
3. one trivial test under pytest-xdist with 2 workers: each worker loads the plugin too.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "1 test": ["test_one.py"],
    "1,000 tests": ["test_many.py"],
    "1 test, -n 2": ["test_one.py", "-n", "2"],
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(directory: Path, args: list[str]) -> tuple[float, float]:
    """The wall time and the CPU time of one pytest process (and its children)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    cpu, started = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    took, cpu = time.perf_counter() - started, _cpu() - cpu
    if done.returncode != 0 or "passed" not in done.stdout:
        raise SystemExit(f"the run failed: {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took, cpu


def instructions(directory: Path, args: list[str]) -> int:
    """The instructions a pytest process (and its children) executes, counted by valgrind's callgrind: the same
    from run to run, however loaded the machine (and about 50 times slower than a plain run)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--trace-children=yes",
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    done = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    counted = re.findall(r"Collected : (\d+)", done.stderr)  # one per process: xdist's workers too
    if done.returncode != 0 or not counted:
        raise SystemExit(f"callgrind failed: {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return sum(int(c) for c in counted)


Times = list[tuple[float, float]]


def measure(directory: Path, args: list[str], repeat: int) -> tuple[Times, Times]:
    run(directory, args)
    run(directory, [*args, "-p", "no:release"])
    with_plugin, without = [], []
    for index in range(repeat):  # side by side, each first in turn
        if index % 2:
            without.append(run(directory, [*args, "-p", "no:release"]))
        with_plugin.append(run(directory, args))
        if not index % 2:
            without.append(run(directory, [*args, "-p", "no:release"]))
    return with_plugin, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=21, help="runs of each, with and without (default 21)")
    parser.add_argument("--case", choices=list(CASES), action="append",
                        help="only this case; repeat for several (default: all)")
    parser.add_argument("--instructions", action="store_true",
                        help="instead of timing, count the instructions of one run of each (valgrind)")
    args = parser.parse_args()
    if args.instructions and not shutil.which("valgrind"):
        raise SystemExit("--instructions needs valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "test_one.py").write_text("def test_one():\n    pass\n")
        (directory / "test_many.py").write_text(
            "import pytest\n\n\n@pytest.mark.parametrize('i', range(1000))\ndef test_many(i):\n    pass\n")
        (directory / "pytest.ini").write_text("[pytest]\n")
        for name in args.case or list(CASES):
            goal = "  (goal: at most 1.05)" if name == "1 test" else ""
            if args.instructions:
                mine = instructions(directory, CASES[name])
                base = instructions(directory, [*CASES[name], "-p", "no:release"])
                print(f"{name}, instructions: with the plugin and no plan {mine:,}; -p no:release {base:,}")
                print(f"{name}, instructions: ratio {mine / base:.3f}{goal}")
                continue
            with_plugin, without = measure(directory, CASES[name], args.repeat)
            for index, clock in enumerate(("wall", "CPU")):
                mine, base = [t[index] for t in with_plugin], [t[index] for t in without]
                paired = statistics.median(m / b for m, b in zip(mine, base, strict=True))
                print(f"{name}, {clock} time: with the plugin and no plan: best {min(mine) * 1000:.0f} ms, median "
                      f"{statistics.median(mine) * 1000:.0f} ms; -p no:release: best {min(base) * 1000:.0f} ms, "
                      f"median {statistics.median(base) * 1000:.0f} ms ({args.repeat} runs each)")
                print(f"{name}, {clock} time: ratio {paired:.3f} (median of the {args.repeat} side-by-side pairs; "
                      f"best/best {min(mine) / min(base):.3f}){goal}")

if __name__ == "__main__":
    main()
