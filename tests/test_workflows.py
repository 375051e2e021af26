"""Workflows (--release-workflow): the example's release_workflow deploys in one run and rolls
back on failure; rollback_workflow rolls back on demand; a workflow's timeout bounds the run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest

from helpers import Example, plan_with


def _workflow(pytester: pytest.Pytester, example: Example, release: str, *args: str) -> pytest.RunResult:
    os.chdir(example.project)
    os.environ["SHOP_RELEASE"] = release  # what the plan's deploy action (ctl.py upgrade) deploys
    try:
        return pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-evidence-dir",
                                             str(pytester.path / "evidence"), "-v", *args)
    finally:
        del os.environ["SHOP_RELEASE"]


def _record(pytester: pytest.Pytester, name: str, evidence: Path | None = None) -> dict[str, Any]:
    evidence = evidence or pytester.path / "evidence"
    run = (evidence / "LATEST").read_text().strip()
    return json.loads((evidence / "automation" / "workflows" / run / f"{name}.json").read_text())


def test_release_workflow_deploys_the_good_release(pytester: pytest.Pytester, example: Example) -> None:
    result = _workflow(pytester, example, "1.0.0", "--release-workflow", "release_workflow")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*release-plan.yaml::pre_release::rollback_gate::readiness?data_rollback? PASSED*",
        "*release-plan.yaml::deploy::release_workflow::command PASSED*",
        "*release-plan.yaml::release::service_validation::health?api? PASSED*",
        "*release-plan.yaml::post_release::monitoring_gate::metric?service_health? PASSED*",
        "*workflow release_workflow: validate passed, deploy passed, verify passed*",
    ])
    record = _record(pytester, "release_workflow")
    assert [(s["step"], s["stages"], s["verdict"]) for s in record["steps"]] == [
        ("validate", ["pre_release"], "passed"), ("deploy", ["deploy"], "passed"),
        ("verify", ["release", "post_release"], "passed")]
    assert record["outcome"] == "released"
    assert "1.0.0" in example.ctl("status")


def test_release_workflow_rolls_back_the_bad_release(pytester: pytest.Pytester, example: Example) -> None:
    prices = example.prices()
    result = _workflow(pytester, example, "1.1.0", "--release-workflow", "release_workflow")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*release-plan.yaml::deploy::release_workflow::command PASSED*",
        "*release-plan.yaml::release::service_validation::health?api? FAILED*",
        "*ROLLED BACK: validation_failure: every step passed and verify passed*",
        "*workflow release_workflow: validate passed, deploy passed, verify failed*",
    ])
    assert example.prices() == prices
    assert example.get("/version") == (200, {"version": "1.0.0"})
    assert _record(pytester, "release_workflow")["outcome"] == "rolled_back"


def test_a_failed_deploy_is_rolled_back(pytester: pytest.Pytester, example: Example) -> None:
    """ctl.py upgrade stops the service, then cannot deploy a release that does not exist: the
    service is down; the rollback starts 1.0.0 again."""
    result = _workflow(pytester, example, "9.9.9", "--release-workflow", "release_workflow")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*release-plan.yaml::deploy::release_workflow::command FAILED*",
        "*release_workflow step deploy (command): *exited 1*",
        "*ROLLED BACK: validation_failure: every step passed and verify passed*",
        "*workflow release_workflow: validate passed, deploy failed, verify skipped*",
    ])
    assert example.get("/version") == (200, {"version": "1.0.0"})


def test_rollback_workflow_rolls_back_on_demand(pytester: pytest.Pytester, example: Example) -> None:
    before = _workflow(pytester, example, "1.0.0", "--release-stage", "pre_release")
    assert before.ret == 0, before.stdout.str()
    result = _workflow(pytester, example, "1.0.0", "--release-workflow", "rollback_workflow")
    result.stdout.fnmatch_lines([
        "*rollback::data_rollback::revert PASSED*",
        "*ROLLED BACK (as asked: exit 0): manual_trigger: every step passed and verify passed*",
        "*workflow rollback_workflow: backup rolled_back, revert rolled_back, verify rolled_back*",
    ])
    assert result.ret == 0  # an operator's rollback that did what was asked (a failed one exits 20)
    assert _record(pytester, "rollback_workflow")["rollback"] is True


def test_workflow_timeout_bounds_the_run(pytester: pytest.Pytester, write_plan: Callable[..., Path]) -> None:
    plan = plan_with("""\
        - name: smoke
          checks: [{command: {argv: [python3, -c, "print('ok')"]}}]
        """, stages="[{name: pre_release}, {name: release}]")
    plan += ("automation:\n  workflows:\n    - name: release_workflow\n      steps: [validate, deploy, verify]\n"
             "      timeout: 6s\n      actions:\n        deploy: {command: {argv: [sleep, '120']}}\n")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "release_workflow", "-v")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*::pre_release::smoke::command?python3? PASSED*",
        "*::deploy::release_workflow::command FAILED*",
        "*release_workflow step deploy (command): *",
        "*SKIPPED  stage release not run: required gate deploy::release_workflow failed*",
    ])
    assert result.duration < 60  # the 6 s workflow timeout stopped the 120 s deploy


def test_workflow_usage_errors(pytester: pytest.Pytester, write_plan: Callable[..., Path]) -> None:
    plan = plan_with("- {name: smoke, checks: [{command: {argv: [\"true\"]}}]}\n")
    plan += "automation:\n  workflows:\n    - {name: release_workflow, steps: [validate, deploy, verify]}\n"
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow", "ship")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--release-workflow ship: release-plan.yaml has no such workflow; "
                                 "workflows: release_workflow*"])
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "release_workflow")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*release-plan.yaml:1?:*: automation.workflows?release_workflow?.steps?1?: "
                                 "step 'deploy' does nothing: it has no action*"])
    assert "Traceback" not in result.stderr.str()


def test_monitoring_workflow_runs_only_the_monitoring_windows(pytester: pytest.Pytester,
                                                              write_plan: Callable[..., Path], http_url: str) -> None:
    plan = plan_with("""\
        - name: service_validation
          checks: [health]
        """, targets=f"api: {{url: '{http_url}', health: /healthz}}",
        stages="[{name: pre_release, monitoring: false}, {name: post_release, monitoring: true}]")
    plan = plan.replace("  gates:\n    - {name: validation_gate, timeout: 10}\n",
                        "  gates:\n    - {name: validation_gate, timeout: 10}\n"
                        "    - {name: monitoring_gate, timeout: 1s, window: 600ms}\n")
    plan += ("monitoring:\n  metrics:\n    - {name: service_health, interval: 200ms, threshold: 0.9}\n"
             "automation:\n  workflows:\n    - {name: monitoring_workflow, steps: [collect, analyze, alert]}\n")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "monitoring_workflow", "-v")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*::post_release::monitoring_gate::metric?service_health? PASSED*",
                                 "*workflow monitoring_workflow: collect passed, analyze passed, alert passed*"])
    assert "service_validation" not in result.stdout.str().split("collected")[1]
    assert "1 passed" in result.stdout.str()
    record = _record(pytester, "monitoring_workflow", pytester.path / "evidence" / "release")
    assert [s["stages"] for s in record["steps"]] == [["post_release"]] * 3
