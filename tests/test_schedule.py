"""The run-time policy (pytest_release.schedule) without pytest runs: real plans loaded from YAML,
the items collection would make, verdicts fed in stage order; the schedule's answers checked
against the rules (a required gate that failed blocks every later stage; a warning never does;
a gate's budget starts with its first check; the workflow's timeout caps every deadline)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_release.checks import BUILTIN_KINDS, CheckKind, CheckResult
from pytest_release.items import gate_checks
from pytest_release.loader import load_plan
from pytest_release.model import CheckSpec, Gate, Plan, Stage
from pytest_release.result import Cause, Verdict
from pytest_release.runstate import RunState
from pytest_release.schedule import Schedule


@dataclass
class Slot:
    """A check item as the schedule sees it (what collection makes from the plan)."""

    nodeid: str
    stage: Stage
    gate: Gate
    spec: CheckSpec
    kind: CheckKind
    ran: list[tuple[float, str]] = field(default_factory=list)

    def check(self, deadline: float | None = None) -> CheckResult:
        self.ran.append((deadline or 0.0, threading.current_thread().name))
        return CheckResult(True, "ok", {}, {})


def _load(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "release-plan.yaml"
    path.write_text(text, "utf-8")
    return load_plan(path, BUILTIN_KINDS)


def _slots(plan: Plan) -> list[Slot]:
    slots = []
    for stage in plan.stages:
        for gate in plan.stage_gates(stage):
            for name, spec, kind, _ in gate_checks(plan, gate, BUILTIN_KINDS):
                slots.append(Slot(f"release-plan.yaml::{stage.name}::{gate.name}::{name}", stage, gate, spec, kind))
    return slots


def _plan_text(stages: list[str], gates: list[tuple[str, bool, int, list[str] | None]], timeout: float = 10,
               targets: str = "{}") -> str:
    lines = ["release: {name: shop, version: 1.0.0}", f"targets: {targets}", "strategy:",
             f"  stages: [{', '.join('{name: ' + s + '}' for s in stages)}]",
             f"  gates:\n    - {{name: validation_gate, timeout: {timeout}}}", "validation:", "  gates:"]
    for name, required, checks, only in gates:
        lines.append(f"    - name: {name}")
        lines.append(f"      required: {str(required).lower()}")
        if only is not None:
            lines.append(f"      stages: [{', '.join(only)}]")
        lines.append("      checks:")
        for n in range(checks):
            lines.append(f"        - command: {{argv: [echo, '{n}'], name: c{n}}}")
    return "\n".join(lines) + "\n"


def _schedule(plan: Plan, tmp_path: Path, **kwargs: object) -> Schedule:
    state = RunState(tmp_path, wait_for_others=bool(kwargs.pop("wait_for_others", False)))
    return Schedule(plan, state, **kwargs)  # type: ignore[arg-type]


def _random_plan(rng: random.Random) -> tuple[list[str], list[tuple[str, bool, int, list[str] | None]]]:
    stages = [f"s{i}" for i in range(rng.randint(1, 4))]
    gates = []
    for g in range(rng.randint(1, 3)):
        only = sorted(rng.sample(stages, rng.randint(1, len(stages)))) if rng.random() < 0.3 else None
        gates.append((f"g{g}", rng.random() < 0.7, rng.randint(1, 2), only))
    return stages, gates


@pytest.mark.parametrize("seed", range(60))
def test_stage_order_gates_and_verdicts(tmp_path: Path, seed: int) -> None:
    """Generated plans and verdicts, run in plan order: an item is blocked exactly when a check of a
    required gate failed in an earlier stage; the reason names the first such check; a failed
    check of a gate with required: false (a warning) blocks nothing."""
    rng = random.Random(seed)
    stages, gates = _random_plan(rng)
    plan = _load(tmp_path, _plan_text(stages, gates))
    slots = _slots(plan)
    schedule = _schedule(plan, tmp_path)
    schedule.collected(slots)
    first_failure: Slot | None = None
    for stage in plan.stages:
        failed_here: Slot | None = None
        for slot in [s for s in slots if s.stage is stage]:
            decision = schedule.decide(slot)
            if first_failure is None:
                assert decision.blocked is None, decision.blocked
                outcome = rng.choice([Verdict.PASSED, Verdict.FAILED])
                if outcome == Verdict.FAILED and not slot.gate.required:
                    outcome = Verdict.WARNING
            else:
                assert decision.blocked is not None
                assert decision.blocked.cause == Cause.EARLIER_FAILED and decision.blocked.blocks_stage
                assert decision.blocked.reason.startswith(
                    f"stage {stage.name} not run: required gate {first_failure.stage.name}::"
                    f"{first_failure.gate.name} failed ({first_failure.nodeid.rpartition('::')[2]}: ")
                outcome = Verdict.SKIPPED
            if outcome == Verdict.FAILED and failed_here is None:
                failed_here = slot
            schedule.finished(slot.nodeid, slot, outcome, f"{slot.nodeid} said {outcome}")
        first_failure = first_failure or failed_here


@pytest.mark.parametrize("seed", range(10))
def test_an_earlier_check_without_a_verdict_blocks_later_stages(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    stages, gates = _random_plan(rng)
    stages = [*stages, "last"]
    gates = [(name, required, checks, None) for name, required, checks, _ in gates]
    plan = _load(tmp_path, _plan_text(stages, gates))
    slots = _slots(plan)
    schedule = _schedule(plan, tmp_path)
    schedule.collected(slots)
    earlier = [s for s in slots if s.stage.name != "last"]
    just_before = [s for s in earlier if s.stage.index == len(stages) - 2]  # the stage before "last"
    missing = rng.sample(just_before, rng.randint(1, len(just_before)))
    for slot in earlier:
        assert schedule.decide(slot).blocked is None
        if slot not in missing:
            schedule.finished(slot.nodeid, slot, Verdict.PASSED, "ok")
    for slot in [s for s in slots if s.stage.name == "last"]:
        blocked = schedule.decide(slot).blocked
        assert blocked is not None and blocked.cause == Cause.EARLIER_UNFINISHED and blocked.blocks_stage
        first = next(s for s in earlier if s in missing)
        assert blocked.reason == (f"stage last not run: {len(missing)} check(s) of earlier stages never "
                                  f"finished (first: {first.nodeid})")


@pytest.mark.parametrize("timeout", [0.5, 3.0, 60.0])
def test_a_gate_budget_starts_with_its_first_check(tmp_path: Path, timeout: float) -> None:
    plan = _load(tmp_path, _plan_text(["s0", "s1"], [("g0", True, 2, None), ("g1", False, 1, None)],
                                      timeout=timeout))
    slots = _slots(plan)
    schedule = _schedule(plan, tmp_path)
    schedule.collected(slots)
    before = time.monotonic()
    deadlines = {s.nodeid: schedule.decide(s).deadline for s in slots if s.stage.name == "s0"}
    after = time.monotonic()
    by_gate: dict[str, set[float]] = {}
    for slot in slots:
        if slot.nodeid in deadlines:
            by_gate.setdefault(slot.gate.name, set()).add(deadlines[slot.nodeid])
            assert before + slot.gate.timeout <= deadlines[slot.nodeid] <= after + slot.gate.timeout
    # every check of a gate shares its gate's deadline (the clock started with its first check)
    assert all(len(d) == 1 for d in by_gate.values()), by_gate


@pytest.mark.parametrize("left", [0.25, 5.0])
def test_the_workflow_timeout_caps_deadlines_then_blocks(tmp_path: Path, left: float) -> None:
    plan = _load(tmp_path, _plan_text(["s0"], [("g0", True, 2, None)], timeout=30))
    slots = _slots(plan)
    now = [time.monotonic()]
    schedule = _schedule(plan, tmp_path, workflow=("deploy", left), clock=lambda: now[0])
    schedule.collected(slots)
    first = schedule.decide(slots[0])
    assert first.blocked is None and first.deadline <= now[0] + left
    now[0] += left
    late = schedule.decide(slots[1])
    assert late.blocked is not None and late.blocked.cause == Cause.OUT_OF_TIME and not late.blocked.blocks_stage
    assert "timeout of workflow deploy was used up" in late.blocked.reason


def test_a_rollback_run_runs_no_check(tmp_path: Path) -> None:
    plan = _load(tmp_path, _plan_text(["s0", "s1"], [("g0", True, 1, None)]))
    slots = _slots(plan)
    schedule = _schedule(plan, tmp_path, skip_all="not run: --release-rollback asks for a rollback")
    schedule.collected(slots)
    for slot in slots:
        blocked = schedule.decide(slot).blocked
        assert blocked is not None and blocked.cause == Cause.NOT_ASKED and not blocked.blocks_stage


SERVICES = "{a: {url: 'http://127.0.0.1:9/a'}, b: {url: 'http://127.0.0.1:9/b'}, c: {url: 'http://127.0.0.1:9/c'}}"


def _health_plan(concurrency: int) -> str:
    return (_plan_text(["s0"], [], targets=SERVICES)
            + f"    - name: probe\n      concurrency: {concurrency}\n      checks: [health]\n")


@pytest.mark.parametrize(("concurrency", "wait_for_others", "early"), [
    (16, False, True), (2, False, True), (1, False, False), (16, True, False)])
def test_fan_out_starts_a_gate_target_checks_together(tmp_path: Path, concurrency: int, wait_for_others: bool,
                                                      early: bool) -> None:
    """The first item of a gate with several targets starts all their checks with the gate's
    deadline (one process; never under xdist, never with concurrency 1); each item takes its own."""
    plan = _load(tmp_path, _health_plan(concurrency))
    slots = _slots(plan)
    assert len(slots) == 3
    schedule = _schedule(plan, tmp_path, wait_for_others=wait_for_others)
    schedule.collected(slots)
    decisions = [schedule.decide(s) for s in slots]
    if not early:
        assert all(d.early is None for d in decisions)
        assert not any(s.ran for s in slots)
        return
    assert all(d.early is not None for d in decisions)
    results = [d.early.result(timeout=10) for d in decisions if d.early is not None]
    assert all(r.passed for r in results)
    assert {s.ran[0][0] for s in slots} == {decisions[0].deadline}
    assert all(s.ran[0][1] == "pytest-release-fanout" for s in slots)
