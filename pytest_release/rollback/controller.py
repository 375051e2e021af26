"""The rollback's pytest glue, on the controller only (never on an xdist worker).

After the test loop (all workers done), it reads the check outcomes the recorder gathered, fires
``validation_failure`` when a required validation gate failed in a stage where the release is
deployed (or ``manual_trigger`` for ``--release-rollback``), runs the procedures, and reports
every step as a test result (terminal, JUnit, HTML). An interrupted rollback found in the
evidence tree is resumed, and then the run's checks do not run (they are skipped).

SIGTERM (a cancelled or timed-out CI job) is taken like Ctrl-C while the checks run: a handler,
installed on the controller from the session's start to its end (the previous one is put back),
raises :class:`Terminated`, a ``KeyboardInterrupt``, so the checks stop, the rollback runs if one
is due (``--release-rollback-on-interrupt``), and the evidence is sealed. Once the checks have
stopped, a further SIGTERM is noted and ignored: a rollback step is never cut off half way (SIGKILL
still ends the run; the next run resumes the rollback from its journal).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import pytest

from .. import notify
from ..checks import CheckKind
from ..evidence import EvidenceTree
from ..model import Gate, Plan, Trigger
from ..secrets import redact
from .actions import StepContext, StepResult
from .journal import Journal, Unfinished
from .runner import RollbackResult, StepOutcome, StepVerdict, judge_gates, run_rollback, select_procedures

__all__ = ["RollbackController", "Terminated", "hook_caller"]


class Terminated(KeyboardInterrupt):
    """SIGTERM while the checks ran: the run stops as after Ctrl-C."""


def hook_caller(config: pytest.Config) -> Any:
    """A callable running the ``pytest_release_rollback_step`` hook, or ``None`` if none is implemented."""
    hook = config.hook.pytest_release_rollback_step
    if not hook.get_hookimpls():
        return None

    def call(ctx: StepContext) -> StepResult | None:
        return hook(context=ctx)

    return call


class RollbackController:
    def __init__(self, config: pytest.Config, plan: Plan, kinds: dict[str, CheckKind], tree: EvidenceTree,
                 recorder: Any, *, manual: Trigger | None, on_interrupt: bool,
                 resume: Unfinished | None, asked_by: str = "--release-rollback") -> None:
        self.config = config
        self.plan = plan
        self.kinds = kinds
        self.tree = tree
        self.recorder = recorder
        self.manual = manual
        self.asked_by = asked_by
        self.on_interrupt = on_interrupt
        self.resume = resume
        self.ran = False
        #: SIGTERMs received; the first one while the checks ran stopped them.
        self.terminated = 0
        self._ignored_shown = 0
        #: "idle", "checks" (SIGTERM stops the run), "finishing" (SIGTERM is noted and ignored).
        self._phase = "idle"
        self._previous: Any = None
        self._installed = False

    # -- SIGTERM ------------------------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._phase = "checks"
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        except (ValueError, OSError):  # no signals here (an embedding host): nothing to install
            pass

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.terminated += 1
        if self._phase == "checks":
            self._phase = "finishing"
            self.recorder.interrupted_by = "SIGTERM"
            raise Terminated("SIGTERM: the run was terminated (a cancelled or timed-out job); "
                             "stopping the checks")
        # Noted only: writing from a signal handler could break a write in progress. Shown after the
        # current rollback step and in the summary.

    def _show_ignored(self) -> None:
        ignored = self.terminated - 1 if self.recorder.interrupted_by == "SIGTERM" else self.terminated
        if ignored > self._ignored_shown:
            self._ignored_shown = ignored
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line("pytest-release: SIGTERM received while the rollback runs: ignored, so that no step "
                              "is cut off half way (SIGKILL stops the run; the next run resumes the rollback)",
                              yellow=True)

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        self._phase = "idle"

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Iterator[None]:
        try:
            return (yield)  # the evidence is sealed in here: a SIGTERM now is ignored too
        finally:
            self._restore()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._restore()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.terminated:
            ignored = self.terminated - (1 if self.recorder.interrupted_by == "SIGTERM" else 0)
            first = "the checks were stopped by SIGTERM" if self.recorder.interrupted_by == "SIGTERM" else ""
            more = f"{ignored} SIGTERM(s) after the checks had stopped were ignored" if ignored else ""
            terminalreporter.write_line(f"pytest-release: {'; '.join(x for x in (first, more) if x)}", yellow=True)

    # -- when ------------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        # A resumed rollback runs after the loop (whose checks are all skipped), never before it:
        # a failed step reported before pytest's own loop starts reads to pytest as a collection
        # error ("1 error during collection", exit 2).
        try:
            result = yield
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM (Terminated), or xdist stopping (-x)
            self._phase = "finishing"
            if self.resume is not None:  # a rollback half done is finished whatever stopped the checks
                self._resume()
            elif self.on_interrupt:
                self.fire(interrupted=True)
            raise
        except session.Failed:  # -x / --maxfail stopped the loop: a rollback due is still due
            self._phase = "finishing"
            if self.resume is not None:
                self._resume()
            else:
                self.fire()
            raise
        self._phase = "finishing"
        if self.resume is not None:
            self._resume()
        else:
            self.recorder.fail_lost(session)  # a planned check without a verdict failed
            self.fire()
        return result

    def _resume(self) -> None:
        assert self.resume is not None
        self._run(self._trigger(self.resume.start["trigger"]), "", [], resume=self.resume)

    def fire(self, interrupted: bool = False) -> None:
        """Fire the trigger this run calls for, at most once."""
        if self.ran:
            return
        if self.manual is not None:
            self._run(self.manual, f"{self.asked_by}: an operator asked for a rollback", self._last_stage_gates())
            return
        suffix = " (the run was interrupted)" if interrupted else ""
        failed = self.failed_gates()
        steps = self.failed_workflow_steps()
        trigger = self.plan.triggers.get("validation_failure")
        if (failed or steps) and trigger is not None and trigger.action == "rollback":
            names = [f"{stage}::{gate.name}" for stage, gate in failed] + steps
            unique = list({gate.name: gate for _, gate in failed}.values())
            if steps:  # a deploy that failed half way: verify the last stage's gates after the rollback
                unique += [g for g in self._last_stage_gates() if g not in unique]
            self._run(trigger, f"required gate(s) failed after the release was deployed: {', '.join(names)}{suffix}",
                      unique)
            return
        alerts = self.failed_monitoring()
        trigger = self.plan.triggers.get("monitoring_failure")
        if alerts and trigger is not None and trigger.action == "rollback":
            self._run(trigger, f"monitoring failed after the release was deployed: {'; '.join(alerts)}{suffix}",
                      self._last_stage_gates(), verify_metrics=self.failed_metrics())

    def failed_gates(self) -> list[tuple[str, Gate]]:
        """Required validation gates that failed in stages where the release is deployed."""
        deployed = {s.name for s in self.plan.stages if s.deployed}
        gates = {g.name: g for g in self.plan.gates}
        seen: list[tuple[str, Gate]] = []
        for outcome in self.recorder.outcomes.values():
            if (outcome.verdict == "failed" and outcome.stage in deployed and outcome.gate in gates
                    and (outcome.stage, gates[outcome.gate]) not in seen):
                seen.append((outcome.stage, gates[outcome.gate]))
        return seen

    def failed_workflow_steps(self) -> list[str]:
        """Workflow action steps (a deploy) that failed: the release may be half deployed."""
        return [f"{o.stage}::{o.gate}::{o.name}" for o in self.recorder.outcomes.values()
                if o.verdict == "failed" and o.stage in self.plan.workflow_gates]

    def failed_monitoring(self) -> list[str]:
        """What failed in required monitoring gates of stages where the release is deployed."""
        deployed = {s.name for s in self.plan.stages if s.deployed}
        return [f"{o.stage}::{o.name}: {o.summary}" for o in self.recorder.outcomes.values()
                if o.verdict == "failed" and o.stage in deployed and o.gate == "monitoring_gate"]

    def failed_metrics(self) -> list[str]:
        """The monitoring metrics behind failed_monitoring(): the final verify samples them again."""
        deployed = {s.name for s in self.plan.stages if s.deployed}
        names = [str(o.params.get("metric")) for o in self.recorder.outcomes.values()
                 if o.verdict == "failed" and o.stage in deployed and o.gate == "monitoring_gate"]
        return list(dict.fromkeys(names))

    def _last_stage_gates(self) -> list[Gate]:
        stages = [s for s in self.plan.stages if s.validation]
        return self.plan.gates_in(stages[-1]) if stages else []

    def _trigger(self, name: str) -> Trigger:
        return self.plan.triggers[name]

    # -- how -------------------------------------------------------------------------------------

    def _run(self, trigger: Trigger, reason: str, verify_gates: Sequence[Gate], *,
             resume: Unfinished | None = None, verify_metrics: Sequence[str] = ()) -> RollbackResult:
        self.ran = True
        procedures, why = select_procedures(self.plan, trigger, [g.name for g in verify_gates])
        journal = resume.journal if resume else Journal(self.tree.path("rollback/procedures", "journal.jsonl"))
        journal.tree = self.tree  # an append that cannot be written is incomplete evidence, not a stop
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            what = (f"resuming the rollback interrupted in run {resume.run_id}" if resume
                    else f"{trigger.name}: {reason}; procedures {', '.join(p.name for p in procedures)} ({why})")
            tr.write_sep("=", "pytest-release rollback", red=True, bold=True)
            tr.write_line(redact(what, self.plan.secrets))
        notify.trigger_fired(trigger.name, reason or why, [p.name for p in procedures])  # never waits
        result = run_rollback(
            self.plan, trigger, f"{reason} ({why})" if reason else why, procedures, verify_gates,
            journal=journal, run_id=self.tree.run_id,
            judge=lambda gates: judge_gates(self.plan, self.kinds, gates),
            call_hook=hook_caller(self.config), report=self._report, resume=resume, verify_metrics=verify_metrics)
        self.recorder.record_rollback(result, journal.path)
        notify.rollback_finished(result)
        return result

    def _report(self, outcome: StepOutcome) -> None:
        """One step as one test result: logstart, setup/call/teardown reports, logfinish."""
        plan_id = os.path.relpath(self.plan.path, self.config.rootpath).replace(os.sep, "/")
        nodeid = f"{plan_id}::rollback::{outcome.key}"
        line = next((s.mark.line - 1 for p in self.plan.procedures for s in p.steps if s.id == outcome.key), 0)
        location = (plan_id, line, f"rollback::{outcome.key}")
        hook = self.config.hook
        secrets = self.plan.secrets
        result = outcome.result
        details = redact("\n".join(result.details), secrets)
        summary = redact(result.summary, secrets)
        props = [("release_rollback", outcome.procedure), ("release_step", outcome.step),
                 ("release_action", outcome.action or ""), ("release_verdict", outcome.verdict),
                 ("summary", summary)]
        keywords: dict[str, Literal[1]] = {"rollback": 1, outcome.procedure: 1, outcome.step: 1}
        if outcome.verdict == "failed":
            longrepr: Any = summary + ("\n" + details if details else "")
        elif outcome.verdict == "skipped":
            longrepr = (plan_id, line + 1, summary)
        else:
            longrepr = None
        sections = [("Captured stdout call", f"{summary}\n{details}".rstrip() + "\n")]
        session = self.recorder.session
        if session is not None:
            session.testscollected += 1  # so that progress counts the step like a collected test
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        phases: list[tuple[Literal["setup", "call", "teardown"], StepVerdict, float, float, Any]] = [
            ("setup", "passed", outcome.start, outcome.start, None),
            ("call", outcome.verdict, outcome.start, outcome.end, longrepr),
            ("teardown", "passed", outcome.end, outcome.end, None)]
        for when, verdict, start, stop, rep in phases:
            report = pytest.TestReport(nodeid, location, keywords, verdict, rep, when,
                                       sections if when == "call" else [], stop - start, start, stop,
                                       list(props))
            hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
        self._show_ignored()

