"""The example project end to end: its real service process, its plan, a good and a bad release.

The flow is the one `example_project/run.sh` follows: release 1.0.0 runs; the pre_release stage
checks it and takes the backups; the new release is deployed; the release and post_release
stages judge it, and a failure rolls everything back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import Example


def _run(pytester: pytest.Pytester, example: Example, *stages: str) -> pytest.RunResult:
    # pytest runs in the project's folder, as run.sh does: its conftest.py (the custom check) loads.
    os.chdir(example.project)
    args = ["--release-plan", "release-plan.yaml", "--release-evidence-dir", str(pytester.path / "evidence"), "-v"]
    for stage in stages:
        args += ["--release-stage", stage]
    return pytester.runpytest_subprocess(*args)


def _release(pytester: pytest.Pytester, example: Example, version: str) -> pytest.RunResult:
    before = _run(pytester, example, "pre_release")
    assert before.ret == 0, before.stdout.str()
    before.stdout.fnmatch_lines(["*::pre_release::rollback_gate::readiness?data_rollback? PASSED*",
                                 "*::pre_release::data_validation::integrity?dist? PASSED*"])
    example.ctl("stop")
    example.ctl("deploy", version)
    example.ctl("start", "--port", str(example.port))
    return _run(pytester, example, "release", "post_release")


def test_good_release_passes_every_gate(pytester: pytest.Pytester, example: Example) -> None:
    after = _release(pytester, example, "1.0.0")
    assert after.ret == 0, after.stdout.str()
    after.stdout.fnmatch_lines([
        "*::release::service_validation::health?api? PASSED*",
        "*::post_release::data_validation::catalogue?db? PASSED*",
        "*::post_release::data_validation::consistency-catalogue?db? PASSED*",
        "*::post_release::service_validation::health-catalogue?api? PASSED*",
        "*::post_release::version_report::health-version?api? PASSED*",
        "*shop: every required gate that ran passed*",
    ])
    assert "pytest-release rollback" not in after.stdout.str()
    evidence = pytester.path / "evidence"
    assert len(list(evidence.glob("runs/*/manifest.json"))) == 2


def test_bad_release_is_rolled_back_and_proven(pytester: pytest.Pytester, example: Example) -> None:
    prices = example.prices()
    config = (example.project / "var" / "config" / "app.yaml").read_bytes()
    after = _release(pytester, example, "1.1.0")
    assert after.ret == 1, after.stdout.str()
    after.stdout.fnmatch_lines([
        "*::release::service_validation::health?api? FAILED*",
        "*pytest-release rollback*",
        "*::rollback::data_rollback::backup PASSED*",
        "*::rollback::data_rollback::revert PASSED*",
        "*::rollback::data_rollback::verify PASSED*",
        "*::rollback::config_rollback::revert PASSED*",
        "*::rollback::service_rollback::stop PASSED*",
        "*::rollback::service_rollback::revert PASSED*",
        "*::rollback::service_rollback::start PASSED*",
        "*::rollback::verify PASSED*",
        "*ROLLED BACK: validation_failure: every step passed and verify passed*",
    ])
    assert example.get("/version") == (200, {"version": "1.0.0"})
    assert example.get("/healthz")[0] == 200
    assert example.prices() == prices
    assert (example.project / "var" / "config" / "app.yaml").read_bytes() == config
    evidence = pytester.path / "evidence"
    run = (evidence / "LATEST").read_text().strip()
    summary = json.loads((evidence / "runs" / run / "summary.json").read_text())
    assert summary["outcome"] == "rolled_back" and summary["banner"] == "ROLLED BACK"
    trigger = json.loads((evidence / "rollback" / "triggers" / run / "validation_failure.json").read_text())
    assert trigger["outcome"] == "rolled_back"
    steps = [json.loads(p.read_text()) for p in (evidence / "rollback" / "procedures" / run).rglob("*.json")
             if json.loads(p.read_text())["record"] == "step"]
    assert len(steps) == 11 and all(s["verdict"] == "passed" for s in steps)
    assert subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)]).returncode == 0


def test_tampered_release_is_blocked_before_the_deploy(pytester: pytest.Pytester, example: Example) -> None:
    config = example.project / "releases" / "1.0.0" / "config" / "app.yaml"
    config.write_text(config.read_text().replace("discounts: true", "discounts: false"))
    result = _run(pytester, example, "pre_release")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*integrity?dist? FAILED*",
                                 "*config/app.yaml: sha256 * does not match the manifest's *"])
    assert "pytest-release rollback" not in result.stdout.str()  # nothing was deployed: blocked
