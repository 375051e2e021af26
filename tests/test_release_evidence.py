"""Evidence of what the deploy and the rollback did, in real pytest runs against real servers and
files: the deploy's output, the rollback's timing and time to restore, the stages that ran, a
fanned-out check's own duration, relative symlinks, which security headers were there, and the
exit code of an operator's rollback."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest

from conftest import plan_with, run_check
from pytest_release.records import check_records, read_lines
from test_rollback import rollback_plan, step
from test_rollback_actions import act

PlanWriter = Callable[..., Path]


def _evidence(pytester: pytest.Pytester) -> tuple[Path, str]:
    evidence = pytester.path / "evidence" / "release"
    return evidence, (evidence / "LATEST").read_text().strip()


def _summary(pytester: pytest.Pytester) -> dict[str, Any]:
    evidence, run = _evidence(pytester)
    return json.loads((evidence / "runs" / run / "summary.json").read_text())


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- the deploy's output ------------------------------------------------------------------------

DEPLOY = ('{command: {argv: [python, -c, "import sys; [print(\'copied file\', i) for i in range(300)]; '
          'print(\'migrations: 3 applied\', file=sys.stderr); print(\'deployed shop 2.0.0 with\', sys.argv[1])", '
          '"${env:DEPLOY_TOKEN}"]}}')


def test_the_deploy_output_is_kept_when_the_deploy_succeeds(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "tok-7f3a9c1e5b2d")
    plan = rollback_plan('    - {name: smoke, stages: [post_release], checks: [{command: {argv: [python, -c, "pass"]}}]}\n')
    plan += (f"automation:\n  workflows:\n    - name: release_workflow\n      steps: [validate, deploy, verify]\n"
             f"      actions:\n        deploy: {DEPLOY}\n")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "release_workflow", "--html", "report.html", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    evidence, run = _evidence(pytester)
    record = next(r for r in check_records(evidence, run) if r["stage"] == "deploy")
    assert record["verdict"] == "passed"
    output = record["measured"]["output"]
    # bounded: the last 2,000 characters of stdout (a "..." where it was cut), then stderr's
    assert output[0] == "--- stdout ---" and output[1].startswith("...") and len("".join(output)) < 2200
    assert output[output.index("--- stderr ---") - 1] == "deployed shop 2.0.0 with ***"  # redacted
    assert output[output.index("--- stderr ---") + 1] == "migrations: 3 applied"
    assert "copied file 299" in output and "copied file 0" not in output
    everything = "".join(p.read_text(errors="replace") for p in evidence.rglob("*") if p.is_file()
                         and p.suffix in (".json", ".html", ".xml"))
    assert "tok-7f3a9c1e5b2d" not in everything and "tok-7f3a9c1e5b2d" not in result.stdout.str()
    html = (evidence / "runs" / run / "report.html").read_text()
    assert "migrations: 3 applied" in html and "copied file 299" in html  # the passed step's output section


# -- the rollback's timing ----------------------------------------------------------------------

GOOD_AFTER_REVERT = """\
    - name: service_validation
      stages: [post_release]
      checks:
        - {command: {name: smoke, argv: [python, -c, "import os, sys, time; time.sleep(0.3); sys.exit(0 if os.path.exists('good') else 3)"]}}
