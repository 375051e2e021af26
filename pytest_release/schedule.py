"""The release's run-time decisions, as one plain object the pytest hooks ask.

Given the plan, the items this process runs and what has happened so far (the verdicts in the run
state, shared with xdist workers), :class:`Schedule` says for one check item, just before it runs:

- whether it must not run, and why (:class:`~pytest_release.result.Blocked`): the run is a
  rollback; a required gate of an earlier stage failed, or its checks never finished; the
  workflow's timeout was used up; a required gate of its stage failed, so its monitoring window
  does not open;
- its deadline (monotonic): its gate's budget, whose clock starts with the gate's first check in
  this process; a metric's own window and budget; a monitoring window's; never past the workflow's;
- whether its result is already under way (fan-out: the gate's target checks started together on
  a bounded pool) or decided (a readiness check of its gate failed);
- whether it opens its stage's monitoring window.

It imports nothing of pytest: it works on any object with the check item's attributes
(:class:`Slot`), so it is tested without pytest runs (``tests/test_schedule.py``). The glue turns
its answers into pytest calls (a skip, a pytest-timeout marker, the live progress line).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from .checks import CheckKind, CheckResult
from .fanout import Fanout
from .metrics import metric_budget
from .monitoring import window_budget
from .model import METRIC, MONITOR, CheckSpec, Gate, Plan, Stage
from .result import Blocked, Cause, Verdict
from .runstate import Record, RunState
from .secrets import redact
from .units import format_duration

__all__ = ["Decision", "Schedule", "Slot"]


class Slot(Protocol):
    """What the schedule needs to know of a check item (a ``CheckItem`` is one)."""

    @property
    def nodeid(self) -> str: ...

    stage: Stage
    gate: Gate
    spec: CheckSpec
    kind: CheckKind

    def check(self, deadline: float | None = None) -> CheckResult: ...


@dataclass(frozen=True)
class Decision:
    """What one item must do now."""

    #: Not to run, and why; ``None``: it runs.
    blocked: Blocked | None
    #: When its budget ends (``time.monotonic()``).
    deadline: float
    #: Its result when it is already under way (fan-out) or decided (its gate's readiness check
    #: failed): the item waits for it within the deadline instead of running its check.
    early: Future[Any] | None = None
    #: It opens its stage's monitoring window (the glue opens it and shows its progress).
    opens_window: bool = False


class Schedule:
    """The run-time policy of one process (see the module)."""

    def __init__(self, plan: Plan, state: RunState, *, skip_all: str = "",
                 workflow: tuple[str, float] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.state = state
        #: Why no check of this run runs (a manual rollback, or resuming an interrupted one).
        self.skip_all = skip_all
        self.clock = clock
        self.fanout = Fanout()
        self.items: list[Slot] = []
        #: The workflow this run performs (name, timeout) and when its timeout is up (monotonic).
        self.workflow = workflow
        self.workflow_deadline = clock() + workflow[1] if workflow is not None else None
        self._earlier: dict[int, tuple[list[str], float]] = {}

    def collected(self, items: Sequence[Slot]) -> None:
        """The check items this process runs, in the order it runs them."""
        self.items = list(items)
        self._earlier.clear()

    # -- the questions ---------------------------------------------------------------------------

    def blocked(self, item: Slot) -> Blocked | None:
        """Why ``item`` must not run (before its monitoring window, see :meth:`window_blocked`)."""
        if self.skip_all:
            return self._blocked(Cause.NOT_ASKED, self.skip_all)
        return self._earlier_stages(item) or self._out_of_time()

    def window_blocked(self, item: Slot) -> Blocked | None:
        """For a monitoring item: once a required gate of its (deployed) stage failed in this
        process, the rollback is due and no window delays it. A failed metric of the window itself
        says nothing: its siblings take their results."""
        if item.spec.kind != MONITOR or not item.stage.deployed:
            return None
        failed = self.state.failed_in(item.stage.name, but=item.gate.name)
        if failed is None:
            return None
        return self._blocked(Cause.WINDOW_NOT_OPENED,
                             f"monitoring window of stage {item.stage.name} not opened: required gate "
                             f"{failed.stage}::{failed.gate} failed ({failed.summary})")

    def deadline(self, item: Slot) -> float:
        """When ``item``'s budget ends: a metric has its own (its window, then a round of checks), a
        monitoring item the window's; any other check its gate's, whose clock starts with the
        gate's first check here. Never later than the workflow's timeout."""
        if item.spec.kind == METRIC:
            deadline = self.clock() + metric_budget(self.plan, item.spec.params, item.gate.timeout)
        elif item.spec.kind == MONITOR:
            deadline = self.clock() + window_budget(self.plan)
        else:
            deadline = self.state.deadline(item.stage.name, item.gate.name, item.gate.timeout)
        if self.workflow_deadline is not None:
            deadline = min(deadline, self.workflow_deadline)
        return deadline

    def decide(self, item: Slot) -> Decision:
        """Everything at once, in the order it matters, just before ``item`` runs: blocked or not,
        its deadline, its monitoring window, its readiness, its gate's fan-out."""
        blocked = self.blocked(item)
        deadline = self.deadline(item)
        opens_window = False
        if blocked is None and item.spec.kind == MONITOR:
            blocked = self.window_blocked(item)
            opens_window = blocked is None
        if blocked is not None:
            return Decision(blocked, deadline)
        early = self._not_ready(item)
        if early is None and not self.state.wait_for_others:
            self._fan_out(item, deadline)
        return Decision(None, deadline, early or self.fanout.take(item.nodeid), opens_window)

    def finished(self, nodeid: str, item: Slot, verdict: Verdict, summary: str) -> None:
        """``item``'s verdict, for the stages and windows that come after it (and other processes)."""
        self.state.record(Record(nodeid, item.stage.name, item.gate.name, verdict.value, summary))

    # -- how -------------------------------------------------------------------------------------

    def _blocked(self, cause: Cause, reason: str) -> Blocked:
        return Blocked(cause, redact(reason, self.plan.secrets))

    def _earlier_stages(self, item: Slot) -> Blocked | None:
        """A required gate of an earlier stage failed (or its checks never finished)."""
        known = self._earlier.get(item.stage.index)
        if known is None:  # once per stage: a stage's every check asks, and the earlier ones may be thousands
            earlier = [i for i in self.items if i.stage.index < item.stage.index]
            # Under xdist: how long the earlier stages can take at most (their budgets, metric and
            # monitoring windows).
            budgets = sum(i.gate.timeout for i in {id(i.gate): i for i in earlier}.values())
            windows = sum(m.window for m in self.plan.metrics.values()) + window_budget(self.plan)
            known = self._earlier[item.stage.index] = ([i.nodeid for i in earlier],
                                                       (budgets + windows) * len(self.plan.stages))
        nodeids, max_wait = known
        if not nodeids:
            return None
        failure, pending = self.state.earlier_failure(item.stage.name, nodeids, max_wait)
        if failure is not None:
            return self._blocked(Cause.EARLIER_FAILED,
                                 f"stage {item.stage.name} not run: required gate {failure.stage}::{failure.gate} "
                                 f"failed ({failure.nodeid.rpartition('::')[2]}: {failure.summary})")
        if pending:
            return self._blocked(Cause.EARLIER_UNFINISHED,
                                 f"stage {item.stage.name} not run: {len(pending)} check(s) of earlier stages "
                                 f"never finished (first: {pending[0]})")
        return None

    def _out_of_time(self) -> Blocked | None:
        if self.workflow is None or self.workflow_deadline is None or self.clock() < self.workflow_deadline:
            return None
        name, timeout = self.workflow
        return self._blocked(Cause.OUT_OF_TIME,
                             f"not run: the {format_duration(timeout)} timeout of workflow {name} was used up")

    def _not_ready(self, item: Slot) -> Future[Any] | None:
        """A failed readiness check of the item's gate holds back its other checks (see fanout)."""
        if item.spec.ready or not any(c.ready for c in item.gate.checks):
            return None
        return self.fanout.not_ready(f"{item.stage.name}::{item.gate.name}",
                                     lambda: [i.nodeid for i in self.items if i.stage is item.stage
                                              and i.gate is item.gate and i.spec.ready],
                                     self.state, item.gate.timeout)

    def _fan_out(self, item: Slot, deadline: float) -> None:
        """On the gate's first item after its readiness checks, start the checks of all its target
        items at once (see fanout), each with the gate's deadline."""
        if not item.kind.judges or item.gate.concurrency <= 1 or item.kind.run is None or item.spec.ready:
            return
        key = (item.stage.name, item.gate.name)
        if self.fanout.started(key):
            return
        same = [i for i in self.items if i.stage is item.stage and i.gate is item.gate and i.kind.judges
                and i.kind.run is not None and not i.spec.ready]
        if len(same) < 2:
            return
        self.fanout.start(key, [(i.nodeid, functools.partial(i.check, deadline)) for i in same],
                          item.gate.concurrency)
