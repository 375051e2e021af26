"""A pytest plugin for the benchmarks (``-p bench_clock``): prints the seconds from the session's
start to the end of the process, so a benchmark counts everything the run does (the evidence
written and sealed after pytest's own summary line included) but not the interpreter's start-up."""

from __future__ import annotations

import atexit
import time

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    start = time.perf_counter()
    atexit.register(lambda: print(f"BENCH-SESSION-SECONDS {time.perf_counter() - start:.4f}", flush=True))
