"""Analytics: runs go into a real history store (SQLite, PostgreSQL), are pruned by retention,
and each run is compared with the previous release."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any
from collections.abc import Callable

import jsonschema
import pytest

from helpers import service_plan
from pytest_release.records import RECORD_SCHEMA

from test_evidence import CHROMIUM_ARGS

PlanWriter = Callable[..., Path]

ANALYTICS = """\
analytics:
  {store}
  metrics:
    - name: system_metrics
      retention: 90d
    - name: performance_metrics
      retention: 30d
  analysis:
    - name: system_analysis
      retention: 90d
    - name: performance_analysis
      retention: 30d
      tolerance: 0.5
"""


def plan(http_url: str, path: str, *, store: str = "", extra: str = "") -> str:
    return service_plan(http_url, f"""\
        - name: service_validation
          checks:
            - health
            - performance: {{path: "{path}", requests: 12, concurrency: 4}}
        """, timeout=20) + ANALYTICS.format(store=f"store: {store}" if store else "") + extra


def records(evidence: Path, folder: str) -> dict[str, dict[str, Any]]:
    """The latest run's records in analytics/FOLDER, by name, each valid against the schema."""
    run = (evidence / "LATEST").read_text().strip()
    found = {}
    for path in sorted((evidence / "analytics" / folder / run).glob("*.json")):
        record = json.loads(path.read_text())
        jsonschema.validate(record, RECORD_SCHEMA)
        found[path.stem] = record
    return found


def test_a_slower_release_is_a_regression_against_the_previous_one(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    evidence = pytester.path / "evidence" / "release"
    write_plan(plan(http_url, "/delay?ms=2"))
    first = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-version", "1.0.0")
    assert first.ret == 0, first.stdout.str()
    first.stdout.fnmatch_lines(["analytics: performance_analysis: * series over 1 run(s); no earlier run*"])

    # 1.1.0 is 150 ms slower per request: its gates pass (no thresholds), its trend does not.
    # (Under xdist: the controller writes the history once.)
    write_plan(plan(http_url, "/delay?ms=150"))
    second = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-version", "1.1.0",
                                           "-n", "2")
    assert second.ret == 0, second.stdout.str()
    second.stdout.fnmatch_lines([
        "analytics: system_analysis: * against release 1.0.0*",  # the run itself took longer, too
        "analytics: performance_analysis: * regression(s) against release 1.0.0: "
        "*pre_release::service_validation::performance?api?.p*_ms * -> * (+*%)*",
    ])
    analysis = records(evidence, "analysis")["performance_analysis"]
    assert analysis["verdict"] == "regressed" and analysis["baseline"] == "release 1.0.0"
    p50 = next(s for s in analysis["series"] if s["series"].endswith(".p50_ms"))
    assert p50["regression"] and p50["current"] > 150 > p50["baseline"], p50
    assert [p["n"] for p in p50["points"]] == [1, 1]  # one point per run: no interval given
    metric = records(evidence, "metrics")["performance_metrics"]
    assert metric["stored"] and {s["series"].rpartition(".")[2] for s in metric["samples"]} >= {"p95_ms", "rps"}

    with sqlite3.connect(evidence / "analytics" / "history.sqlite") as conn:
        runs = conn.execute("SELECT version, outcome FROM release_runs ORDER BY ended").fetchall()
    assert runs == [("1.0.0", "released"), ("1.1.0", "released")]
    # The store changes with every run, so no manifest lists it; verify still passes.
    verify = pytester.run(sys.executable, "-m", "pytest_release", "verify", str(evidence))
    assert verify.ret == 0, verify.stdout.str()

    playwright = pytest.importorskip("playwright.sync_api")
    report = evidence / "runs" / (evidence / "LATEST").read_text().strip() / "report.html"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(report.as_uri())
        verdicts = page.eval_on_selector_all("#release-trends h4.release-analysis", "e => e.map(h => h.dataset.verdict)")
        lines = page.eval_on_selector_all(".release-sparkline polyline", "e => e.length")
        browser.close()
    assert len(verdicts) == 2 and verdicts[1] == "regressed" and lines > 0


