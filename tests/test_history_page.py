"""The history page: delivery metrics as defined, real runs (good, then rolled back) on the page,
the page in headless Chromium (filters, charts, a screenshot), and 1,000 runs."""

from __future__ import annotations

import json
import statistics
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from pytest_release.delivery import DAY, RunFacts, compute, weekly
from pytest_release.history_page import load_runs, write_index
from pytest_release.records import RECORD_SCHEMA

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
from history import make_history

from helpers import Example
from test_evidence import CHROMIUM_ARGS

SCREENSHOTS = Path(__file__).parent / "screenshots"
NOW = 1_800_000_000.0


def run(i: int, outcome: str, *, deployed: bool = True, restore: float | None = None, release: str = "shop",
        days_ago: float = 1.0, rollback: str | None = None, monitoring: float | None = None) -> RunFacts:
    start = NOW - days_ago * DAY
    facts = RunFacts(f"r{i:03d}", release, f"1.{i}", outcome, start, start + 60, deployed,
                     rollback=rollback, trigger="validation_failure" if rollback else None, monitoring_s=monitoring)
    if restore is not None:
        facts.detected_at, facts.restored_at = start + 10, start + 10 + restore
    return facts


@pytest.mark.parametrize("released, rolled_back, failed_rollback, blocked, restores", [
    (10, 0, 0, 0, []),
    (7, 2, 1, 3, [30.0, 90.0]),
    (0, 3, 0, 1, [5.0, 50.0, 500.0]),
    (1, 0, 2, 0, []),
    (0, 0, 0, 4, []),
])
def test_delivery_metrics_follow_their_definitions(released: int, rolled_back: int, failed_rollback: int,
                                                   blocked: int, restores: list[float]) -> None:
    runs = [run(i, "released", monitoring=120.0) for i in range(released)]
    runs += [run(100 + i, "rolled_back", restore=restores[i], rollback="rolled_back", monitoring=30.0)
             for i in range(rolled_back)]
    runs += [run(200 + i, "rollback_failed", rollback="rollback_failed") for i in range(failed_rollback)]
    runs += [run(300 + i, "blocked", deployed=False) for i in range(blocked)]  # before the deploy
    metrics = compute(runs, NOW - 7 * DAY, NOW)
    deployed = released + rolled_back + failed_rollback
    assert len(metrics.deployed) == deployed  # a release blocked before its deploy is no deployment
    assert metrics.per_week == pytest.approx(released)  # released runs over the 7-day period
    assert metrics.per_day == pytest.approx(released / 7)
    assert metrics.change_failure_rate == (pytest.approx((rolled_back + failed_rollback) / deployed)
                                           if deployed else None)
    assert metrics.median_restore == (pytest.approx(statistics.median(restores)) if restores else None)
    assert metrics.worst_restore == (max(restores) if restores else None)
    assert len(metrics.not_restored) == failed_rollback
    rollbacks = rolled_back + failed_rollback
    assert metrics.rollback_success_rate == (pytest.approx(rolled_back / rollbacks) if rollbacks else None)
    monitored = released + rolled_back
    assert metrics.mean_monitoring == (pytest.approx((120 * released + 30 * rolled_back) / monitored)
                                       if monitored else None)
    figures = metrics.as_dict()  # each figure names the runs it came from
    assert sorted(figures["change_failure_rate"]["deployed"]) == sorted(r.run_id for r in metrics.deployed)


def test_the_period_and_the_weeks_count_only_their_runs() -> None:
    runs = [run(i, "released", days_ago=d) for i, d in enumerate([0.5, 3, 10, 20, 40, 100])]
    assert [len(compute(runs, NOW - d * DAY, NOW).runs) for d in (7, 30, 90)] == [2, 4, 5]
    assert len(compute(runs, None, NOW).runs) == 6 and compute(runs, None, NOW).days == pytest.approx(100)
    weeks = weekly(runs, NOW - 30 * DAY, NOW)
    assert sum(w[1] for w in weeks) == 4 and all(w[0] <= NOW for w in weeks)
    assert [w[0] for w in weeks] == sorted(w[0] for w in weeks) and len(weeks) in (5, 6)


def plan(http_url: str, fault: Path) -> str:
    return textwrap.dedent(f"""\
        release: {{name: shop, version: 1.0.0}}
        targets:
          api: {{url: "{http_url}", health: "/unless?file={fault}"}}
        strategy:
          stages: [{{name: pre_release}}, {{name: release}}]
          gates: [{{name: validation_gate, timeout: 10}}]
        rollback:
          triggers: [{{name: validation_failure, action: rollback, procedures: [service_rollback]}}]
          procedures:
            - name: service_rollback
              steps:
                - revert: {{command: {{argv: ["{sys.executable}", "-c", "import os, time; time.sleep(0.3); os.remove('{fault}')"]}}}}
        validation:
          gates:
            - {{name: service_validation, stages: [release], checks: [health]}}
        """)


