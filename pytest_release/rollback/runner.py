"""Running a rollback: which procedures a trigger runs, their steps in order within their
budgets, the journal that makes it resumable, and the final verify that proves it worked.

Plain Python: the caller gives a ``report`` callback (the pytest glue turns each step's outcome
into a test report) and a ``verify`` callback (judges validation gates again).
"""

from __future__ import annotations

import functools

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..checks import CheckContext, CheckKind, CheckResult, NotBuilt
from ..checks.command import on_program_start
from ..deadline import call_with_deadline
from ..metrics import metric_kind
from ..monitoring import MetricRun, Progress
from ..model import METRIC, MONITOR, READINESS, CheckSpec, Gate, Plan, Procedure, Step, Trigger
from ..units import format_duration
from .actions import ACTIONS, StepContext, StepResult
from .expectations import Expectation, after_rollback
from .journal import Journal, Unfinished, end_process_group, process_identity

__all__ = ["FINAL_VERIFY", "RollbackResult", "StepOutcome", "judge_gates", "monitoring_verify_gate", "readiness",
           "readiness_kind", "run_rollback", "select_procedures"]

FINAL_VERIFY = "verify"
#: How many rounds of a monitoring metric the final verify samples after a monitoring failure.
VERIFY_ROUNDS = 3
#: How long past its deadline a check or action may run before the rollback stops waiting for it.
GRACE = 1.0


#: How a rollback step ended, in the words of a pytest report's outcome.
StepVerdict = Literal["passed", "failed", "skipped"]


@dataclass
class StepOutcome:
    """One step as it is reported: passed, failed, or skipped (done before, or not reached)."""

    key: str  # "procedure::step", or "verify" for the final verify
    procedure: str
    step: str
    action: str | None
    verdict: StepVerdict
    result: StepResult
    start: float
    end: float


@dataclass
class RollbackResult:
    trigger: str
    reason: str
    procedures: list[str]
    outcome: str  # rolled_back or rollback_failed
    steps: list[StepOutcome] = field(default_factory=list)
    resumed_from: str | None = None
    #: Every run that worked on this rollback before this one (it started it, or resumed it and
    #: was killed too), oldest first: their unsealed evidence belongs to this run's manifest.
    resumed_runs: list[str] = field(default_factory=list)

    @property
    def failed_step(self) -> StepOutcome | None:
        return next((s for s in self.steps if s.verdict == "failed"), None)


def select_procedures(plan: Plan, trigger: Trigger, failed_gates: Sequence[str]) -> tuple[list[Procedure], str]:
    """The procedures ``trigger`` runs, in plan order, and why those: the trigger's own list;
    else those for the failed gates (``Procedure.gates``: service_rollback is for
    service_validation); else (and for a manual trigger) all of them."""
    by_name = {p.name: p for p in plan.procedures}
    if trigger.procedures is not None:
        return [by_name[n] for n in trigger.procedures], f"the {trigger.name} trigger lists them"
    if trigger.name != "manual_trigger":
        failed = set(failed_gates)
        matched = [p for p in plan.procedures if failed.intersection(p.gates)]
        if matched:
            return matched, f"they match the failed gate(s) {', '.join(failed_gates)}"
        return list(plan.procedures), f"no procedure matches the failed gate(s) {', '.join(failed_gates)}: all run"
    return list(plan.procedures), "a manual rollback runs every procedure"


