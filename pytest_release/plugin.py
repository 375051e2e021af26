"""The entry point (``pytest11``): options, ini keys and hooks; free when no plan is given.

Every project that installs pytest-release loads this module on every pytest run, its unit tests
included, so it imports nothing but pytest and the plugin's hook specifications. The plan loader,
the checks and their libraries (PyYAML, jsonschema, urllib3, cryptography, ...) are imported by
``pytest_configure`` only when ``--release-plan`` (or the ``release_plan`` ini key) names a plan:
it then loads :mod:`pytest_release.glue`, and each hook below hands its work to the glue.

The hooks stay here rather than in a plugin registered later, so they keep their place among other
plugins' hooks: before conftest.py wrappers of ``pytest_runtest_makereport`` (which see a
warning gate's failure as the skip it becomes), and in the terminal summary's order.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

#: Where evidence goes without ``--release-evidence-dir`` or ``release.evidence``
#: (``pytest_release.model.DEFAULT_EVIDENCE``, written out here so the help text costs no import).
DEFAULT_EVIDENCE = "evidence/release"

#: The glue module, once a plan is given.
GLUE = pytest.StashKey[ModuleType]()


def plan_given(config: pytest.Config) -> bool:
    """Whether this run is a release run: ``--release-plan`` or the ``release_plan`` ini key."""
    return bool(config.getoption("release_plan") or config.getini("release_plan"))


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("release", "release validation (pytest-release)")
    group.addoption("--release-plan", metavar="PATH", help="run the gates of this release plan (YAML). "
                    "ini: release_plan")
    group.addoption("--release-stage", metavar="NAME", action="append",
                    help="run only this stage; repeat for several. ini: release_stages")
    group.addoption("--release-evidence-dir", metavar="DIR",
                    help="where evidence goes (default: the plan's release.evidence, else "
                         f"{DEFAULT_EVIDENCE}). ini: release_evidence_dir")
    group.addoption("--release-rollback", action="store_true",
                    help="fire the plan's manual_trigger: run its rollback procedures, not its gates")
    group.addoption("--release-rollback-on-interrupt", choices=("yes", "no"), default=None,
                    help="after Ctrl-C, still roll back if a required gate had failed (default: yes). "
                         "ini: release_rollback_on_interrupt")
    group.addoption("--release-time-scale", metavar="F", type=float,
                    help="multiply every budget, window and interval of the plan by F (0.01 rehearses a "
                         "5-minute window in 3 seconds). ini: release_time_scale")
    group.addoption("--release-workflow", metavar="NAME",
                    help="run this workflow of the plan's automation.workflows (release_workflow: validate, "
                         "deploy, verify, and roll back on failure). ini: release_workflow")
    group.addoption("--release-version", metavar="VERSION",
                    help="the version this run releases, instead of the plan's release.version (CI passes "
                         "its tag; analytics compares each run with the previous version; ${var:release_version} "
                         "in the plan)")
    group.addoption("--release-var", metavar="NAME=VALUE", action="append",
                    help="a plain (not secret) value for ${var:NAME} in the plan; repeat for several. "
                         "ini: release_vars")
    group.addoption("--release-sign-key", metavar="PATH",
                    help="sign the run's seal (a DSSE envelope over an in-toto statement) with this Ed25519 "
                         "private key: a PEM file, or ${env:NAME} holding the key or its path. ini: release_sign_key")
    parser.addini("release_sign_key", "signing key (see --release-sign-key)")
    parser.addini("release_plan", "the release plan to run (see --release-plan)")
    parser.addini("release_workflow", "the workflow to run (see --release-workflow)")
    parser.addini("release_vars", "NAME=VALUE lines for ${var:NAME} (see --release-var)", type="linelist")
    parser.addini("release_stages", "stages to run (see --release-stage)", type="linelist")
    parser.addini("release_evidence_dir", "evidence directory (see --release-evidence-dir)")
    parser.addini("release_time_scale", "time scale (see --release-time-scale)", default="1")
    parser.addini("release_rollback_on_interrupt", "roll back after Ctrl-C (see --release-rollback-on-interrupt)",
                  type="bool", default=True)


def _glue(config: pytest.Config) -> Any:
    return config.stash.get(GLUE, None)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: the plan loads before other plugins configure (the terminal reporter takes the
    # redacting stream, JUnit XML and pytest-html take their default paths in the evidence).
    if not plan_given(config):
        return
    from . import glue

    config.stash[GLUE] = glue
    glue.configure(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist (controller): hand the run's record directory to each worker."""
    glue = _glue(node.config)
    if glue is not None:
        glue.configure_node(node)


def pytest_unconfigure(config: pytest.Config) -> None:
    glue = _glue(config)
    if glue is not None:
        glue.unconfigure(config)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    glue = _glue(parent.config)
    return None if glue is None else glue.collect_file(file_path, parent)


def pytest_collection_finish(session: pytest.Session) -> None:
    glue = _glue(session.config)
    if glue is not None:
        glue.collection_finish(session)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    glue = _glue(config)
    return None if glue is None else glue.report_header(config)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    glue = _glue(item.config)
    if glue is not None:
        glue.before_protocol(item)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    glue = _glue(item.config)
    return report if glue is None else glue.make_report(item, call, report)


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    glue = _glue(config)
    return None if glue is None else glue.report_teststatus(report, config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    glue = _glue(config)
    if glue is not None:
        glue.terminal_summary(terminalreporter, exitstatus, config)
