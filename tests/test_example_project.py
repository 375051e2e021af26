"""The example project end to end: its real service process, its plan, a good and a bad release."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "example_project"


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A copy of the example project whose plan points at a free port; the service stopped after."""
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("var", "evidence", "__pycache__"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan = project / "release-plan.yaml"
    plan.write_text(plan.read_text().replace("18080", str(port)))
    yield project, port
    subprocess.run([sys.executable, str(project / "ctl.py"), "stop"], capture_output=True)


def _deploy_and_run(pytester: pytest.Pytester, project: Path, port: int, version: str) -> pytest.RunResult:
    ctl = [sys.executable, str(project / "ctl.py")]
    for args in (["init-db"], ["deploy", version], ["start", "--port", str(port)]):
        subprocess.run(ctl + args, check=True, capture_output=True)
    pytester.chdir()
    return pytester.runpytest_subprocess("--release-plan", str(project / "release-plan.yaml"),
                                         "--release-evidence-dir", "evidence", "-v")


def test_good_release_passes_every_gate(pytester: pytest.Pytester, example: tuple[Path, int]) -> None:
    project, port = example
    result = _deploy_and_run(pytester, project, port, "1.0.0")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*::pre_release::artifact_validation::integrity?dist? PASSED*",
        "*::pre_release::artifact_validation::syntax?conf? PASSED*",
        "*::release::service_validation::health?api? PASSED*",
        "*::post_release::data_validation::command?catalogue-not-empty? PASSED*",
        "*::post_release::version_report::health-version?api? PASSED*",
        "*shop: every required gate that ran passed*",
        "*12 passed*",
    ])
    run = (pytester.path / "evidence" / "LATEST").read_text().strip()
    assert (pytester.path / "evidence" / "runs" / run / "junit.xml").is_file()
    assert (pytester.path / "evidence" / "runs" / run / "report.html").is_file()


def test_bad_release_is_blocked(pytester: pytest.Pytester, example: tuple[Path, int]) -> None:
    project, port = example
    result = _deploy_and_run(pytester, project, port, "1.1.0")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*::pre_release::artifact_validation::integrity?dist? PASSED*",
        "*::release::service_validation::health?api? FAILED*",
        "*answered 503, expected 200*",
        "*no such table: items_v2*",
        "*SKIPPED  stage post_release not run: required gate release::service_validation failed*",
    ])


def test_tampered_release_fails_integrity(pytester: pytest.Pytester, example: tuple[Path, int]) -> None:
    project, port = example
    config = project / "releases" / "1.0.0" / "config" / "app.yaml"
    config.write_text(config.read_text().replace("discounts: true", "discounts: false"))
    result = _deploy_and_run(pytester, project, port, "1.0.0")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*integrity?dist? FAILED*",
                                 "*config/app.yaml: sha256 * does not match the manifest's *"])