def test_good_then_rolled_back_runs_are_on_the_page_with_the_time_to_restore(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str) -> None:
    fault = pytester.path / "fault"
    write_plan(plan(http_url, fault))
    good = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert good.ret == 0  # PASSED: pre_release has no check of its own here
    fault.write_text("1.1.0 is broken")
    bad = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-version", "1.1.0")
    assert bad.ret == 1, bad.stdout.str()
    evidence = pytester.path / "evidence" / "release"
    bad.stdout.fnmatch_lines([f"pytest-release: history of every sealed run: {evidence / 'index.html'}"])
    runs = load_runs(evidence)
    assert [(r.version, r.outcome) for r in runs] == [("1.1.0", "rolled_back"), ("1.0.0", "passed")]
    latest = runs[0]
    record = json.loads((evidence / "runs" / latest.run_id / "delivery.json").read_text())
    jsonschema.validate(record, RECORD_SCHEMA)
    assert record["deployed"] and record["detected_by"] == "release::service_validation::health[api]"
    # From the failed check to the end of the rollback's verify: at least the revert's 0.3 s.
    assert 0.3 <= record["time_to_restore_s"] < 30 and latest.time_to_restore == pytest.approx(
        record["time_to_restore_s"], abs=0.002)
    trigger = json.loads((evidence / "rollback" / "triggers" / latest.run_id / "validation_failure.json").read_text())
    assert record["time_to_restore_s"] == pytest.approx(trigger["time_to_restore_s"], abs=0.002)  # one figure
    page = (evidence / "index.html").read_text()
    assert page.index(runs[0].run_id) < page.index(runs[1].run_id)  # newest first
    assert f'href="runs/{latest.run_id}/report.html"' in page and "ROLLED BACK" in page and "PASSED" in page
    # The CLI writes the same page; verify leaves it out (every run rewrites it).
    (evidence / "index.html").unlink()
    cli = pytester.run(sys.executable, "-m", "pytest_release", "index", str(evidence))
    assert cli.ret == 0 and (evidence / "index.html").is_file()
    cli.stdout.fnmatch_lines(["*index.html: 2 sealed run(s)"])
    verify = pytester.run(sys.executable, "-m", "pytest_release", "verify", str(evidence))
    assert verify.ret == 0, verify.stdout.str()


def test_the_page_in_chromium_filters_runs_and_draws_its_charts(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ids = make_history(tmp_path, 60, now=NOW, days=120, releases=("shop", "billing"))
    html = write_index(tmp_path, now=NOW)
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "history-page.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--headless", "--disable-gpu", *CHROMIUM_ARGS])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(html.as_uri())
            rows = page.locator("#history-runs tr.history-run")
            assert rows.count() == 60 and page.locator("#history-shown").inner_text() == "60 of 60 run(s) shown"
            assert rows.first.get_attribute("id") == f"run-{ids[-1]}"  # newest first
            visible = page.locator(".metrics-block:visible")
            assert visible.count() == 1 and "all releases, all runs" in visible.inner_text()
            assert visible.locator("svg.history-weekly rect").count() > 10
            assert visible.locator("svg.history-restore rect").count() >= 1
            page.select_option("#filter-release", "billing")
            page.select_option("#filter-verdict", "rolled_back")
            shown = page.locator("#history-runs tr.history-run:visible")
            assert shown.count() >= 1
            for index in range(shown.count()):
                text = shown.nth(index).inner_text()
                assert "billing" in text and "ROLLED BACK" in text
            assert "billing, all runs" in page.locator(".metrics-block:visible").inner_text()
            page.select_option("#filter-verdict", "")
            page.select_option("#filter-period", "30d")
            block = page.locator(".metrics-block:visible")
            assert "billing, last 30 days" in block.inner_text()
            block.locator('[data-metric="change_failure_rate"] button').first.click()
            failed = page.locator("#history-runs tr.history-run:visible")
            for index in range(failed.count()):
                assert "RELEASED" not in failed.nth(index).inner_text()
            assert "failed deployments" in page.locator("#history-shown").inner_text()
            page.locator("#history-clear").click()
            page.select_option("#filter-release", "*")
            page.select_option("#filter-period", "all")
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_a_thousand_runs_build_and_open_quickly(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    make_history(tmp_path, 1000, now=NOW)
    began = time.perf_counter()
    html = write_index(tmp_path, now=NOW)
    built = time.perf_counter() - began
    size = html.stat().st_size
    assert built < 10 and size < 3 * 1024 * 1024, (built, size)  # measured here: ~0.7 s, ~1 MiB
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--headless", "--disable-gpu", *CHROMIUM_ARGS])
        try:
            page = browser.new_page()
            began = time.perf_counter()
            page.goto(html.as_uri())
            opened = time.perf_counter() - began
            assert page.locator("#history-shown").inner_text() == "1000 of 1000 run(s) shown"
        finally:
            browser.close()
    assert opened < 15, opened  # measured here: ~1 s
    print(f"1000 runs: built in {built:.2f}s, {size / 1024 / 1024:.2f} MiB, opened in Chromium in {opened:.2f}s")


def test_the_example_good_then_bad_release_on_the_page_and_at_its_receiver(
        pytester: pytest.Pytester, example: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    """As run.sh does: release_workflow with 1.0.0, then with 1.1.0 (rolled back); the example's own
    receiver (started by the fixture, as by run.sh) logs each signed notification."""
    monkeypatch.chdir(example.project)
    evidence = pytester.path / "evidence"
    for version, code in (("1.0.0", 0), ("1.1.0", 1)):
        monkeypatch.setenv("SHOP_RELEASE", version)
        result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-evidence-dir",
                                               str(evidence), "--release-workflow", "release_workflow",
                                               "--release-version", version)
        assert result.ret == code, result.stdout.str()
    log = (example.project / "var" / "notifications.log").read_text().splitlines()
    events = [line.split()[2] for line in log]
    assert events == ["verdict:", "trigger_fired:", "rollback_finished:", "verdict:"], log
    assert all(line.split()[1] == "signed" for line in log)
    runs = load_runs(evidence)
    assert [(r.version, r.outcome) for r in runs] == [("1.1.0", "rolled_back"), ("1.0.0", "released")]
    assert runs[0].time_to_restore is not None and 0 < runs[0].time_to_restore < 60
    page = (evidence / "index.html").read_text()
    assert page.count('class="history-run"') == 2 and "1.1.0" in page and "1.0.0" in page
