"""Health-check benchmarks (``python bench/health.py [--sizes 1000,5000,10000] [-n 2]``): the
plugin against pytest's own floor, both measured in this run against the same local server
(threaded, Nagle disabled, keep-alive).

For each size N:

1. N health checks (services of 1,000 instances each, fan-out, 16 at a time): pytest's session time
   (``bench_clock.py``: from pytest's session start to the end of the process: collection, every
   check, JUnit XML, the self-contained HTML report, the evidence records and the seal; not the
   interpreter's start-up) against **pytest's floor**: N tests that do nothing, with the same
   JUnit XML and self-contained pytest-html report, timed the same way. Goal: at most 1.5 at
   1,000 and 5,000, and a ratio that does not grow from 1,000 to 10,000 (linear).
2. The peak RSS of the same two processes (``wait4``'s ``ru_maxrss``: with ``-n``, the largest of
   the controller and its workers). Goal: at most 1.5 at 10,000.
3. Beside the time, the CPU time (user and system) of each whole process (its start-up and its
   xdist workers included), which a loaded machine disturbs less than the wall time.

Both sides run with the same plugins, minus the test suite's own tools (``-p no:hypothesispytest
-p no:allure_pytest``): a release pipeline does not load them, and hypothesis alone adds about a
second to every session (it is imported at the terminal summary), which would flatter the ratio.

4. Beside pytest's floor, a second baseline: N tests that each make the request a check makes (a GET
   of the same URL through one urllib3 keep-alive pool, the status asserted), with the same
   reports. Its ratio is what pytest-release costs beyond the HTTP request itself.

The pairs run side by side in time (the plugin first, then the floor, ``--repeat`` times), and
the best of each is compared, so drift on a noisy machine hits both alike. ``-n 2`` runs both
under pytest-xdist with 2 workers. ``--slow`` also runs 200 checks of a 100 ms endpoint against
the sequential 20 s (goal: at most 0.15).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BENCH = Path(__file__).resolve().parent
#: The test suite's tools, installed beside the plugin in a development environment: off on both sides.
LEAN = ["-p", "no:hypothesispytest", "-p", "no:allure_pytest"]


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


def run(directory: Path, args: list[str]) -> tuple[str, float, float, float]:
    """Run pytest in a fresh process: its output, its session seconds, its peak RSS in MiB and
    its CPU seconds (user and system, its xdist workers included)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    env.pop("CI", None)
    out = directory / "out.txt"
    with open(out, "wb") as fh:
        process = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    "-p", "bench_clock", *LEAN, *args], cwd=directory, stdout=fh, stderr=subprocess.STDOUT,
                                   env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text("utf-8", "replace")
    clock = re.search(r"BENCH-SESSION-SECONDS ([0-9.]+)", text)
    if process.returncode != 0 or not clock:
        raise SystemExit(f"pytest {' '.join(args)} failed (exit {process.returncode}):\n{text[-3000:]}")
    return text, float(clock.group(1)), usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def plugin(directory: Path, base: str, count: int, concurrency: int, path: str,
           xdist: list[str]) -> tuple[float, float, float]:
    per = 1000  # a target has at most 1,000 instances
    targets = "\n".join(f'  api{t}: {{url: "{base}/t{t}i{{1..{min(per, count - t * per)}}}"}}'
                         for t in range((count + per - 1) // per))
    plan = f"""\
release: {{name: bench}}
targets:
{targets}
strategy:
  stages: [{{name: post_release}}]
  gates: [{{name: validation_gate, timeout: 600}}]
validation:
  gates:
    - name: service_validation
      concurrency: {concurrency}
      checks: [{{health: {{path: {path}}}}}]
"""
    (directory / "release-plan.yaml").write_text(plan)
    text, seconds, rss, cpu = run(directory, ["--release-plan", "release-plan.yaml", *xdist,
                                         "--release-evidence-dir", str(directory / "evidence")])
    passed = re.search(r"(\d+) passed", text)
    if not passed or int(passed.group(1)) != count:
        raise SystemExit(f"the plan did not pass:\n{text[-3000:]}")
    return seconds, rss, cpu


def floor(directory: Path, count: int, xdist: list[str]) -> tuple[float, float, float]:
    """pytest's session time and peak RSS for ``count`` no-op tests, with JUnit XML and HTML reports."""
    (directory / "test_nothing.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({count}))\ndef test_nothing(i):\n    pass\n")
    _, seconds, rss, cpu = run(directory, ["test_nothing.py", *xdist, "--junitxml", "junit.xml",
                                           "--html", "report.html", "--self-contained-html"])
    return seconds, rss, cpu


def requests_floor(directory: Path, base: str, count: int, xdist: list[str]) -> tuple[float, float, float]:
    """The same, for ``count`` tests that each make the request a check makes (a GET of the same
    URL through one urllib3 keep-alive pool, the body read, the status asserted): pytest's floor
    with the work that a health check cannot leave out."""
    per = 1000
    urls = [f"{base}/t{t}i{i}/healthz" for t in range((count + per - 1) // per)
            for i in range(1, min(per, count - t * per) + 1)]
    (directory / "test_requests.py").write_text(
        "import pytest\nimport urllib3\n\nPOOL = urllib3.PoolManager(maxsize=32, retries=False)\n"
        f"URLS = {urls!r}\n\n\n@pytest.mark.parametrize('url', URLS)\ndef test_request(url):\n"
        "    response = POOL.request('GET', url, timeout=10.0, redirect=False)\n"
        "    assert response.status == 200\n")
    _, seconds, rss, cpu = run(directory, ["test_requests.py", *xdist, "--junitxml", "junit.xml",
                                           "--html", "report.html", "--self-contained-html"])
    return seconds, rss, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000", help="comma-separated check counts (default 1000,5000)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-n", "--numprocesses", type=int, default=0, help="run both under pytest-xdist")
    parser.add_argument("--slow", action="store_true", help="also 200 checks of a 100 ms endpoint")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    xdist = ["-n", str(args.numprocesses)] if args.numprocesses else []
    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    how = f" under -n {args.numprocesses}" if xdist else ""
    print(f"health checks against pytest's floor (no-op tests, same JUnit XML and HTML reports){how}, "
          f"best of {args.repeat}, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    ratios: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for size in sizes:
            plugin_runs, floor_runs, request_runs = [], [], []
            for _ in range(args.repeat):
                plugin_runs.append(plugin(directory, base, size, args.concurrency, "/healthz", xdist))
                floor_runs.append(floor(directory, size, xdist))
                request_runs.append(requests_floor(directory, base, size, xdist))
            best_plugin, best_floor = min(r[0] for r in plugin_runs), min(r[0] for r in floor_runs)
            rss_plugin, rss_floor = min(r[1] for r in plugin_runs), min(r[1] for r in floor_runs)
            cpu_plugin, cpu_floor = min(r[2] for r in plugin_runs), min(r[2] for r in floor_runs)
            ratios[size] = best_plugin / best_floor
            time_goal = " (goal: at most 1.5)" if size <= 5000 else ""
            rss_goal = " (goal: at most 1.5)" if size >= 10000 else ""
            print(f"{size:>6,} checks: time  plugin {best_plugin:7.3f} s, floor {best_floor:7.3f} s, "
                  f"ratio {ratios[size]:.2f}{time_goal}", flush=True)
            print(f"{'':>14} CPU   plugin {cpu_plugin:7.3f} s, floor {cpu_floor:7.3f} s, "
                  f"ratio {cpu_plugin / cpu_floor:.2f} (whole process: start-up included)", flush=True)
            print(f"{'':>14} peak RSS plugin {rss_plugin:7.1f} MiB, floor {rss_floor:7.1f} MiB, "
                  f"ratio {rss_plugin / rss_floor:.2f}{rss_goal}", flush=True)
            best_requests = min(r[0] for r in request_runs)
            cpu_requests = min(r[2] for r in request_runs)
            print(f"{'':>14} against {size:,} tests making the same requests (urllib3, same reports): "
                  f"time {best_requests:7.3f} s, ratio {best_plugin / best_requests:.2f}; "
                  f"CPU {cpu_requests:7.3f} s, ratio {cpu_plugin / cpu_requests:.2f}", flush=True)
        if len(ratios) > 1:
            first, last = min(ratios), max(ratios)
            print(f"linearity: ratio at {last:,} / ratio at {first:,} = {ratios[last] / ratios[first]:.2f} "
                  "(goal: at most 1.0, within the noise)")
        if args.slow:
            slow = [plugin(directory, base, 200, args.concurrency, "/slow", xdist)[0] for _ in range(args.repeat)]
            print(f"200 checks of a 100 ms endpoint: plugin {min(slow):.3f} s, sequential 20 s; "
                  f"ratio {min(slow) / 20:.3f} (goal: at most 0.15)")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    server.shutdown()


if __name__ == "__main__":
    main()