def judge_gates(plan: Plan, kinds: dict[str, CheckKind], gates: Sequence[Gate]) -> StepResult:
    """Run the checks of ``gates`` again, in this process, each gate within its budget, with what
    must hold after a rollback (``after_rollback``, see ``expectations``): a check may be skipped
    or judged with the previous release's parameters. A failure in a gate with ``required: false``
    warns. A gate's readiness checks run first; when one fails, the others are not run. A
    monitoring metric (after a monitoring failure) is sampled for a few rounds."""
    lines: list[str] = []
    entries: list[dict[str, Any]] = []
    counts = dict.fromkeys(("passed", "failed", "warning", "skipped", "not checked"), 0)
    judged_plan = replace(plan, gates=[_as_judged(g, plan.version) for g in plan.gates])

    def note(gate: Gate, name: str, verdict: str, summary: str, expectation: Expectation) -> None:
        counts[verdict] += 1
        how = "" if expectation.how == "judge" and expectation.why == "as written" else f" [{expectation.why}]"
        lines.append(f"{ {'failed': 'FAILED', 'warning': 'WARNING'}.get(verdict, verdict)}: {name}: {summary}{how}")
        entries.append({"check": name, "gate": gate.name, "verdict": verdict, "summary": summary,
                        **expectation.record()})

    for gate in gates:
        deadline = time.monotonic() + gate.timeout
        not_ready: str | None = None
        for spec in gate.checks:
            if spec.kind == MONITOR:
                name = f"{gate.name}::{spec.item_name(None)}"
                result = _sample_metric(plan, kinds, spec.params["metric"],
                                        min(deadline, float(spec.params.get("until", deadline))))
                verdict = "passed" if result.passed else "failed" if gate.required else "warning"
                note(gate, name, verdict, result.summary,
                     Expectation("judge", spec.params, "a short sample of the monitoring metric that failed"))
                lines.extend(f"  {line}" for line in result.details[:5])
                continue
            kind = kinds[spec.kind]
            targets = plan.targets_for(gate, spec, kinds) if kind.judges else [None]
            expectation = after_rollback(gate, spec, plan.version)
            if expectation.how == "skip":
                for target in targets:
                    note(gate, f"{gate.name}::{spec.item_name(target)}", "skipped", "not judged again", expectation)
                continue
            if kind.run is None:
                lines.append(f"not checked: {gate.name}::{spec.label} ({spec.kind} is not run by this version)")
                counts["not checked"] += 1
                continue
            run = metric_kind(judged_plan, kinds).run if spec.kind == METRIC else kind.run
            assert run is not None
            for target in targets:
                name = f"{gate.name}::{spec.item_name(target)}"
                if not_ready is not None and not spec.ready:
                    result = CheckResult(False, f"not run: the service never became ready ({not_ready})")
                else:
                    ctx = CheckContext(kind=spec.kind, params=expectation.params, target=target,
                                       base_dir=plan.base_dir, gate=f"rollback::{gate.name}", budget=gate.timeout,
                                       deadline=deadline, targets=plan.targets)
                    finished, checked, error = call_with_deadline(functools.partial(run, ctx), ctx.remaining() + GRACE)
                    if isinstance(error, NotBuilt):
                        lines.append(f"not checked: {name}: {error}")
                        counts["not checked"] += 1
                        continue
                    if not finished or error is not None or checked is None:
                        why = (f"did not finish within the {format_duration(gate.timeout)} budget of gate {gate.name}"
                               if not finished else f"{type(error).__name__}: {error}")
                        result = CheckResult(False, why)
                    else:
                        result = checked
                if spec.ready and not result.passed and not_ready is None:
                    not_ready = f"{spec.item_name(target)} failed: {result.summary}"
                verdict = "passed" if result.passed else "failed" if gate.required else "warning"
                note(gate, name, verdict, result.summary, expectation)
    return _verify_result(gates, counts, lines, entries)


def _verify_result(gates: Sequence[Gate], counts: dict[str, int], lines: list[str],
                   entries: list[dict[str, Any]]) -> StepResult:
    names = ", ".join(g.name for g in gates) or "no gate"
    total = counts["passed"] + counts["failed"] + counts["warning"]
    measured: dict[str, Any] = {"checks": total, "failed": counts["failed"], "warnings": counts["warning"],
                                "skipped": counts["skipped"], "after_rollback": entries}
    notes = []
    if counts["warning"]:
        notes.append(f"{counts['warning']} warning(s) (required: false)")
    if counts["skipped"]:
        notes.append(f"{counts['skipped']} not judged again (after_rollback: skip)")
    other = sum(1 for e in entries if e["after_rollback"] in ("override", "unpinned"))
    if other:
        notes.append(f"{other} judged with the previous release's expectations")
    tail = "".join(f"; {n}" for n in notes)
    if total == 0:
        if counts["skipped"] and not counts["not checked"]:
            return StepResult(True, f"nothing to judge again: every check of {names} says after_rollback: skip",
                              lines, measured)
        return StepResult(False, f"nothing to verify: no check of {names} could run", lines, measured)
    if counts["failed"]:
        return StepResult(False, f"{counts['failed']} of {total} check(s) of {names} still fail{tail}", lines,
                          measured)
    return StepResult(True, f"{counts['passed']} check(s) of {names} pass again{tail}", lines, measured)


