"""Workflows: ``--release-workflow NAME`` runs one of the plan's ``automation.workflows``.

A workflow is a list of steps; each step is one of:

* a step with an action (in the workflow's ``actions``, or inline: ``deploy: {command: ...}``):
  it runs as a stage of its own, between the stages before and after it, as one item
  ``STEP::WORKFLOW::ACTION`` (a failed deploy stops the stages after it; once the release may be
  half deployed, it fires ``validation_failure``, so the rollback runs);
* ``validate``: the stages before the deploy (those not ``deployed``);
* ``verify``: the stages after it (``deployed``), monitoring windows included; in a workflow that
  reverts, the rollback's final verify;
* the name of a stage: that stage;
* ``collect``, ``analyze``, ``alert``: the monitoring windows (only the monitoring_gate) of the
  stages that have monitoring on: samples, verdicts, alerts (which fire ``monitoring_failure``);
* ``backup``, ``revert``: the rollback, as ``--release-rollback`` runs it (each procedure's steps,
  its backups of the state being replaced included, then the final verify).

The workflow's ``timeout`` bounds the whole run: a check that would start after it is skipped.
The workflow and what each of its steps did are recorded in ``automation/workflows``; an action
step's record keeps what it printed (``measured.output``), also when it succeeds, and the HTML
report shows it in the step's "output" section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .checks import CheckContext, CheckKind, CheckResult
from .deadline import call_with_deadline
from .model import WORKFLOW_STEP, CheckSpec, Gate, Plan, Stage, Step, Workflow
from .problems import Problem
from .rollback.actions import ACTIONS, StepContext, StepResult
from .units import format_duration

__all__ = ["WorkflowRun", "select_workflow", "workflow_step_kind"]

MONITORING_STEPS = ("collect", "analyze", "alert")
#: How much of an action step's output its record keeps: the last lines, each cut to a length.
OUTPUT_LINES = 200
OUTPUT_CHARS = 500
ROLLBACK_STEPS = ("backup", "revert")


@dataclass
class Phase:
    """What one workflow step does in this run."""

    step: Step
    #: The stages (by name) the step runs; an action step runs a stage of its own.
    stages: list[str]
    does: str


@dataclass
class WorkflowRun:
    workflow: Workflow
    phases: list[Phase]
    #: True when the workflow reverts: the run is a rollback (as --release-rollback).
    rollback: bool

    def record(self, stage_verdicts: Mapping[str, str], rollback_outcome: str | None) -> dict[str, Any]:
        """The workflow's record: each step, what it did and its verdict."""
        steps = []
        for phase in self.phases:
            if phase.stages:
                verdicts = [stage_verdicts.get(s, "not_run") for s in phase.stages]
                verdict = ("failed" if "failed" in verdicts else "passed" if "passed" in verdicts
                           else verdicts[0] if verdicts else "not_run")
            else:
                verdict = rollback_outcome or "not_run"
            steps.append({"step": phase.step.name, "does": phase.does, "stages": phase.stages,
                          "verdict": verdict})
        return {"workflow": self.workflow.name, "timeout_s": self.workflow.timeout, "rollback": self.rollback,
                "steps": steps}


def _problem(plan: Plan, step: Step | Workflow, message: str) -> Problem:
    return Problem(plan.display, step.mark.line, step.mark.col, f"automation.workflows[{step.name}]"
                   if isinstance(step, Workflow) else f"automation.workflows[{step.procedure}].steps[{step.index}]",
                   message)