def test_system_analysis_names_checks_that_passed_before_and_fail_now(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(plan(http_url, "/healthz"))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 0
    write_plan(plan(http_url, "/healthz").replace("- health\n", "- health: {path: /fail}\n"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-version", "2.0.0")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "analytics: system_analysis: * regression(s) against release 1.0.0: checks.failed 0 -> 1 (from zero); "
        "checks.pass_rate 1 -> 0.5 (-50%); failing now, passed in release 1.0.0: "
        "pre_release::service_validation::health[[]api]*",
    ])


def test_samples_older_than_their_retention_are_pruned(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    evidence = pytester.path / "evidence" / "release"
    write_plan(plan(http_url, "/healthz"))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 0
    store = evidence / "analytics" / "history.sqlite"
    day = 86400
    with sqlite3.connect(store) as conn:  # that run was 40 days ago
        conn.execute("UPDATE release_samples SET at = at - ?", (40 * day,))
        conn.execute("UPDATE release_runs SET ended = ended - ?, started = started - ?", (40 * day, 40 * day))
        old = dict(conn.execute("SELECT metric, count(*) FROM release_samples GROUP BY metric").fetchall())
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 0
    metrics = records(evidence, "metrics")
    # performance_metrics keeps 30 days: the old samples are gone; system_metrics keeps 90.
    assert metrics["performance_metrics"]["pruned"] == old["performance_metrics"] > 0
    assert metrics["system_metrics"]["pruned"] == 0
    with sqlite3.connect(store) as conn:
        kept = dict(conn.execute("SELECT metric, count(DISTINCT run_id) FROM release_samples GROUP BY metric").fetchall())
        runs = conn.execute("SELECT count(*) FROM release_runs").fetchone()[0]
    assert kept == {"performance_metrics": 1, "system_metrics": 2} and runs == 2
    # The analyses look back as far as their retention: the old run is not performance's baseline.
    analysis = records(evidence, "analysis")
    assert analysis["performance_analysis"]["runs"] == 1 and analysis["performance_analysis"]["baseline"] is None
    assert analysis["system_analysis"]["runs"] == 2


def test_a_business_figure_comes_from_sql_and_a_bad_query_does_not_fail_the_run(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    with sqlite3.connect(pytester.path / "shop.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT)")
        conn.executemany("INSERT INTO orders (customer) VALUES (?)", [("a",), ("b",), ("c",)])
    extra = textwrap.indent(textwrap.dedent("""\
        - name: business_metrics
          source: {sql: "SELECT count(*) FROM orders", target: db}
        - name: customers
          source: {sql: "SELECT customer FROM orders", target: db}
        """), "    ")
    text = plan(http_url, "/healthz").replace('  api: {url:', '  db: {sqlite: shop.db}\n  api: {url:')
    text = text.replace("  analysis:\n", extra + "  analysis:\n")
    write_plan(text + "    - {name: business_analysis}\n")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "analytics: metric customers: the query must return one number, it returned 'a'",
        "analytics: business_analysis: 1 series over 1 run(s)*",
    ])
    metrics = records(pytester.path / "evidence" / "release", "metrics")
    assert metrics["business_metrics"]["samples"] == [{"series": "business_metrics", "value": 3.0}]
    assert metrics["customers"]["samples"] == [] and "returned 'a'" in metrics["customers"]["error"]


def test_a_postgresql_history_store_is_shared_by_runs(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str, pg_dsn: str) -> None:
    import psycopg

    write_plan(plan(http_url, "/healthz", store=f'"{pg_dsn}"'))
    for version in ("1.0.0", "1.1.0"):
        result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-version", version)
        assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["analytics: system_analysis: no regression against release 1.0.0*"])
    with psycopg.connect(pg_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM release_runs ORDER BY ended")]
        samples = conn.execute("SELECT count(*) FROM release_samples").fetchone()[0]
    assert versions == ["1.0.0", "1.1.0"] and samples > 0
    assert not (pytester.path / "evidence" / "release" / "analytics" / "history.sqlite").exists()


def test_an_unreachable_history_store_is_reported_without_its_password(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    pytest.importorskip("psycopg")
    write_plan(plan(http_url, "/healthz", store='"postgresql://release:s3cret-pw@127.0.0.1:1/history"'))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 0, result.stdout.str()  # analytics informs; it never fails a release
    result.stdout.fnmatch_lines(["analytics: this run is not in the history: cannot connect to "
                                 "postgres 127.0.0.1:1/history: *"])
    assert "s3cret-pw" not in result.stdout.str()
    evidence = pytester.path / "evidence" / "release"
    metric = records(evidence, "metrics")["system_metrics"]
    assert not metric["stored"] and "cannot connect" in metric["error"] and "s3cret-pw" not in json.dumps(metric)


def test_analytics_mistakes_are_plan_errors(pytester: pytest.Pytester, write_plan: PlanWriter,
                                            http_url: str) -> None:
    text = plan(http_url, "/healthz").replace("  analysis:\n", textwrap.indent(textwrap.dedent("""\
        - name: queue_metrics
          source: {sql: "SELECT 1", target: api}
        - name: latency_metrics
          source: {checks: helth}
        """), "    ") + "  analysis:\n")
    write_plan(text + "    - {name: orders_analysis}\n")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*release-plan.yaml:*:*: analytics.metrics[[]2].source.target: target 'api' is not a data store*",
        "*release-plan.yaml:*:*: analytics.metrics[[]3].source.checks: no check kind named 'helth'*did you mean*",
        "*release-plan.yaml:*:*: analytics.analysis[[]2]: analysis 'orders_analysis' covers no analytics metric*",
    ])
    assert "Traceback" not in result.stderr.str()