def _as_judged(gate: Gate, version: str) -> Gate:
    """``gate`` with the parameters its checks are judged with after a rollback (skipped checks
    left out): what a validation metric samples during the verify."""
    checks = []
    for spec in gate.checks:
        expectation = after_rollback(gate, spec, version)
        if expectation.how != "skip":
            checks.append(replace(spec, params=expectation.params))
    return replace(gate, checks=tuple(checks))


def monitoring_verify_gate(plan: Plan, metrics: Sequence[str], until: float) -> Gate | None:
    """The monitoring metrics to sample again in the final verify (those that failed), as a gate."""
    known = [plan.monitors[m] for m in metrics if m in plan.monitors]
    if not known:
        return None
    required, budget = plan.strategy_gates.get("monitoring_gate", (True, 0.0))
    longest = max((VERIFY_ROUNDS - 1) * m.interval + min(m.interval, budget or m.interval) for m in known)
    tasks = max((t.timeout for t in plan.tasks), default=0.0)
    checks = tuple(CheckSpec(MONITOR, {"metric": m.name, "until": until}, "metric", m.mark, subject=m.name)
                   for m in known)
    return Gate("monitoring_gate", checks, len(known) * (longest + tasks) + 1.0, required, None, None, known[0].mark)


def _sample_metric(plan: Plan, kinds: dict[str, CheckKind], name: str, deadline: float) -> CheckResult:
    """A short sample of monitoring metric ``name``: ``VERIFY_ROUNDS`` rounds of its source (and
    of the tasks that count for it) at its interval, judged as its window is (threshold, alerts),
    ending by ``deadline``."""
    metric = plan.monitors[name]
    first = next(iter(plan.monitors))
    tasks = [t for t in plan.tasks if t.metric == name or (t.metric is None and name == first)]
    pool = ThreadPoolExecutor(max_workers=4 + 2 * len(tasks), thread_name_prefix="pytest-release-verify")
    sampler = MetricRun(plan, kinds, "rollback::monitoring_gate", metric, tasks, threading.Event(),
                        Progress([name]), pool)
    span = min((VERIFY_ROUNDS - 1) * metric.interval + 0.001,
               deadline - time.monotonic() - sampler.sample_budget)
    if span <= 0:
        pool.shutdown(wait=False, cancel_futures=True)
        return CheckResult(False, f"{name}: not sampled: the verify's budget was used up")
    sampler.window = span
    limit = span + max(sampler.sample_budget, *(t.timeout for t in tasks), 0) + GRACE + 1
    finished, result, error = call_with_deadline(sampler.run, limit)
    pool.shutdown(wait=False, cancel_futures=True)
    if not finished or error is not None or result is None:
        return CheckResult(False, f"{name}: the sample did not finish" if not finished
                           else f"{name}: {type(error).__name__}: {error}")
    result.summary = f"sampled again after the rollback: {result.summary}"
    return result


def readiness(plan: Plan, procedure: Procedure, *, take_backups: bool,
              call_hook: Callable[[StepContext], StepResult | None] | None, deadline: float) -> StepResult:
    """Could ``procedure`` run now? Every step resolves to an action whose preconditions hold;
    with ``take_backups`` (a stage before the release is deployed) backups are taken now and
    verified, and the restores then check the backups they would restore."""
    lines = []
    problems = []
    ordered = sorted(procedure.steps, key=lambda s: not (s.action and ACTIONS[s.action].backup))
    for step in ordered:
        if step.action is None:
            problems.append(f"{step.name}: no action: define rollback.procedures[{procedure.name}].actions.{step.name}")
            continue
        action = ACTIONS[step.action]
        if action.backup and not take_backups:
            lines.append(f"{step.name} ({step.action}): backups are taken before the release is deployed")
            continue
        ctx = StepContext(procedure.name, step.name, step.params, plan.base_dir, deadline, "readiness",
                          call_hook=call_hook)
        try:
            result = action.ready(ctx)
        except (OSError, ValueError) as exc:
            result = StepResult(False, str(exc))
        (lines if result.passed else problems).append(f"{step.name} ({step.action}): {result.summary}")
    if problems:
        return StepResult(False, f"{procedure.name} is not ready: {problems[0]}", problems + lines,
                          {"problems": len(problems)})
    return StepResult(True, f"{procedure.name} is ready ({len(procedure.steps)} step(s))", lines)


