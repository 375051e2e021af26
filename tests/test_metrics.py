"""Validation metrics (a gate's checks sampled over a window) and rehearsal at compressed time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from collections.abc import Callable

import pytest

from conftest import plan_with
from pytest_release.records import check_records

PlanWriter = Callable[..., Path]


def _metric_plan(http_url: str, path: str, threshold: float, window: str = "1s", interval: str = "200ms") -> str:
    return plan_with(
        f"""\
        - name: service_validation
          checks: [{{health: {{path: {path}}}}}]
        """,
        targets=f"api: {{url: '{http_url}'}}",
    ) + f"  metrics:\n    - {{name: service_metrics, threshold: {threshold}, window: {window}, interval: {interval}}}\n"


def test_metric_samples_its_gate_over_the_window(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                 http_url: str) -> None:
    write_plan(_metric_plan(http_url, "/healthz", 0.99))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 0, result.stdout.str()
    assert time.monotonic() - started >= 1.0  # the window was sampled, not skipped
    result.stdout.fnmatch_lines(["*::pre_release::service_validation::metric?service_metrics? PASSED*"])
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    [record] = check_records(evidence / "validation" / "metrics", run)
    assert record["expected"] == {"threshold": 0.99, "window_s": 1.0, "interval_s": 0.2}
    samples = record["measured"]["samples_detail"]
    assert 4 <= len(samples) <= 7 and all(s["good"] for s in samples)
    assert record["measured"]["share"] == 1.0


def test_failed_metric_fails_its_gate(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_metric_plan(http_url, "/fail", 0.5))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*::service_validation::metric?service_metrics? FAILED*",
        "*service_metrics: 0 of * samples good (0.0%) < threshold 50.0% over *",
        "*required gate(s) failed: pre_release::service_validation*",
    ])


def test_time_scale_rehearses_a_long_window_in_seconds(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                       http_url: str) -> None:
    write_plan(_metric_plan(http_url, "/healthz", 0.99, window="300", interval="60"))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-time-scale", "0.01")
    assert result.ret == 0, result.stdout.str()
    assert time.monotonic() - started < 20
    result.stdout.fnmatch_lines(["*TIME SCALE 0.01: a rehearsal*"])
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    manifest = json.loads((evidence / "runs" / run / "manifest.json").read_text())
    assert manifest["metadata"]["time_scale"] == 0.01
    [record] = check_records(evidence / "validation" / "metrics", run)
    assert record["time_scale"] == 0.01 and record["expected"]["window_s"] == 3.0


def test_time_scale_must_be_positive(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_metric_plan(http_url, "/healthz", 0.99))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-time-scale", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--release-time-scale 0.0: the time scale must be more than 0*"])


def test_metric_that_covers_no_gate_is_a_plan_error(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                     http_url: str) -> None:
    write_plan(_metric_plan(http_url, "/healthz", 0.99).replace("service_metrics", "latency_metrics"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*validation.metrics[[]0]: metric 'latency_metrics' covers no gate*"])
