"""Collection: plan file -> stage -> gate -> one item per check and target.

Node ids read like ``release-plan.yaml::post_release::service_validation::health[api]``. The
items carry what they check; running one is :meth:`CheckItem.runtest`, reporting a failure is
:meth:`CheckItem.repr_failure`, which prints the measured value against the expected one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from concurrent.futures import Future

from .checks import CheckContext, CheckKind, CheckResult, NotBuilt
from .checks.limits import SHOWN_LINES, SUMMARY_CHARS
from .model import WORKFLOW_STEP, CheckSpec, Gate, Plan, Stage, Target
from .result import Blocked, ItemResult, Verdict, json_safe
from .secrets import redact, redact_value
from .units import format_duration

__all__ = ["CheckFailed", "CheckItem", "PlanFile", "check_marker", "check_properties", "gate_checks",
           "gate_marker", "item_result", "planned_checks", "stage_marker"]

#: Markers made from plan names carry a prefix, so that they never collide with a project's own
#: markers: ``-m "release_stage_post_release and release_check_health"``.
MARKER_PREFIX = "release_"


def stage_marker(name: str) -> str:
    """The marker of the checks of release stage ``name``: ``release_stage_<name>``."""
    return f"{MARKER_PREFIX}stage_{name}"


def gate_marker(name: str) -> str:
    """The marker of the checks of gate ``name`` (validation, strategy or workflow gate): ``release_gate_<name>``."""
    return f"{MARKER_PREFIX}gate_{name}"


def check_marker(kind: str) -> str:
    """The marker of the checks of check kind ``kind``: ``release_check_<kind>``."""
    return f"{MARKER_PREFIX}check_{kind}"


DEADLINE = pytest.StashKey[float]()
#: Why the schedule does not run this item (the item skips in its setup).
BLOCKED = pytest.StashKey[Blocked]()
#: The item's result so far: what its reports carry (see :mod:`pytest_release.result`).
RESULT = pytest.StashKey[ItemResult]()
#: What the call report of this item carries (its result as a dict, its user properties), which
#: a teardown that passed carries too (the same objects: nothing changed).
CARRIED = pytest.StashKey[tuple[dict[str, Any], list[tuple[str, str]]]]()
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


class CheckFailed(AssertionError):
    """A check's verdict was "failed"; carries the :class:`CheckResult`. An ``AssertionError``, so
    every reporter counts it as a test failure (allure-pytest: "failed", not "broken")."""

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
        self.add_marker(stage_marker(stage.name))

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
        self.add_marker(gate_marker(gate.name))

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
        self.add_marker(check_marker(spec.kind))
        self.stash[RESULT] = item_result(plan, stage, gate, spec, target)

    @property
    def gate_id(self) -> str:
        return f"{self.stage.name}::{self.gate.name}"

    def setup(self) -> None:
        blocked = self.stash.get(BLOCKED, None)
        if blocked is not None:
            self.stash[RESULT].blocked = blocked
            pytest.skip(blocked.reason)

    def check(self, deadline: float | None = None) -> CheckResult:
        """Run this item's check (in this thread, or on the fan-out pool started for its gate,
        which gives the gate's ``deadline``)."""
        if self.kind.run is None:
            raise NotBuilt(f"check kind {self.spec.kind!r} is not run by this version of pytest-release")
        ctx = CheckContext(kind=self.spec.kind, params=self.spec.params, target=self.target,
                           base_dir=self.plan.base_dir, gate=self.gate_id, budget=self.gate.timeout,
                           deadline=self.stash[DEADLINE] if deadline is None else deadline, targets=self.plan.targets)
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
                finally:
                    del self.stash[EARLY]  # items live to the end of the session; their futures need not
        except NotBuilt as exc:
            reason = f"not checked: {redact(str(exc), self.plan.secrets)}"
            self.stash[RESULT].not_checked = reason
            pytest.skip(reason)
        secrets = self.plan.secrets
        result.summary = one_line(result.summary)
        measured = dict(result.measured)
        if len(result.details) > SHOWN_LINES and "details" not in measured:
            measured["details"] = result.details  # the terminal shows an excerpt; the record all of them
        own = self.stash[RESULT]
        ran = self.stash.get(RAN, None)
        if early is not None and ran is not None:  # the recorder times the record by these
            own.ran = ran
        # JSON-safe copies (a measured value may be any object a custom check returns)
        own.measured = json_safe(redact_value(measured, secrets))
        own.expected = json_safe(redact_value(result.expected, secrets))
        own.summary = redact(result.summary, secrets)
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


