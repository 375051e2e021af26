"""Collection: plan file -> stage -> gate -> one item per check and target.

Node ids read like ``release-plan.yaml::post_release::service_validation::health[api]``. The
items carry what they check; running one is :meth:`CheckItem.runtest`, reporting a failure is
:meth:`CheckItem.repr_failure`, which prints the measured value against the expected one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from concurrent.futures import TimeoutError as FutureTimeout

import pytest

if TYPE_CHECKING:
    from concurrent.futures import Future

from .checks import CheckContext, CheckKind, CheckResult, NotBuilt
from .checks.limits import SHOWN_LINES, SUMMARY_CHARS
from .model import WORKFLOW_STEP, CheckSpec, Gate, Plan, Stage, Target
from .secrets import redact, redact_value
from .units import format_duration

__all__ = ["CheckFailed", "CheckItem", "PlanFile", "check_properties", "gate_checks", "planned_checks"]

DEADLINE = pytest.StashKey[float]()
BLOCKED = pytest.StashKey[str]()
#: The future of this item's check when its gate's checks were started together (fan-out).
EARLY: pytest.StashKey[Future[CheckResult]] = pytest.StashKey()
#: Added to the budget left before a check is stopped: the check's own socket and subprocess
#: timeouts end it first; pytest-timeout's signal (or, for a check started early, no longer
#: waiting for it) is the backstop for a check that hangs.
GRACE = 1.0


#: When this item's check started and ended (``time.time()``), wherever it ran.
RAN = pytest.StashKey[tuple[float, float]]()


class OutOfTime(Exception):
    """A check started early (fan-out) did not finish within its gate's budget."""


class CheckFailed(Exception):
    """A check's verdict was "failed"; carries the :class:`CheckResult`."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.summary)
        self.result = result


class PlanFile(pytest.File):
    """The release plan; its children are the stages that run."""

    plan: Plan
    kinds: Mapping[str, CheckKind]
    stage_names: tuple[str, ...] | None

    def collect(self) -> Iterator[StageNode]:
        for stage in self.plan.stages:
            if self.stage_names is None or stage.name in self.stage_names:
                yield StageNode.from_parent(self, name=stage.name, stage=stage)


class StageNode(pytest.Collector):
    """A stage of the strategy; its children are the validation gates that run in it."""

    def __init__(self, *, stage: Stage, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self.add_marker(stage.name)

    def collect(self) -> Iterator[GateNode]:
        plan_file = self.parent
        assert isinstance(plan_file, PlanFile)
        for gate in plan_file.plan.stage_gates(self.stage):
            yield GateNode.from_parent(self, name=gate.name, gate=gate)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), self.stage.mark.line - 1, f"stage {self.stage.name}"


class GateNode(pytest.Collector):
    """A validation gate in one stage; its children are its checks, one per target."""

    def __init__(self, *, gate: Gate, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.add_marker(gate.name)

    def collect(self) -> Iterator[CheckItem]:
        stage_node = self.parent
        assert isinstance(stage_node, StageNode)
        plan_file = stage_node.parent
        assert isinstance(plan_file, PlanFile)
        plan, kinds = plan_file.plan, plan_file.kinds
        for name, spec, kind, target in gate_checks(plan, self.gate, kinds):
            # The node id is given as a string so that pytest >= 9.2 parses it the same way
            # as the ids it reads back from reports and the --lf cache ("health[api]" is a name
            # with a bracketed part there, not a child named "health[api]").
            yield CheckItem.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}", plan=plan,
                                        stage=stage_node.stage, gate=self.gate, spec=spec, kind=kind,
                                        target=target)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), self.gate.mark.line - 1, f"gate {self.gate.name}"


class CheckItem(pytest.Item):
    """One check of one gate against one target, in one stage."""

    def __init__(self, *, plan: Plan, stage: Stage, gate: Gate, spec: CheckSpec, kind: CheckKind,
                 target: Target | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.stage = stage
        self.gate = gate
        self.spec = spec
        self.kind = kind
        self.target = target
        self.add_marker(spec.kind)
        self.user_properties.extend(check_properties(plan, stage, gate, spec, target))

    @property
    def gate_id(self) -> str:
        return f"{self.stage.name}::{self.gate.name}"

    def setup(self) -> None:
        reason = self.stash.get(BLOCKED, None)
        if reason:
            pytest.skip(reason)

    def check(self) -> CheckResult:
        """Run this item's check (in this thread, or on the fan-out pool started for its gate)."""
        if self.kind.run is None:
            raise NotBuilt(f"check kind {self.spec.kind!r} is not run by this version of pytest-release")
        ctx = CheckContext(kind=self.spec.kind, params=self.spec.params, target=self.target,
                           base_dir=self.plan.base_dir, gate=self.gate_id, budget=self.gate.timeout,
                           deadline=self.stash[DEADLINE], targets=self.plan.targets)
        started = time.time()
        try:
            return self.kind.run(ctx)
        finally:
            # The check's own time: a check started early (fan-out) ran before its item took the
            # result, and its record must show how long the check took, not the wait for it.
            self.stash[RAN] = (started, time.time())

    def runtest(self) -> None:
        early = self.stash.get(EARLY, None)
        try:
            if early is None:
                result = self.check()
            else:  # no pytest-timeout signal for these (it cannot stop another thread): a bounded wait
                try:
                    result = early.result(timeout=max(self.stash[DEADLINE] - time.monotonic(), 0.0) + GRACE)
                except FutureTimeout:
                    raise OutOfTime() from None
        except NotBuilt as exc:
            pytest.skip(f"not checked: {redact(str(exc), self.plan.secrets)}")
        secrets = self.plan.secrets
        result.summary = one_line(result.summary)
        measured = dict(result.measured)
        if len(result.details) > SHOWN_LINES and "details" not in measured:
            measured["details"] = result.details  # the terminal shows an excerpt; the record all of them
        ran = self.stash.get(RAN, None)
        if early is not None and ran is not None:  # the recorder times the record by these
            self.user_properties.extend([("check_start", repr(ran[0])), ("check_end", repr(ran[1]))])
        self.user_properties.extend([
            ("measured", json.dumps(redact_value(measured, secrets), sort_keys=True, default=str)),
            ("expected", json.dumps(redact_value(result.expected, secrets), sort_keys=True, default=str)),
            ("summary", redact(result.summary, secrets)),
        ])
        output = measured.get("output")
        if self.spec.kind == WORKFLOW_STEP and isinstance(output, list) and output:
            # what a deploy printed, in the reports (pytest-html shows it for a passed step too)
            self.add_report_section("call", "output", redact("\n".join(map(str, output)), secrets))
        if not result.passed:
            raise CheckFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        secrets = self.plan.secrets
        if isinstance(excinfo.value, CheckFailed):
            result = excinfo.value.result
            lines = [result.summary,
                     f"  measured: {_plain(result.measured)}",
                     f"  expected: {_plain(result.expected)}"]
            lines += [f"  {line}" for line in excerpt(result)]
            return redact("\n".join(lines), secrets)
        by_signal = excinfo.errisinstance(pytest.fail.Exception) and str(excinfo.value).startswith("Timeout")
        if by_signal or excinfo.errisinstance(OutOfTime):
            how = "stopped by pytest-timeout" if by_signal else "no longer waited for (its thread is left behind)"
            return (f"{self.name} did not finish within the {format_duration(self.gate.timeout)} budget of "
                    f"gate {self.gate_id}: {how}")
        return redact(str(super().repr_failure(excinfo, style=style)), secrets)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), self.spec.mark.line - 1, f"{self.gate_id}::{self.name}"


