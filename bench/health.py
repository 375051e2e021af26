"""Health-check benchmarks (``python bench/health.py``): the plugin against raw clients, both
measured in this run against the same local server (threaded, Nagle disabled, keep-alive).

1. 1,000 health checks (1,000 instances of one service): pytest's session time for the plan
   divided by a raw thread pool of keep-alive urllib3 clients doing the same 1,000 requests.
   Goal: at most 1.5.
2. 200 checks of an endpoint that takes 100 ms: the session time divided by the sequential time
   (200 x 100 ms). Goal: at most 0.15.

The session time runs from pytest's session start to the end of the process (``bench_clock.py``):
collection, every check, the reports, the evidence written and sealed; not the interpreter's
start-up.

Beside 1. it prints pytest's own floor, measured in the same run the same way: 1,000 tests that
do nothing, with the same reports (JUnit XML, a self-contained pytest-html report). With one
pytest item per check, no plugin can finish below it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import urllib3


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(0.1)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def raw(urls: list[str], concurrency: int) -> float:
    pool = urllib3.PoolManager(maxsize=concurrency, retries=False)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as executor:
        statuses = list(executor.map(lambda u: pool.request("GET", u).status, urls))
    took = time.perf_counter() - started
    assert statuses.count(200) == len(urls), "the raw clients saw errors"
    return took


def plugin(directory: Path, base: str, count: int, concurrency: int, path: str) -> float:
    plan = f"""\
release: {{name: bench}}
targets:
  api: {{url: "{base}/i{{1..{count}}}"}}
strategy:
  stages: [{{name: post_release}}]
  gates: [{{name: validation_gate, timeout: 120}}]
validation:
  gates:
    - name: service_validation
      concurrency: {concurrency}
      checks: [{{health: {{path: {path}}}}}]
"""
    (directory / "release-plan.yaml").write_text(plan)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml", "-q",
                           "-p", "no:cacheprovider", "-p", "bench_clock",
                           "--release-evidence-dir", str(directory / "evidence")],
                          cwd=directory, capture_output=True, text=True, env=env)
    passed = re.search(r"(\d+) passed in", done.stdout)
    clock = re.search(r"BENCH-SESSION-SECONDS ([0-9.]+)", done.stdout)
    if done.returncode != 0 or not passed or int(passed.group(1)) != count or not clock:
        raise SystemExit(f"the plan did not pass:\n{done.stdout[-3000:]}")
    return float(clock.group(1))


def floor(directory: Path, count: int) -> float:
    """pytest's session time for ``count`` tests that do nothing, with JUnit XML and HTML reports."""
    (directory / "test_nothing.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({count}))\ndef test_nothing(i):\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-m", "pytest", "test_nothing.py", "-q", "-p", "no:cacheprovider",
                           "-p", "bench_clock", "--junitxml", "junit.xml", "--html", "report.html",
                           "--self-contained-html"], cwd=directory, capture_output=True, text=True, env=env)
    clock = re.search(r"BENCH-SESSION-SECONDS ([0-9.]+)", done.stdout)
    if done.returncode != 0 or not clock:
        raise SystemExit(f"the no-op tests did not pass:\n{done.stdout[-3000:]}")
    return float(clock.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        raw_times, plugin_times, floor_times = [], [], []
        for _ in range(args.repeat):
            raw_times.append(raw([f"{base}/i{i}/healthz" for i in range(1, 1001)], args.concurrency))
            plugin_times.append(plugin(directory, base, 1000, args.concurrency, "/healthz"))
            floor_times.append(floor(directory, 1000))
        best_raw, best_plugin, best_floor = min(raw_times), min(plugin_times), min(floor_times)
        print(f"1. 1,000 health checks: plugin {best_plugin:.3f}s, raw keep-alive pool {best_raw:.3f}s "
              f"(best of {args.repeat}); ratio {best_plugin / best_raw:.2f} (goal: at most 1.5)")
        print(f"   pytest's floor: 1,000 no-op tests with the same reports {best_floor:.3f}s; "
              f"ratio {best_floor / best_raw:.2f} against the raw pool")
        slow = [plugin(directory, base, 200, args.concurrency, "/slow") for _ in range(args.repeat)]
        sequential = 200 * 0.1
        print(f"2. 200 checks of a 100 ms endpoint: plugin {min(slow):.3f}s, sequential {sequential:.1f}s; "
              f"ratio {min(slow) / sequential:.3f} (goal: at most 0.15)")
    server.shutdown()


if __name__ == "__main__":
    main()