"""


@pytest.mark.parametrize("failure", ["failed gate", "failed deploy"])
def test_trigger_and_summary_carry_the_rollback_timing_and_time_to_restore(
        pytester: pytest.Pytester, write_plan: PlanWriter, failure: str) -> None:
    plan = _restoring_plan()
    args = ["--release-plan", "release-plan.yaml", "-p", "no:cacheprovider"]
    if failure == "failed deploy":
        (pytester.path / "good").write_text("")  # the gate passes; the deploy fails half way
        plan += ("automation:\n  workflows:\n    - name: release_workflow\n      steps: [validate, deploy, verify]\n"
                 "      actions:\n        deploy: {command: {argv: [python, -c, \"raise SystemExit(1)\"]}}\n")
        args += ["--release-workflow", "release_workflow"]
    write_plan(plan)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == 1, result.stdout.str()
    evidence, run = _evidence(pytester)
    trigger = json.loads((evidence / "rollback" / "triggers" / run / "validation_failure.json").read_text())
    summary = _summary(pytester)
    assert summary["rollback"]["manual"] is False and summary["rollback"]["outcome"] == "rolled_back"
    for record in (trigger, summary["rollback"]):
        start, end, first = _time(record["start"]), _time(record["end"]), record["first_failure"]
        assert first["what"] == failure
        assert ("deploy::release_workflow" if failure == "failed deploy" else "service_validation") in first["check"]
        assert record["duration_s"] == pytest.approx(end - start, abs=0.002) and record["duration_s"] >= 0.4
        assert _time(first["at"]) <= start
        assert record["time_to_restore_s"] == pytest.approx(end - _time(first["at"]), abs=0.002)
        assert record["time_to_restore_s"] >= record["duration_s"]
    # the same figures as the steps' own records
    steps = [json.loads(p.read_text()) for p in (evidence / "rollback" / "procedures" / run).rglob("*.json")
             if json.loads(p.read_text()).get("record") == "step"]
    assert trigger["end"] == max(s["end"] for s in steps) and trigger["start"] == min(s["start"] for s in steps)


def _restoring_plan(**kwargs: Any) -> str:
    """A plan whose service_validation fails until its revert step runs (and takes 0.4 s)."""
    return rollback_plan(GOOD_AFTER_REVERT, **kwargs).replace(
        step("svc.revert"), step("svc.revert", "; import time; time.sleep(0.4); open('good', 'w')"))


def test_an_operators_rollback_exits_0_and_says_so(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(_restoring_plan())
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-rollback",
                                           "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*ROLLED BACK (as asked: exit 0): manual_trigger: every step passed*",
                                 "pytest-release: ROLLED BACK (as asked): evidence sealed in *"])
    summary = _summary(pytester)
    assert (summary["outcome"], summary["banner"], summary["exit_status"]) == (
        "rolled_back", "ROLLED BACK (as asked)", 0)
    assert summary["rollback"]["manual"] is True and summary["rollback"]["first_failure"] is None
    assert summary["rollback"]["time_to_restore_s"] is None and summary["rollback"]["duration_s"] >= 0
    assert summary["stages_run"] == []  # no gate runs in an operator's rollback


def test_an_operators_rollback_that_fails_exits_20(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(_restoring_plan(stop_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-rollback",
                                           "-p", "no:cacheprovider")
    assert result.ret == 20
    assert _summary(pytester)["banner"] == "ROLLBACK FAILED"


# -- the stages that ran ------------------------------------------------------------------------


def test_a_skipped_stage_is_not_in_stages_run(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(plan_with("""\
        - name: first
          stages: [pre_release]
          checks: [{command: {argv: [python, -c, "raise SystemExit(1)"]}}]
        - name: later
          stages: [post_release]
          checks: [{command: {argv: [python, -c, "pass"]}}]
        """, stages="[{name: pre_release}, {name: post_release}]"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 1
    summary = _summary(pytester)
    assert summary["stages_run"] == ["pre_release"]
    assert [(s["name"], s["verdict"]) for s in summary["stages_not_run"]] == [("post_release", "skipped")]
    assert "required gate pre_release::first failed" in summary["stages_not_run"][0]["reason"]


# -- a fanned-out check's own duration ----------------------------------------------------------


def test_a_fanned_out_checks_record_shows_its_own_duration(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                           http_url: str) -> None:
    targets = "".join(f"a{i}: {{url: '{http_url}'}}\n" for i in range(4))
    write_plan(plan_with("""\
        - name: service
          checks: [{health: {path: "/delay?ms=400"}}]
        """, targets=targets))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    evidence, run = _evidence(pytester)
    records = read_lines(evidence / "validation" / "gates" / run / "pre_release" / "service" / "records.jsonl")
    assert len(records) == 4
    for record in records:  # each check took its 400 ms, however short the wait for its result was
        assert 0.38 <= record["duration_s"] < 5, record
        assert record["duration_s"] == pytest.approx(_time(record["end"]) - _time(record["start"]), abs=0.002)
        assert record["measured"]["latency_ms"] >= 380
    starts = sorted(_time(r["start"]) for r in records)
    assert starts[-1] - starts[0] < 0.35  # they ran together (fan-out), and the records say so
    gate = json.loads((evidence / "validation" / "gates" / run / "pre_release" / "service.json").read_text())
    assert gate["duration_s"] < 4 * 0.4


# -- relative symlinks --------------------------------------------------------------------------


@pytest.mark.parametrize(("form", "param", "relative"), [
    ("relative", None, True), ("absolute", None, False), ("absolute", True, True), ("relative", False, False),
    ("none", None, False), ("none", True, True),
])
def test_the_symlink_action_keeps_the_form_of_the_link(tmp_path: Path, form: str, param: bool | None,
                                                       relative: bool) -> None:
    for release in ("0.64", "0.65"):
        (tmp_path / "app" / "releases" / release).mkdir(parents=True)
    link = tmp_path / "app" / "current"
    if form != "none":
        os.symlink("releases/0.64" if form == "relative" else tmp_path / "app" / "releases" / "0.64", link)
        assert act("symlink_backup", tmp_path, "readiness", link="app/current", to="bk/release").passed
        link.unlink()
        os.symlink("releases/0.65" if form == "relative" else tmp_path / "app" / "releases" / "0.65", link)
        to = "bk/release"
    else:
        to = "app/releases/0.64"
    params: dict[str, Any] = {"link": "app/current", "to": to}
    if param is not None:
        params["relative"] = param
    done = act("symlink", tmp_path, **params)
    assert done.passed, done.summary
    assert os.readlink(link) == ("releases/0.64" if relative else str(tmp_path / "app" / "releases" / "0.64"))
    assert done.measured["relative"] is relative and done.measured["link"] == os.readlink(link)
    if relative:  # a relative link survives a moved release root
        os.rename(tmp_path / "app", tmp_path / "moved")
        assert os.path.realpath(tmp_path / "moved" / "current") == str(tmp_path / "moved" / "releases" / "0.64")


# -- security headers ---------------------------------------------------------------------------


def test_security_records_which_headers_were_present_and_which_missing(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str, server_factory: Callable[[str], int],
        tmp_path: Path) -> None:
    bare = f"http://127.0.0.1:{server_factory('insecure')}"
    wanted = ["X-Content-Type-Options", "Content-Security-Policy"]
    some = run_check("security", {"url": http_url}, tmp_path, headers=wanted, forbidden_paths=[])
    assert not some.passed
    assert some.measured["present_headers"] == ["X-Content-Type-Options"]
    assert some.measured["missing_headers"] == ["Content-Security-Policy"]
    assert some.summary.endswith("lacks header(s) Content-Security-Policy (present: X-Content-Type-Options)")
    write_plan(plan_with("""\
        - name: service
          targets: [bare]
          checks: [{security: {forbidden_paths: []}}]
        """, targets=f"bare: {{url: '{bare}'}}"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*measured: headers=0 of 1 present, missing X-Content-Type-Options*"])
    evidence, run = _evidence(pytester)
    record = next(r for r in check_records(evidence, run) if r["check"].startswith("security"))
    assert record["measured"]["present_headers"] == [] and record["measured"]["missing_headers"] == [
        "X-Content-Type-Options"]