def item_result(plan: Plan, stage: Stage, gate: Gate, spec: CheckSpec, target: Target | None,
                verdict: Verdict = Verdict.PASSED) -> ItemResult:
    """A check item's result before it runs (what every report of it carries). Its ``params`` is
    one dict per check of the plan, shared by the items of its targets (read-only)."""
    return ItemResult(stage=stage.name, gate=gate.name, check=spec.kind, target=target.name if target else None,
                      required=gate.required, params=_params(plan, spec), verdict=verdict)


_PARAMS: dict[int, tuple[CheckSpec, dict[str, Any]]] = {}


def _params(plan: Plan, spec: CheckSpec) -> dict[str, Any]:
    """The parameters of ``spec`` as its reports carry them (secrets masked), made once per check."""
    cached = _PARAMS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    params: dict[str, Any] = redact_value(dict(spec.params), plan.secrets)  # type: ignore[assignment]
    if len(_PARAMS) >= 4096:  # plans loaded one after another in one process (tests)
        _PARAMS.clear()
    _PARAMS[id(spec)] = (spec, params)
    return params


PASSED_PROPERTIES = (("release_verdict", Verdict.PASSED.value),)


def check_properties(result: ItemResult) -> list[tuple[str, str]]:
    """The flat user properties the reports of a check item carry (all but the report of a setup
    that passed: the check has not run then), for JUnit XML and other readers (the plugin itself
    reads the structured result, :mod:`pytest_release.result`): ``release_verdict``, and for a
    check that did not pass also ``release``, one JSON object with the check's stage, gate, check
    kind, target, whether its gate is required, its parameters, its summary, what it measured and
    what that was held against. A check that passed has its record in the evidence
    (``records.jsonl``): pytest's JUnit XML keeps an element per property of every test case to the
    end of the run and writes the whole file at once, and at 10,000 checks that JSON, repeated
    for every passed check, cost more memory than anything else."""
    if result.verdict == Verdict.PASSED:
        return list(PASSED_PROPERTIES)
    summary = result.summary or (result.blocked.reason if result.blocked else result.not_checked)  # a skip's why
    release = {"stage": result.stage, "gate": result.gate, "check": result.check, "target": result.target,
               "required": result.required, "params": result.params, "summary": summary,
               "measured": result.measured, "expected": result.expected}
    return [("release_verdict", result.verdict.value),
            ("release", json.dumps(release, sort_keys=True, separators=(",", ":"), default=str))]


def planned_checks(plan: Plan, kinds: Mapping[str, CheckKind], stages: Sequence[str] | None
                   ) -> dict[str, tuple[Stage, Gate, CheckSpec, Target | None]]:
    """Every check item the plan makes for the selected stages, by ``STAGE::GATE::NAME`` (its node
    id after the plan file), with what :func:`item_result` makes its result before it runs from:
    what the controller compares the verdicts it received with (under xdist it collects nothing
    itself)."""
    planned = {}
    for stage in plan.stages:
        if stages is not None and stage.name not in stages:
            continue
        for gate in plan.stage_gates(stage):
            for name, spec, _, target in gate_checks(plan, gate, kinds):
                planned[f"{stage.name}::{gate.name}::{name}"] = (stage, gate, spec, target)
    return planned


def _plain(values: Mapping[str, Any]) -> str:
    """Figures inline; structured values (a histogram, a list of rows) stay in the record."""
    return ", ".join(f"{k}={v}" for k, v in values.items() if not isinstance(v, list)) or "-"
