"""The history page with many runs: build time and size.

``python bench/history.py [--runs 1000] [--dir DIR]`` writes DIR (default: a temporary
directory) as an evidence tree of RUNS sealed runs of two releases over the last year (a
summary.json, a delivery.json and a manifest each; some rolled back, some failed to roll back,
some blocked before the deploy), then times ``write_index`` (best of three) and prints the page's
size. ``make_history`` is also what the tests use to fill a history.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DAY = 86400.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_history(root: Path, runs: int, *, now: float, days: float = 365.0, seed: int = 7,
                 releases: tuple[str, ...] = ("shop", "billing")) -> list[str]:
    """``runs`` sealed runs spread over the ``days`` before ``now``; their run ids."""
    rng = random.Random(seed)
    ids = []
    for index in range(runs):
        start = now - days * DAY * (runs - index) / runs + rng.uniform(0, 600)
        stamp = datetime.fromtimestamp(start, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{index:06x}"
        release = releases[index % len(releases)]
        version = f"1.{index // 20}.{index % 20}"
        roll = rng.random()
        outcome, trigger, rollback, restore = "released", None, None, None
        deployed = True
        if roll < 0.12:
            outcome, trigger, rollback, restore = "rolled_back", "validation_failure", "rolled_back", rng.uniform(20, 400)
        elif roll < 0.15:
            outcome, trigger, rollback = "rollback_failed", "monitoring_failure", "rollback_failed"
        elif roll < 0.22:
            outcome, deployed = "blocked", False
        duration = rng.uniform(60, 900)
        detected = start + duration * 0.5 if trigger else None
        run_dir = root / "runs" / run_id
        run_dir.mkdir(parents=True)
        envelope = {"schema_version": 1, "run_id": run_id, "release": {"name": release, "version": version},
                    "plan": {"path": "release-plan.yaml", "sha256": "0" * 64}, "time_scale": 1.0}
        (run_dir / "summary.json").write_text(json.dumps({
            **envelope, "record": "run", "outcome": outcome, "banner": outcome.replace("_", " ").upper(),
            "exit_status": {"released": 0, "blocked": 1, "rolled_back": 1}.get(outcome, 20),
            "start": _iso(start), "end": _iso(start + duration), "duration_s": duration}))
        stages = [{"name": "pre_release", "verdict": "failed" if outcome == "blocked" else "passed", "deployed": False},
                  {"name": "release", "verdict": "skipped" if outcome == "blocked" else
                   "failed" if trigger == "validation_failure" else "passed", "deployed": True},
                  {"name": "post_release", "verdict": "skipped" if outcome == "blocked" or
                   trigger == "validation_failure" else "failed" if trigger else "passed", "deployed": True}]
        (run_dir / "delivery.json").write_text(json.dumps({
            **envelope, "record": "delivery", "outcome": outcome, "deployed": deployed, "stages": stages,
            "start": _iso(start), "end": _iso(start + duration), "duration_s": duration, "trigger": trigger,
            "manual": False, "rollback": rollback, "rollback_reason": "",
            "detected_at": _iso(detected) if detected else None,
            "detected_by": "release::service_validation::health[api]" if trigger else None,
            "restored_at": _iso(detected + restore) if detected and restore else None,
            "time_to_restore_s": restore, "monitoring_s": 300.0 if deployed else None}))
        (run_dir / "report.html").write_text("<html><body>report</body></html>")
        (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_id, "files": {}}))
        ids.append(run_id)
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args(argv)
    from pytest_release.history_page import write_index

    root = args.dir or Path(tempfile.mkdtemp(prefix="history-bench-"))
    now = time.time()
    make_history(root, args.runs, now=now)
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        path = write_index(root, now=now)
        best = min(best, time.perf_counter() - began)
    size = path.stat().st_size
    print(f"{args.runs} runs: index.html built in {best:.3f}s (best of 3), {size / 1024 / 1024:.2f} MiB: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