def one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters: a summary is read in a terminal line,
    a skipped stage's reason and a record's ``summary``; the details hold the rest."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(lines) > 1:
        first += f" (+{len(lines) - 1} more line(s))"
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


def excerpt(result: CheckResult) -> list[str]:
    """The detail lines the terminal shows: the check's own excerpt, else the first
    :data:`SHOWN_LINES` details and how many more the record holds; each line bounded."""
    if result.excerpt is not None:
        return [one_line(line, 2 * SUMMARY_CHARS) for line in result.excerpt]
    shown = [one_line(line, 2 * SUMMARY_CHARS) for line in result.details[:SHOWN_LINES]]
    more = len(result.details) - SHOWN_LINES
    if more > 0:
        shown.append(f"... and {more} more (first {SHOWN_LINES} of {len(result.details)} shown; "
                     "the record's measured.details has them all)")
    return shown


def gate_checks(plan: Plan, gate: Gate, kinds: Mapping[str, CheckKind]
                ) -> Iterator[tuple[str, CheckSpec, CheckKind, Target | None]]:
    """A gate's check items as collection makes them: (name, spec, kind, target)."""
    taken: dict[str, int] = {}
    for spec in gate.checks:
        kind = kinds[spec.kind]
        for target in plan.targets_for(gate, spec, kinds) if kind.judges else [None]:
            base = redact(spec.item_name(target), plan.secrets)
            taken[base] = taken.get(base, 0) + 1
            name = base if taken[base] == 1 else f"{spec.label}#{taken[base]}" + base[len(spec.label):]
            yield name, spec, kind, target


def check_properties(plan: Plan, stage: Stage, gate: Gate, spec: CheckSpec,
                     target: Target | None) -> list[tuple[str, str]]:
    """The user properties every report of a check item carries (what the evidence is built from)."""
    return [
        ("release_stage", stage.name),
        ("release_gate", gate.name),
        ("release_check", spec.kind),
        ("release_target", target.name if target else ""),
        ("release_required", str(gate.required).lower()),
        ("release_params", json.dumps(redact_value(dict(spec.params), plan.secrets), sort_keys=True)),
    ]


def planned_checks(plan: Plan, kinds: Mapping[str, CheckKind], stages: Sequence[str] | None
                   ) -> dict[str, list[tuple[str, str]]]:
    """Every check item the plan makes for the selected stages, by ``STAGE::GATE::NAME`` (its node
    id after the plan file), with its report properties: what the controller compares the
    verdicts it received with (under xdist it collects nothing itself)."""
    planned = {}
    for stage in plan.stages:
        if stages is not None and stage.name not in stages:
            continue
        for gate in plan.stage_gates(stage):
            for name, spec, _, target in gate_checks(plan, gate, kinds):
                planned[f"{stage.name}::{gate.name}::{name}"] = check_properties(plan, stage, gate, spec, target)
    return planned


def _plain(values: Mapping[str, Any]) -> str:
    """Figures inline; structured values (a histogram, a list of rows) stay in the record."""
    return ", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, list)) or "-"