def select_workflow(plan: Plan, name: str) -> tuple[Plan, WorkflowRun]:
    """The plan as workflow ``name`` runs it (its stages in the workflow's order, action steps as
    stages of their own), and what each step does; raises ValueError with a Problem's text."""
    if name not in plan.workflows:
        known = ", ".join(plan.workflows) or "none"
        raise ValueError(f"--release-workflow {name}: {plan.display} has no such workflow; workflows: {known}")
    workflow = plan.workflows[name]
    before = [s for s in plan.stages if not s.deployed]
    after = [s for s in plan.stages if s.deployed]
    rollback = any(s.name in ROLLBACK_STEPS and s.action is None for s in workflow.steps)
    if rollback:
        actions = [s.name for s in workflow.steps if s.action is not None or s.name not in (*ROLLBACK_STEPS, "verify")]
        if actions:
            raise ValueError(str(_problem(plan, workflow, f"a workflow that reverts runs the rollback: its steps are "
                                                          f"backup, revert and verify, not {', '.join(actions)}")))
        phases = [Phase(s, [], "the rollback's final verify" if s.name == "verify"
                        else f"the rollback procedures' {s.name} steps") for s in workflow.steps]
        return plan, WorkflowRun(workflow, phases, True)
    by_name = {s.name: s for s in plan.stages}
    phases = []
    stages: list[Stage] = []
    workflow_gates: dict[str, Gate] = {}
    for step in workflow.steps:
        if step.action is not None:
            if step.name in by_name:
                raise ValueError(str(_problem(plan, step, f"step {step.name!r} has an action and is also the "
                                                          "name of a stage: rename one")))
            stage = Stage(step.name, 0, False, False, False, step.mark, deployed=True)
            spec = CheckSpec(WORKFLOW_STEP, {"workflow": name, "step": step.name}, step.action, step.mark)
            workflow_gates[step.name] = Gate(name, (spec,), workflow.timeout, True, None, None, step.mark,
                                             concurrency=1)
            stages.append(stage)
            phases.append(Phase(step, [step.name], f"action {step.action}"))
        elif step.name in by_name:
            stages.append(by_name[step.name])
            phases.append(Phase(step, [step.name], f"stage {step.name}"))
        elif step.name == "validate":
            stages += before
            phases.append(Phase(step, [s.name for s in before], "the stages before the deploy"))
        elif step.name == "verify":
            stages += after
            phases.append(Phase(step, [s.name for s in after], "the stages after the deploy"))
        elif step.name in MONITORING_STEPS:
            watched = [replace(s, validation=False, rollback=False) for s in plan.stages if s.monitoring]
            if not watched or "monitoring_gate" not in plan.strategy_gates:
                raise ValueError(str(_problem(plan, step, f"step {step.name!r} watches the monitoring windows, "
                                                          "and no stage has one (monitoring: true and a "
                                                          "monitoring_gate in strategy.gates)")))
            stages += [s for s in watched if s.name not in {x.name for x in stages}]
            phases.append(Phase(step, [s.name for s in watched], f"monitoring windows ({step.name})"))
        else:
            raise ValueError(str(_problem(plan, step, f"step {step.name!r} does nothing: it has no action and is "
                                                      "not validate, verify, a stage, collect/analyze/alert or "
                                                      f"backup/revert; give it one in automation.workflows"
                                                      f"[{name}].actions.{step.name} (a command, or hook)")))
    seen: set[str] = set()
    ordered = []
    for stage in stages:
        if stage.name not in seen:
            seen.add(stage.name)
            ordered.append(stage)
    first_deployed = next((i for i, s in enumerate(ordered) if s.deployed or s.name in workflow_gates), len(ordered))
    ordered = [replace(s, index=i, deployed=s.deployed or i >= first_deployed) for i, s in enumerate(ordered)]
    plan = replace(plan, stages=ordered, workflow_gates=workflow_gates)
    return plan, WorkflowRun(workflow, phases, rollback)


def workflow_step_kind(plan: Plan, call_hook: Callable[[StepContext], StepResult | None] | None) -> CheckKind:
    """The check kind of an action step: the action runs, within the time left of its budget."""

    def run(ctx: CheckContext) -> CheckResult:
        workflow = plan.workflows[ctx.params["workflow"]]
        step = next(s for s in workflow.steps if s.name == ctx.params["step"])
        assert step.action is not None
        action = ACTIONS[step.action]
        step_ctx = StepContext(workflow.name, step.name, step.params, plan.base_dir, ctx.deadline, "workflow",
                               call_hook=call_hook)
        # The action keeps to the deadline itself (a command is killed then); the grace lets it say so.
        finished, result, error = call_with_deadline(lambda: action.run(step_ctx), max(ctx.remaining(), 0.0) + 1.0)
        if not finished:
            return CheckResult(False, f"{workflow.name} step {step.name} ({step.action}) did not finish within "
                                      f"the {format_duration(workflow.timeout)} timeout of the workflow",
                               {"finished": False}, {"finished": True})
        if error is not None or result is None:
            return CheckResult(False, f"{workflow.name} step {step.name} ({step.action}) broke: {error!r}")
        # What the step printed is kept also when it succeeds: the record's measured.output (the
        # last OUTPUT_LINES lines, each bounded) and the report's "output" section (see items).
        lines = [line if len(line) <= OUTPUT_CHARS else line[: OUTPUT_CHARS - 3] + "..." for line in result.details]
        if len(lines) > OUTPUT_LINES:
            lines = [f"... {len(lines) - OUTPUT_LINES} earlier line(s) not kept"] + lines[-OUTPUT_LINES:]
        return CheckResult(result.passed, f"{workflow.name} step {step.name} ({step.action}): {result.summary}",
                           {"passed": result.passed, **result.measured, "output": lines}, {"passed": True},
                           result.details)

    return CheckKind(WORKFLOW_STEP, frozenset(), {"type": "object"}, run,
                     "a workflow's action step (deploy, ...), run in its own stage")
