"""performance against a real HTTP server process: passes when fast, fails over each threshold."""

from __future__ import annotations

import time
import socket
from pathlib import Path

import pytest

from helpers import run_check


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_performance_passes_and_reports_every_figure(http_url: str, tmp_path: Path) -> None:
    result = run_check("performance", {"url": http_url, "health": "/healthz"}, tmp_path, requests=200,
                       concurrency=8, p50="200ms", p95="250ms", p99="500ms", error_rate=0, min_rps=5)
    assert result.passed, result.summary
    m = result.measured
    assert m["samples"] == 200 and m["errors"] == 0 and m["error_rate"] == 0
    assert 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"] < 250
    assert m["rps"] > 5
    assert result.expected["p95_ms"] == 250 and result.expected["requests"] == 200
    assert "over 200 requests" in result.summary and "/healthz" in result.summary


def test_performance_slow_endpoint_over_its_p95(http_url: str, tmp_path: Path) -> None:
    result = run_check("performance", {"url": http_url}, tmp_path, path="/delay?ms=60", requests=24,
                       concurrency=6, p95="25ms", p50="1s")
    assert not result.passed
    assert result.summary.startswith("p95 "), result.summary
    assert "ms > 25ms over 24 requests" in result.summary
    assert "p50" not in result.summary.split(" over ")[0]  # only the figures over their threshold
    assert result.measured["p95_ms"] >= 60


def test_performance_errors_count_against_the_error_rate(http_url: str, tmp_path: Path) -> None:
    result = run_check("performance", {"url": http_url}, tmp_path, path="/fail", requests=20, error_rate=0.5)
    assert not result.passed
    assert "error rate 100.0% > 50.0% (20 of 20 failed) over 20 requests" in result.summary
    assert result.details == ["errors: 20 x status 503"]
    assert run_check("performance", {"url": http_url}, tmp_path, path="/fail", requests=5, status=503).passed


def test_performance_refused_connections_are_errors(tmp_path: Path, free_port: int) -> None:
    result = run_check("performance", {"url": f"http://127.0.0.1:{free_port}"}, tmp_path, requests=5)
    assert not result.passed and result.measured["errors"] == 5
    assert "cannot connect" in result.details[0]


def test_performance_min_rps(http_url: str, tmp_path: Path) -> None:
    result = run_check("performance", {"url": http_url}, tmp_path, path="/delay?ms=50", requests=6,
                       concurrency=1, min_rps=1000)
    assert not result.passed and "rps < 1000 rps over 6 requests" in result.summary


def test_performance_stops_when_the_budget_runs_out(http_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check("performance", {"url": http_url}, tmp_path, budget=0.8, path="/delay?ms=200",
                       requests=1000, concurrency=2)
    assert time.monotonic() - started < 1.5
    assert not result.passed
    assert "of 1000 requests: the 800ms budget of gate pre_release::g ran out" in result.summary
    assert result.measured["samples"] < 20 and result.measured["errors"] == 0
