"""Monitoring schedule benchmark (``python bench/monitoring.py``): do samples land on time?

A real pytest run of a plan whose monitoring window samples a local HTTP service (threaded,
Nagle disabled) for ``--window`` seconds, every ``--interval``, with three metrics and a task at
once. Each metric's record gives the drift of every round (when it started against when it was
due). In the same run, as a baseline, a naive loop (``sleep(interval)`` after each sample) takes
the same samples: its drift grows with every round, since each sample's own time adds up.

Printed: the mean and largest drift as a share of the interval, for both. Goal: the plugin's
mean drift under 2% of the interval.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).parent))
from health import Handler, Server

from pytest_release.records import check_records


def naive(url: str, interval: float, rounds: int) -> list[float]:
    """Drifts of a loop that samples, then sleeps the interval: the hand-rolled smoke-test way."""
    pool = urllib3.PoolManager(retries=False)
    start = time.monotonic()
    drifts = []
    for k in range(rounds):
        drifts.append(time.monotonic() - (start + k * interval))
        pool.request("GET", url)
        time.sleep(interval)
    return drifts


PLAN = """\
release: {{name: bench}}
targets:
  api: {{url: '{url}', health: /healthz}}
strategy:
  stages: [{{name: post_release, monitoring: true}}]
  gates:
    - {{name: monitoring_gate, timeout: 1s, window: {window}}}
monitoring:
  metrics:
    - {{name: service_health, interval: {interval}, threshold: 0.99}}
    - {{name: service_performance, interval: {interval}, threshold: 0.99,
       source: {{check: {{performance: {{requests: 10, concurrency: 2}}}}}}}}
    - {{name: service_version, interval: {interval}, threshold: 0.99, source: {{check: {{health: {{path: /version}}}}}}}}
automation:
  tasks:
    - {{name: health_check, interval: {interval}, timeout: 1s}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    rounds = int(args.window / args.interval)
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "release-plan.yaml"
        plan.write_text(PLAN.format(url=url, window=args.window, interval=args.interval))
        done = subprocess.run([sys.executable, "-m", "pytest", "--release-plan", str(plan), "-q", "-p",
                               "no:cacheprovider", "--release-evidence-dir", f"{tmp}/evidence"],
                              capture_output=True, text=True, cwd=tmp)
        if done.returncode != 0:
            sys.exit(f"the run failed:\n{done.stdout}\n{done.stderr}")
        records = list(check_records(Path(tmp, "evidence", "monitoring", "metrics")))
    baseline = naive(f"{url}/healthz", args.interval, rounds)
    base_mean = 100 * sum(baseline) / len(baseline) / args.interval
    base_max = 100 * max(baseline) / args.interval
    print(f"monitoring window of {args.window:g}s, a sample every {args.interval:g}s ({rounds} rounds), "
          f"3 metrics and a task at once")
    for record in sorted(records, key=lambda r: r["check"]):
        m = record["measured"]
        print(f"  {record['check']:<30} rounds {m['rounds']:>4}, missed {m['missed_rounds']}, mean drift "
              f"{m['drift_pct_of_interval']:.2f}% of the interval, max {100 * m['drift_ms_max'] / 1000 / args.interval:.2f}%")
    worst = max(r["measured"]["drift_pct_of_interval"] for r in records)
    print(f"  naive sleep loop (baseline)    rounds {rounds:>4}, mean drift {base_mean:.2f}% of the interval, "
          f"max {base_max:.2f}%")
    print(f"worst mean drift {worst:.2f}% of the interval (goal: under 2%); "
          f"ratio to the naive loop's: {worst / base_mean:.3f}")


if __name__ == "__main__":
    main()
