"""Hashing benchmark (``python bench/hashing.py [--size-mib 256] [--repeat 3]``): the integrity
check's manifest hashing against a plain sequential ``hashlib`` loop, in this run, on the same files.

Two files of ``--size-mib`` MiB each (written once, then read from the page cache by both sides):

1. Two files: the ``integrity`` check with a ``manifest`` listing both (its own code path: a thread
   per file, 64 KiB reads into one reused buffer) against ``hashlib.sha256`` over one file after
   the other. Goal: at least 1.7 (both cores used).
2. One file: the check with a manifest of one file against ``hashlib.sha256`` over that file.
   Goal: at least 0.95 (nothing lost to the threads).

The best of ``--repeat`` wall times of each side, taken alternately, is compared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_release.checks import BUILTIN_KINDS, CheckContext
from pytest_release.model import Target, target_kind
from pytest_release.yamldoc import Mark

CHUNK = 1 << 20


def sequential(paths: list[Path]) -> list[str]:
    """The baseline: ``hashlib.sha256`` over each file in turn, 1 MiB reads."""
    digests = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        digests.append(digest.hexdigest())
    return digests


def check(folder: Path, manifest: str) -> None:
    """The integrity check itself, as a plan runs it (an artifact target ``{manifest: ...}``)."""
    spec = {"manifest": manifest}
    target = Target("artifacts", target_kind(spec), spec, Mark(1, 1))
    ctx = CheckContext(kind="integrity", params={}, target=target, base_dir=folder,
                       gate="bench::hashing", budget=600.0, deadline=time.monotonic() + 600.0)
    run = BUILTIN_KINDS["integrity"].run
    assert run is not None
    result = run(ctx)
    if not result.passed:
        raise SystemExit(f"the integrity check failed: {result.summary}")


def best(repeat: int, *sides: object) -> list[float]:
    times = [float("inf")] * len(sides)
    for _ in range(repeat):
        for index, side in enumerate(sides):
            started = time.perf_counter()
            side()  # type: ignore[operator]
            times[index] = min(times[index], time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        block = os.urandom(CHUNK)
        paths = [folder / "a.bin", folder / "b.bin"]
        for path in paths:
            with open(path, "wb") as fh:
                for _ in range(args.size_mib):
                    fh.write(block)
        digests = sequential(paths)
        (folder / "two.sha256").write_text("".join(f"{d}  {p.name}\n" for d, p in zip(digests, paths, strict=True)))
        (folder / "one.sha256").write_text(f"{digests[0]}  {paths[0].name}\n")
        print(f"hashing {args.size_mib} MiB files, best of {args.repeat}, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        two, base_two = best(args.repeat, lambda: check(folder, "two.sha256"), lambda: sequential(paths))
        print(f"two files: integrity check {two:.3f} s, sequential hashlib {base_two:.3f} s, "
              f"speed-up {base_two / two:.2f} (goal: at least 1.7)", flush=True)
        one, base_one = best(args.repeat, lambda: check(folder, "one.sha256"), lambda: sequential(paths[:1]))
        print(f"one file:  integrity check {one:.3f} s, sequential hashlib {base_one:.3f} s, "
              f"speed-up {base_one / one:.2f} (goal: at least 0.95)")


if __name__ == "__main__":
    main()