def readiness_kind(plan: Plan, call_hook: Callable[[StepContext], StepResult | None] | None) -> CheckKind:
    """The rollback_gate's check kind: a procedure's readiness, as a check of the plan."""
    by_name = {p.name: p for p in plan.procedures}

    def run(ctx: CheckContext) -> CheckResult:
        ready = readiness(plan, by_name[ctx.params["procedure"]], take_backups=ctx.params["take_backups"],
                          call_hook=call_hook, deadline=ctx.deadline)
        return CheckResult(ready.passed, ready.summary, {"ready": ready.passed, **ready.measured},
                           {"ready": True}, ready.details)

    return CheckKind(READINESS, frozenset(), {"type": "object"}, run,
                     "a rollback procedure could run now (steps resolve, backups taken and verified)")


def run_rollback(plan: Plan, trigger: Trigger, reason: str, procedures: Sequence[Procedure],
                 verify_gates: Sequence[Gate], *, journal: Journal, run_id: str,
                 judge: Callable[[Sequence[Gate]], StepResult],
                 call_hook: Callable[[StepContext], StepResult | None] | None,
                 report: Callable[[StepOutcome], None], resume: Unfinished | None = None,
                 verify_metrics: Sequence[str] = ()) -> RollbackResult:
    """Run ``procedures`` (or resume ``resume``) and the final verify; report every step. The
    final verify judges ``verify_gates`` again (or the gates the trigger's ``verify`` names) and
    samples the monitoring metrics ``verify_metrics`` (those that failed) again."""
    gates_by_name = {g.name: g for g in plan.gates}
    by_name = {p.name: p for p in plan.procedures}
    if resume is None:
        if trigger.verify is not None:
            verify_gates = [gates_by_name[n] for n in trigger.verify]
        keys = [s.id for p in procedures for s in p.steps] + [FINAL_VERIFY]
        journal.append("rollback_start", run_id=run_id, trigger=trigger.name, reason=reason,
                       procedures=[p.name for p in procedures], verify_gates=[g.name for g in verify_gates],
                       verify_metrics=list(verify_metrics), steps=keys)
        done: set[str] = set()
    else:
        procedures = [by_name[n] for n in resume.start["procedures"]]
        verify_gates = [gates_by_name[n] for n in resume.start.get("verify_gates", []) if n in gates_by_name]
        verify_metrics = resume.start.get("verify_metrics", [])
        reason = resume.start.get("reason", reason)
        done = resume.completed
        journal.append("rollback_resume", run_id=run_id, completed=sorted(done))
    result = RollbackResult(trigger.name, reason, [p.name for p in procedures], "rolled_back",
                            resumed_from=resume.run_id if resume else None,
                            resumed_runs=list(resume.runs or [resume.run_id]) if resume else [])
    trigger_deadline = time.monotonic() + trigger.timeout

    def verify_for(procedure: str) -> Callable[[list[str]], StepResult]:
        def verify(names: list[str]) -> StepResult:
            if names:
                return judge([gates_by_name[n] for n in names])
            own = [g for g in plan.gates if g.name in by_name[procedure].gates]
            return judge(own or list(verify_gates))
        return verify

    for procedure in procedures:
        deadline = min(trigger_deadline, time.monotonic() + procedure.timeout)
        stopped: str | None = None
        for step in procedure.steps:
            outcome = _run_step(step, done, stopped, deadline, plan.base_dir, verify_for(procedure.name),
                                call_hook, journal, resume, run_id)
            result.steps.append(outcome)
            report(outcome)
            if outcome.verdict == "failed":
                stopped = f"{step.name} failed"
                result.outcome = "rollback_failed"
    if FINAL_VERIFY in done:
        now = time.time()
        final = StepOutcome(FINAL_VERIFY, "rollback", FINAL_VERIFY, "verify", "skipped",
                            StepResult(True, f"completed by run {result.resumed_from} before it was interrupted"),
                            now, now)
    else:
        metrics = monitoring_verify_gate(plan, verify_metrics, trigger_deadline)
        final = _final_verify([*verify_gates, *([metrics] if metrics else [])], judge, journal, trigger_deadline)
    result.steps.append(final)
    report(final)
    if final.verdict == "failed":
        result.outcome = "rollback_failed"
    journal.append("rollback_end", outcome=result.outcome, run_id=run_id)
    return result


