"""Monitoring windows: metrics sampled on a schedule, alerts that fail the gate early and fire
monitoring_failure, periodic tasks, live progress, and the evidence they leave."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import jsonschema
import pytest

from pytest_release.records import RECORD_SCHEMA

from conftest import Example, wait_for_data
from pytest_release.records import check_records

PlanWriter = Callable[..., Path]
RECORD_SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(RECORD_SCHEMA)


def _plan(http_url: str, *, path: str = "/healthz", window: str = "1s", interval: str = "100ms",
          threshold: float = 0.9, alerts: str = "", tasks: str = "", source: str = "{targets: [api]}",
          extra_metrics: str = "") -> str:
    return f"""\
        release: {{name: shop, version: 1.0.0}}
        targets:
          api: {{url: '{http_url}', health: '{path}'}}
        strategy:
          stages: [{{name: pre_release, monitoring: true}}]
          gates:
            - {{name: monitoring_gate, timeout: 1s, window: {window}}}
        monitoring:
          metrics:
            - {{name: service_health, interval: {interval}, threshold: {threshold}, source: {source}}}
        {extra_metrics}
          alerts: {alerts or '[]'}
        automation:
          tasks: {tasks or '[]'}
        """


def _run_with_fault(args: list[str], fault: Callable[[], object], after: float = 0.5,
                    cwd: Path | None = None) -> tuple[int, str, float]:
    """Run pytest; ``after`` seconds into the monitoring window (its first progress line), inject
    ``fault``. The exit code, the output, and the seconds from the fault to the end."""
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert run.stdout is not None
    lines, injected = [], None
    for line in run.stdout:
        lines.append(line)
        if injected is None and "::monitoring_gate " in line and "s left)" in line:
            time.sleep(after)
            fault()
            injected = time.monotonic()
    code = run.wait()
    out = "".join(lines)
    assert injected is not None, out
    return code, out, time.monotonic() - injected


def _records(root: Path, folder: str) -> dict[str, dict[str, Any]]:
    """The latest run's records in ``folder``, by file name (a check's, a line of its gate's
    records.jsonl, by ``CHECK.json``), each valid against the record schema."""
    run = (root / "LATEST").read_text().strip()
    records = {p.name: json.loads(p.read_text()) for p in (root / folder / run).rglob("*.json")}
    records.update((f"{r['check']}.json", r) for r in check_records(root / folder, run))
    for record in records.values():
        if "record" in record:
            RECORD_SCHEMA_VALIDATOR.validate(record)
    return records


def test_metric_is_sampled_on_schedule_across_the_window(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                         http_url: str) -> None:
    write_plan(_plan(http_url))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    took = time.monotonic() - started
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*pre_release::monitoring_gate */1s (* left) | service_health: * samples, 100.0% good (needs 90.0%)*",
        "*::pre_release::monitoring_gate::metric?service_health? PASSED*",
    ])
    assert took >= 1.0
    record = _records(pytester.path / "evidence" / "release", "monitoring/metrics")["metric[service_health].json"]
    measured = record["measured"]
    # Ten rounds are due (a round that could not start before the next was due, on a loaded
    # machine, is counted as missed, not run late), each at its scheduled time.
    assert measured["rounds"] + measured["missed_rounds"] == 10 and measured["samples"] == measured["rounds"]
    assert measured["missed_rounds"] <= 1
    assert {round(s["t_s"], 3) for s in measured["samples_detail"]} <= {round(i / 10, 3) for i in range(10)}
    assert all(s["good"] and s["check"] == "health[api]" for s in measured["samples_detail"])
    # Samples land on their schedule (the goal is under 2% of the interval; bench/monitoring.py
    # measures it; a loaded test machine gets a wide margin here).
    assert measured["drift_pct_of_interval"] < 25, measured
    assert record["expected"]["interval_s"] == 0.1 and record["expected"]["window_s"] == 1.0
    strategy = _records(pytester.path / "evidence" / "release", "gates")["pre_release.monitoring_gate.json"]
    assert strategy["acted_on"] is True and strategy["verdict"] == "passed"


def test_alert_fails_the_gate_early_with_the_samples_that_fired_it(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str, tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    write_plan(_plan(http_url, path=f"/unless?file={fault}", window="10s", threshold=0.5,
                     alerts="[{name: health_alert, threshold: 0.8, window: 500ms}]"))
    code, out, took = _run_with_fault(["--release-plan", "release-plan.yaml", "-v"], fault.touch,
                                      cwd=pytester.path)
    assert code == 1, out
    assert "FAILED release-plan.yaml::pre_release::monitoring_gate::metric[service_health]" in out
    assert re.search(r"service_health: alert health_alert fired at \S+: \d+ of \d+ samples good \(.*\) "
                     r"< 80.0% over the last 500ms", out), out
    assert took < 6, "the gate failed as the alert fired, not when the 10s window ended"
    root = pytester.path / "evidence" / "release"
    alert = _records(root, "monitoring/alerts")["health_alert.json"]
    assert alert["fired"] is True and alert["threshold"] == 0.8 and 0 < alert["at_s"] < 6
    assert alert["samples_detail"][-1]["good"] is False
    assert all(s["t_s"] > alert["at_s"] - 0.5 for s in alert["samples_detail"])
    measured = _records(root, "monitoring/metrics")["metric[service_health].json"]["measured"]
    assert measured["window_s"] < 6 and measured["samples_detail"][0]["good"] is True
    # The HTML report, in real headless Chromium, draws the window: a dot per sample, the alert.
    from playwright.sync_api import sync_playwright

    from test_evidence import CHROMIUM_ARGS

    report = root / "runs" / (root / "LATEST").read_text().strip() / "report.html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(report.as_uri())
            chart = page.locator("#release-monitoring svg.release-samples-chart")
            assert chart.is_visible()
            assert page.locator("#release-monitoring circle").count() == measured["samples"]
            assert page.locator("#release-monitoring line.release-alert").count() == 1
            assert "alert health_alert fired at" in page.locator("#release-monitoring figcaption").inner_text()
        finally:
            browser.close()


def test_task_runs_count_against_their_metric(pytester: pytest.Pytester, write_plan: PlanWriter,
                                              http_url: str) -> None:
    write_plan(_plan(http_url, window="600ms", interval="200ms", threshold=0.99,
                     tasks="[{name: health_check, interval: 200ms, timeout: 1s, check: {health: {path: /fail}}}]"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*service_health: threshold out of reach at *: 1 bad samples, at most *"])
    root = pytester.path / "evidence" / "release"
    task = _records(root, "automation/tasks")["health_check.json"]
    assert task["verdict"] == "failed" and task["runs"][0]["counts_for"] == "service_health"
    assert "answered 503" in task["runs"][0]["summary"]


def test_monitoring_failure_after_the_deploy_rolls_back(pytester: pytest.Pytester, example: Example) -> None:
    """The example's plan watches post_release for 3 s, sampling every 200 ms. The service dies
    mid-window: the alert fires, the gate fails before the window ends, the rollback restarts the
    service, and the samples are in the evidence."""
    evidence = pytester.path / "evidence"
    common = ["--release-plan", "release-plan.yaml", "--release-evidence-dir", str(evidence), "-v"]
    before = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *common,
                             "--release-stage", "pre_release"], capture_output=True, text=True, cwd=example.project)
    assert before.returncode == 0, before.stdout
    # The fault: the service goes away 0.8 s into the window.
    code, out, _ = _run_with_fault(common + ["--release-stage", "post_release"], lambda: example.ctl("stop"),
                                   after=0.8, cwd=example.project)
    assert code == 1, out
    # Whichever metric samples the dead service first, its alert fires and stops the window.
    fired = re.search(r"FAILED +release-plan.yaml::post_release::monitoring_gate::metric\[service_(\w+)\]: "
                      r"service_\w+: alert (\w+)_alert fired at", out)
    assert fired is not None and fired.group(1) == fired.group(2), out
    assert "ROLLED BACK: monitoring_failure: every step passed and verify passed" in out
    assert example.get("/healthz")[0] == 200  # the rollback started the service again
    root = evidence
    metric = _records(root, "monitoring/metrics")[f"metric[service_{fired.group(1)}].json"]
    assert metric["verdict"] == "failed" and metric["measured"]["window_s"] < 3.0
    assert any(not s["good"] for s in metric["measured"]["samples_detail"])
    alert = _records(root, "monitoring/alerts")[f"{fired.group(2)}_alert.json"]
    assert alert["fired"] is True and alert["samples_detail"][-1]["good"] is False
    trigger = _records(root, "rollback/triggers")
    assert any(r.get("trigger") == "monitoring_failure" for r in trigger.values()), trigger
    # The verify judged the last stage's gates and sampled the metric that fired again, against the
    # service the rollback started: it passes now.
    run = (root / "LATEST").read_text().strip()
    verify = json.loads((root / "rollback" / "procedures" / run / "verify.json").read_text())
    judged = {e["check"]: e for e in verify["measured"]["after_rollback"]}
    metric = judged[f"monitoring_gate::metric[service_{fired.group(1)}]"]
    assert metric["verdict"] == "passed", metric
    assert metric["summary"].startswith(f"sampled again after the rollback: service_{fired.group(1)}: ")
    assert judged["service_validation::health[api]"]["verdict"] == "passed"


def test_monitoring_window_under_xdist_runs_once(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                 http_url: str) -> None:
    second = "    - {name: service_version, interval: 100ms, threshold: 0.9, source: {check: {health: {path: /version}}}}"
    write_plan(_plan(http_url, window="1s", extra_metrics=second))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-n", "2", "-v")
    took = time.monotonic() - started
    assert result.ret == 0, result.stdout.str()
    for name in ("service_health", "service_version"):
        result.stdout.fnmatch_lines([f"*PASSED*metric?{name}?*"])
    records = _records(pytester.path / "evidence" / "release", "monitoring/metrics")
    metrics = [records["metric[service_health].json"], records["metric[service_version].json"]]
    for record in metrics:
        assert record["measured"]["rounds"] + record["measured"]["missed_rounds"] == 10, record["measured"]
    # The items ran on both workers; one process sampled the window for both.
    assert {r["worker"] for r in metrics} == {"gw0", "gw1"}
    assert len({r["measured"]["sampled_by_pid"] for r in metrics}) == 1
    assert took < 40  # no worker waited out the earlier stages' budgets (minutes before)


def test_monitoring_plan_errors(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_plan(http_url, alerts="[{name: latency_alert, threshold: 0.9, window: 1s}]",
                     tasks="[{name: backup_job, interval: 1s}]",
                     extra_metrics="    - {name: error_budget, interval: 1s, threshold: 0.9}"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 4
    result.stderr.fnmatch_lines([
        "*release-plan.yaml:1?:*: monitoring.metrics?1?: monitoring metric 'error_budget' has no source*",
        "*monitoring.alerts?0?: alert 'latency_alert' covers no single monitoring metric: no metric is named like it*",
        "*automation.tasks?0?: task 'backup_job' runs no check*",
    ])
    assert "Traceback" not in result.stderr.str()


def _prometheus_plan(prometheus: str, query: str, compare: str, threshold: float, window: str) -> str:
    return f"""\
        release: {{name: shop, version: 1.0.0}}
        strategy:
          stages: [{{name: pre_release, monitoring: true}}]
          gates:
            - {{name: monitoring_gate, timeout: 1s, window: {window}}}
        monitoring:
          metrics:
            - name: shop_up
              interval: 200ms
              threshold: {threshold}
              source:
                prometheus: {{url: '{prometheus}', query: '{query}', compare: '{compare}'}}
        """


def test_prometheus_metric_passes_then_fails_when_its_value_crosses_the_threshold(
        pytester: pytest.Pytester, write_plan: PlanWriter, example: Example,
        prometheus_factory: Callable[..., str]) -> None:
    """A real Prometheus scrapes the example shop's /metrics every 200 ms."""
    prometheus = prometheus_factory([f"127.0.0.1:{example.port}"])
    wait_for_data(prometheus, 'up{job="shop"}', until=lambda v: v == 1)
    root = pytester.path / "evidence" / "release"

    write_plan(_prometheus_plan(prometheus, 'up{job="shop"}', ">=", 1, "1s"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*pre_release::monitoring_gate */1s * | shop_up: * samples, value 1 (good: >= 1)*",
                                 "*::monitoring_gate::metric?shop_up? PASSED*"])
    measured = _records(root, "monitoring/metrics")["metric[shop_up].json"]["measured"]
    assert measured["samples"] >= 4 and measured["last_value"] == 1.0
    assert {s["value"] for s in measured["samples_detail"]} == {1.0}

    # The shop goes down mid-window: Prometheus's next scrape says up == 0, and the next sample fails
    # the gate, long before the 10 s window ends.
    write_plan(_prometheus_plan(prometheus, 'up{job="shop"}', ">=", 1, "10s"))
    code, out, took = _run_with_fault(["--release-plan", "release-plan.yaml", "-v"], lambda: example.ctl("stop"),
                                      after=0.6, cwd=pytester.path)
    assert code == 1, out
    assert took < 6, "the gate failed at the first bad value, not when the 10 s window ended"
    assert "FAILED release-plan.yaml::pre_release::monitoring_gate::metric[shop_up]" in out
    assert 'shop_up: at ' in out and 'up{job="shop"} = 0 (not >= 1)' in out, out
    measured = _records(root, "monitoring/metrics")["metric[shop_up].json"]["measured"]
    values = [s["value"] for s in measured["samples_detail"]]
    assert values[0] == 1.0 and values[-1] == 0.0, values


def test_every_metric_of_a_failed_window_reports_its_own_verdict(pytester: pytest.Pytester,
                                                                 write_plan: PlanWriter, http_url: str) -> None:
    """After the deploy, the first metric's failure must not turn the others into skips: they ran
    in the same window, and the one whose alert fired says so."""
    plan = _plan(http_url, path="/fail", window="5s", source="{targets: [api]}",
                 extra_metrics="    - {name: service_errors, interval: 100ms, threshold: 0.5, "
                               "source: {check: {health: {path: /fail}}}}",
                 alerts="[{name: errors_alert, threshold: 0.9, window: 1s, metric: service_errors}]")
    plan = plan.replace("stages: [{name: pre_release, monitoring: true}]",
                        "stages: [{name: pre_release, monitoring: false}, {name: release, monitoring: true}]")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*::release::monitoring_gate::metric?service_health? FAILED*",
                                 "*::release::monitoring_gate::metric?service_errors? FAILED*",
                                 "*service_errors: alert errors_alert fired at *"])
    assert "SKIPPED" not in result.stdout.str()
