"""pytest-release's own hooks, for conftest.py files and plugins (added in ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .checks.base import CheckKind
    from .rollback.actions import StepContext, StepResult


@pytest.hookspec
def pytest_release_check_kinds() -> list[CheckKind]:
    """Return the check kinds this conftest.py or plugin adds.

    Each is a :class:`pytest_release.CheckKind`: its ``name`` (what plans write), ``judges`` (the
    target kinds it can judge: ``service``, ``datastore``, ``config``, ``artifacts``; empty for a
    check that needs no target), ``params`` (the JSON Schema of its parameters: plans are
    validated against it before anything runs) and ``run(context) -> CheckResult``. Called once,
    when the plan loads, in every process (controller and xdist workers). Installed plugins can
    also name their kinds in the ``pytest_release.checks`` entry-point group.
    """


@pytest.hookspec(firstresult=True)
def pytest_release_rollback_step(context: StepContext) -> StepResult | None:
    """Perform a rollback step whose action is ``hook``.

    ``context.procedure`` and ``context.step`` name the step, ``context.params`` holds the
    action's parameters from the plan, ``context.base_dir`` is the plan's directory,
    ``context.mode`` is ``"readiness"`` when the rollback_gate asks whether the step could run
    (do nothing that changes the system then), ``"rollback"`` when it must run, or ``"workflow"``
    for a workflow's action step (``context.procedure`` is then the workflow's name), and
    ``context.remaining()`` is the time left. Return a :class:`pytest_release.StepResult`
    (``passed``, ``summary``, ``details``), or ``None`` to leave the step to another
    implementation. Runs on the controller (for a rollback) or a worker (for readiness).
    """