def _run_step(step: Step, done: set[str], stopped: str | None, deadline: float, base_dir: Path,
              verify: Callable[[list[str]], StepResult], call_hook: Any, journal: Journal,
              resume: Unfinished | None, run_id: str = "") -> StepOutcome:
    now = time.time()
    if step.id in done:
        return StepOutcome(step.id, step.procedure, step.name, step.action, "skipped",
                           StepResult(True, f"completed by run {resume.run_id if resume else '?'} before it "
                                            "was interrupted; not run again"), now, now)
    if stopped:
        return StepOutcome(step.id, step.procedure, step.name, step.action, "skipped",
                           StepResult(False, f"not run: {stopped}, so procedure {step.procedure} stopped"), now, now)
    journal.append("step_start", step=step.id, action=step.action)
    started = time.time()
    # A killed run may have left this step's program running: end it before running it again.
    ended = [end_process_group(p) for p in (resume.left_running(step.id) if resume else [])]
    still = [line for gone, line in ended if not gone]

    def started_program(pid: int, shown: str) -> None:
        journal.append("step_process", step=step.id, run_id=run_id, program=shown, **process_identity(pid))

    if still:
        result = StepResult(False, f"not run again: {still[0]}; a second copy must not run beside it",
                            [f"before running it again: {line}" for _, line in ended])
    elif step.action is None:
        result = StepResult(False, f"step {step.name!r} has no action: define "
                                   f"rollback.procedures[{step.procedure}].actions.{step.name}")
    elif deadline - time.monotonic() <= 0:
        result = StepResult(False, f"not run: the budget of procedure {step.procedure} "
                                   "(or of its trigger) was used up")
    else:
        ctx = StepContext(step.procedure, step.name, step.params, base_dir, deadline, "rollback",
                          verify=verify, call_hook=call_hook)
        action = ACTIONS[step.action]

        def run() -> StepResult:
            with on_program_start(started_program):  # in the thread that runs the action
                return action.run(ctx)

        finished, returned, error = call_with_deadline(run, ctx.remaining() + GRACE)
        if not finished:
            result = StepResult(False, f"did not finish within the budget of procedure {step.procedure} "
                                       "(or of its trigger)")
        elif error is not None or returned is None:  # an action's bug must not stop the rollback's record
            result = StepResult(False, f"{type(error).__name__}: {error}")
        else:
            result = returned
    if ended and not still:
        result.details[:0] = [f"before running it again: {line}" for _, line in ended]
    verdict: StepVerdict = "passed" if result.passed else "failed"
    stop = time.time()
    journal.append("step_end", step=step.id, verdict=verdict, summary=result.summary,
                   duration_s=round(stop - started, 3))
    return StepOutcome(step.id, step.procedure, step.name, step.action, verdict, result, started, stop)


def _final_verify(gates: Sequence[Gate], judge: Callable[[Sequence[Gate]], StepResult],
                  journal: Journal, deadline: float) -> StepOutcome:
    started = time.time()
    journal.append("step_start", step=FINAL_VERIFY, action="verify")
    if not gates:
        result = StepResult(True, "no validation gate failed before the rollback: nothing more to verify")
    elif deadline - time.monotonic() <= 0:
        result = StepResult(False, "not run: the trigger's budget was used up")
    else:
        result = judge(gates)
    verdict: StepVerdict = "passed" if result.passed else "failed"
    ended = time.time()
    journal.append("step_end", step=FINAL_VERIFY, verdict=verdict, summary=result.summary,
                   duration_s=round(ended - started, 3))
    return StepOutcome(FINAL_VERIFY, "rollback", FINAL_VERIFY, "verify", verdict, result, started, ended)

