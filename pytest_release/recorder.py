"""The evidence recorder: the controller-side plugin that turns reports into evidence.

Registered in ``pytest_configure`` only on the controller (never on an xdist worker), like
pytest-html's reporter. It learns everything from test reports (their user properties), writes a
JSON record per check as each one finishes (a line of its gate's
``records.jsonl``), and at the end of the session the gate, stage and run
records, the release summary (into the HTML report, the terminal and ``GITHUB_STEP_SUMMARY``),
copies of the JUnit and HTML reports, and the manifest that seals the run.

Two faults of the run itself end here too. Evidence that cannot be written (disk full, read-only)
is recorded by the evidence tree's guarded write and reported at the end (EVIDENCE INCOMPLETE,
exit 21) while the rollback and the verdict go on. A planned check whose verdict never arrived (its
xdist worker crashed, or the checks queued behind it were dropped) is a failed check: the
controller compares what the plan holds with the verdicts received (:meth:`Recorder.fail_lost`).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import __version__
from .analytics import AnalyticsRun, default_store, run_analytics, trends_html
from .attest import test_result
from .checks import CheckKind
from .evidence import RECORDS, EvidenceTree, SealError, utc_iso
from .items import CheckItem, check_properties, item_result, planned_checks
from .people import history_after_seal
from .model import METRIC, MONITOR, CheckSpec, Gate, Plan, Stage, Target
from .runstate import Record, RunState
from .workflows import WorkflowRun
from .records import SCHEMA_VERSION, gate_verdict
from .result import ATTRIBUTE, ItemResult, Verdict, verdict_of
from .secrets import redact, redact_value
from .rollback.runner import RollbackResult
from .summary import CheckOutcome, RunSummary, badge, render_html, render_markdown, summarize

__all__ = ["EVIDENCE_INCOMPLETE", "ROLLBACK_FAILED", "Recorder", "final_exit_status"]

#: The exit code of a run whose rollback failed (pytest's own codes are 0 to 6): the system may be
#: inconsistent and someone must look. A rolled-back run exits 1, like a blocked one, unless an
#: operator asked for the rollback (see :func:`rollback_exit_status`).
ROLLBACK_FAILED = 20
#: The exit code of a run some of whose evidence could not be written (disk full, read-only): its
#: verdict stands (the terminal shows it), but an auditor cannot rely on its records. A failed
#: rollback (20) wins over it: the system matters more than its records.
EVIDENCE_INCOMPLETE = 21
#: How many unwritten files the terminal lists (the manifest, if written, has them all).
SHOWN_UNWRITTEN = 10


def final_exit_status(status: int, rollback: RollbackResult | None, incomplete: bool) -> int:
    """The run's exit code from pytest's, the rollback's outcome and whether evidence is missing:
    a failed rollback 20 (also after Ctrl-C or SIGTERM); else a rollback 1, or 0 for an operator's
    (see :func:`rollback_exit_status`; 2 if interrupted);
    else incomplete evidence turns 0, 1 and 2 into 21."""
    if rollback is not None:
        if rollback.outcome == "rollback_failed":
            return ROLLBACK_FAILED
        if status != 2:
            status = rollback_exit_status(rollback)
    if incomplete and status in (0, 1, 2):
        return EVIDENCE_INCOMPLETE
    return status

SECTION_CONFIG = {"validation": "validation/config", "rollback": "rollback/config",
                  "monitoring": "monitoring/config", "analytics": "analytics/config",
                  "automation": "automation/config"}


class Recorder:
    """Gathers check outcomes from reports and writes the run's evidence."""

    def __init__(self, config: pytest.Config, plan: Plan, tree: EvidenceTree,
                 selected: tuple[str, ...] | None, workflow: WorkflowRun | None = None, *,
                 kinds: dict[str, CheckKind] | None = None, state: RunState | None = None) -> None:
        self.config = config
        self.kinds = kinds
        self.state = state
        #: Node ids of the check items this run planned (selected, collected here or on workers).
        self.planned: set[str] = set()
        #: Node ids whose verdict arrived (their last report).
        self.finished: set[str] = set()
        #: Workers that went down with an error, and why (xdist).
        self.crashed: dict[str, str] = {}
        self._planned: dict[str, tuple[Stage, Gate, CheckSpec, Target | None]] | None = None
        #: What stopped the run early, if a signal did ("SIGTERM").
        self.interrupted_by: str | None = None
        self.workflow = workflow
        self.plan = plan
        self.tree = tree
        self.selected = selected
        self.outcomes: dict[str, CheckOutcome] = {}
        self.started = time.time()
        self.summary: RunSummary | None = None
        self.manifest: tuple[Path, str] | None = None
        self.rollback: RollbackResult | None = None
        self.journal: Path | None = None
        self.session: pytest.Session | None = None
        self.analytics: AnalyticsRun | None = None
        self.rollback_timing: dict[str, Any] | None = None
        self._records_paths: dict[tuple[str, str, str], Path] = {}

    # -- records --------------------------------------------------------------------------------

    def envelope(self, kind: str) -> dict[str, Any]:
        return {"record": kind, "schema_version": SCHEMA_VERSION, "run_id": self.tree.run_id,
                "release": {"name": self.plan.name, "version": self.plan.version},
                "plan": {"path": self.plan.display, "sha256": self.plan.sha256}, "time_scale": self.plan.time_scale}

    def write(self, path: Path, record: dict[str, Any]) -> Path | None:
        """Write a record through the tree's guarded path (``None``: it could not be written)."""
        return self.tree.write_json(path, redact_value(record, self.plan.secrets))  # type: ignore[arg-type]

    def append(self, path: Path, record: dict[str, Any]) -> str | None:
        """Append a check record to its gate's JSON Lines file; its reference (``PATH#LN``)."""
        return self.tree.append_record(path, redact_value(record, self.plan.secrets))  # type: ignore[arg-type]

    def _records_path(self, outcome: CheckOutcome) -> Path:
        """The JSON Lines file of ``outcome``'s gate: ``FOLDER/RUN_ID/STAGE/GATE/records.jsonl``."""
        key = (outcome.kind, outcome.stage, outcome.gate)
        path = self._records_paths.get(key)
        if path is None:
            folder = ("gates" if outcome.gate == "rollback_gate" else
                      "validation/metrics" if outcome.kind == METRIC else
                      "monitoring/metrics" if outcome.kind == MONITOR else "validation/gates")
            path = self._records_paths[key] = self.tree.path(folder, outcome.stage, outcome.gate, RECORDS)
        return path

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self.tree.create()
        self.tree.write_bytes(self.tree.path("config", "plan.yaml"), self.plan.path.read_bytes())
        effective = self.plan.effective()
        self.write(self.tree.path("config", "effective.json"), effective)
        for section, folder in SECTION_CONFIG.items():
            if section in effective:
                self.write(self.tree.path(folder, f"{section}.json"), {section: effective[section]})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, ATTRIBUTE, None)
        if not isinstance(data, dict):
            return
        outcome = self.outcomes.get(report.nodeid)
        if outcome is None:
            outcome = self.outcomes[report.nodeid] = CheckOutcome(
                nodeid=report.nodeid, name=report.nodeid.split("::", 3)[-1], stage=data["stage"],
                gate=data["gate"], kind=data["check"], target=data["target"] or None,
                required=data["required"], start=report.start,
                worker=str(getattr(report, "worker_id", "main")))
        outcome.end = report.stop
        outcome.verdict = data["verdict"]
        if report.when != "teardown" and not data.get("lost") and report.passed and outcome.verdict != "warning":
            return  # the usual case, a phase that passed: nothing more to read until the teardown
        result = ItemResult.from_dict(data)
        if result.verdict == Verdict.WARNING:
            outcome.message = outcome.message or redact(result.warning_line(_first_line(report)), self.plan.secrets)
        elif report.failed or report.skipped:
            outcome.message = outcome.message or redact(_skip_or_failure_text(report), self.plan.secrets)
        if report.when != "teardown" and not result.lost:
            return
        self.finished.add(report.nodeid)
        outcome.blocked = result.blocked is not None and result.blocked.blocks_stage
        first_line = outcome.message.splitlines()[0] if outcome.message else ""
        outcome.summary = result.summary or first_line
        outcome.measured = result.measured
        outcome.expected = result.expected
        outcome.params = result.params
        if result.ran is not None:  # started early (fan-out): the check's own time
            outcome.start, outcome.end = result.ran
        if outcome.kind == MONITOR and isinstance(outcome.measured.get("window_s"), (int, float)):
            # The window runs before the item's own phases (outside capture, for the live line):
            # its time is the window's.
            outcome.start = min(outcome.start, outcome.end - float(outcome.measured["window_s"]))
        record = {**self.envelope("check"), "nodeid": outcome.nodeid, "stage": outcome.stage,
                  "gate": outcome.gate, "check": outcome.name, "kind": outcome.kind, "target": outcome.target,
                  "required": outcome.required, "params": outcome.params, "measured": outcome.measured,
                  "expected": outcome.expected, "verdict": outcome.verdict, "summary": outcome.summary,
                  "message": outcome.message, "start": utc_iso(outcome.start), "end": utc_iso(outcome.end),
                  "duration_s": round(outcome.duration, 6), "worker": outcome.worker}
        outcome.record = self.append(self._records_path(outcome), record)
        if outcome.kind == MONITOR:
            self._monitoring_records(outcome)

    # -- checks without a verdict ------------------------------------------------------------

    def _planned_check(self, nodeid: str) -> tuple[Stage, Gate, CheckSpec, Target | None] | None:
        """What ``nodeid`` checks, if it is a check item of this plan (the plan's items are made
        once, on first use: under xdist, or when a verdict is missing)."""
        if self._planned is None:
            self._planned = planned_checks(self.plan, self.kinds or {}, self.selected)
        head, sep, rest = nodeid.partition("::")
        if not sep or Path(head).name != self.plan.path.name:
            return None
        return self._planned.get(rest)

    def _planned_result(self, nodeid: str) -> ItemResult | None:
        """The result before it ran of ``nodeid``, if it is a check item of this plan."""
        planned = self._planned_check(nodeid)
        return None if planned is None else item_result(self.plan, *planned)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The planned checks, when this process collected them (no xdist)."""
        self.planned.update(i.nodeid for i in session.items if isinstance(i, CheckItem) and i.plan is self.plan)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """The planned checks, as each xdist worker collected them (the controller collects none)."""
        self.planned.update(i for i in ids if self._planned_check(i) is not None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        if error is not None:
            self.crashed[str(getattr(getattr(node, "gateway", None), "id", node))] = str(error)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """A check whose xdist worker crashed while running it has no verdict: it failed. Its report
        (which xdist logs next) carries the check's properties, so the evidence and the summary
        name it; and the verdict goes to the shared run state at once, so that workers waiting for
        the earlier stages learn of it now."""
        result = self._planned_result(crashitem)
        if result is None:
            return
        worker = str(getattr(getattr(getattr(report, "node", None), "gateway", None), "id", "?"))
        why = f"no verdict received: worker {worker} crashed while running it (killed, or out of memory)"
        self._lose(report, result, why)

    def _lose(self, report: pytest.TestReport, result: ItemResult, why: str) -> None:
        result.verdict = Verdict.FAILED if result.required else Verdict.WARNING
        result.summary = result.lost = why
        setattr(report, ATTRIBUTE, result.as_dict())
        report.user_properties = list(check_properties(result))
        report.longrepr = why
        head, _, rest = report.nodeid.partition("::")
        report.location = (head, None, rest)  # shown as the check, not as the plan file
        if not result.required:  # like any failure in a gate with required: false, a warning
            report.outcome = "passed"
        if self.state is not None:
            record = Record(report.nodeid, result.stage, result.gate, result.verdict.value, why)
            try:
                self.state.share(record)
            except OSError:  # the run state is a private temporary folder; its loss only slows waiters
                pass

    def fail_lost(self, session: pytest.Session) -> list[str]:
        """At the end of the test loop: every planned check whose verdict never arrived failed (its
        gate fails; under xdist its worker crashed, or it was dropped with the crashed worker's
        queue). Each is reported like a check (terminal, JUnit, evidence). Their node ids."""
        lost = sorted(self.planned - self.finished)
        crashed = "; ".join(f"worker {w}: {e}" for w, e in self.crashed.items())
        for nodeid in lost:
            result = self._planned_result(nodeid)
            if result is None:
                continue
            why = ("no verdict received: its worker crashed before it reported (" + crashed + ")" if crashed
                   else "no verdict received: no report of this check reached the controller")
            location = (nodeid.partition("::")[0], None, nodeid.partition("::")[2])
            hook = self.config.hook
            now = time.time()
            hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
            report = pytest.TestReport(nodeid, location, {}, "failed", why, "call", [], 0.0, now, now, [])
            self._lose(report, result, why)
            hook.pytest_runtest_logreport(report=report)
            hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
        return lost

    def _monitoring_records(self, outcome: CheckOutcome) -> None:
        """A monitoring metric's alerts (with the samples that made one fire) and its tasks' runs,
        each as a record of its own, beside the metric's."""
        for alert in outcome.measured.get("alerts") or []:
            self.write(self.tree.path("monitoring/alerts", outcome.stage, f"{alert['alert']}.json"),
                       {**self.envelope("alert"), "stage": outcome.stage, "metric_record": outcome.record, **alert})
        for task in outcome.measured.get("tasks") or []:
            runs = task.get("runs") or []
            failed = [r for r in runs if not r.get("good")]
            self.write(self.tree.path("automation/tasks", outcome.stage, f"{task['task']}.json"),
                       {**self.envelope("task"), "stage": outcome.stage, "task": task["task"],
                        "interval_s": task.get("interval_s"), "runs": runs, "failed_runs": len(failed),
                        "verdict": "failed" if failed else "passed" if runs else "not_run",
                        "metric_record": outcome.record})

    def record_rollback(self, result: RollbackResult, journal: Path) -> None:
        """The trigger, each procedure and each step of a rollback, as records."""
        self.rollback, self.journal = result, journal
        for outcome in result.steps:
            path = self.tree.path("rollback/procedures", *outcome.key.split("::")[:-1],
                                  f"{outcome.step}.json")
            self.write(path, {
                **self.envelope("step"), "trigger": result.trigger, "procedure": outcome.procedure,
                "step": outcome.step, "action": outcome.action, "verdict": outcome.verdict,
                "summary": outcome.result.summary, "details": outcome.result.details,
                "measured": outcome.result.measured, "start": utc_iso(outcome.start), "end": utc_iso(outcome.end),
                "duration_s": round(outcome.end - outcome.start, 6)})
        for name in result.procedures:
            steps = [s for s in result.steps if s.procedure == name]
            verdict = "failed" if any(s.verdict == "failed" for s in steps) else "passed"
            self.write(self.tree.path("rollback/procedures", f"{name}.json"), {
                **self.envelope("procedure"), "procedure": name, "trigger": result.trigger, "verdict": verdict,
                "steps": [{"step": s.step, "action": s.action, "verdict": s.verdict} for s in steps]})
        failed = result.failed_step
        self.rollback_timing = rollback_timing(result, self.first_failure(result))
        self.write(self.tree.path("rollback/triggers", f"{result.trigger}.json"), {
            **self.envelope("trigger"), "trigger": result.trigger, "reason": result.reason,
            "procedures": result.procedures, "outcome": result.outcome, "resumed_from": result.resumed_from,
            "failed_step": failed.key if failed else None, **self.rollback_timing,
            "journal": self.tree.relative(journal)})

    def first_failure(self, result: RollbackResult) -> dict[str, Any] | None:
        """What failed first after the release was deployed (a required check of a gate, an alert
        that fired, a deploy step), and when; ``None`` for an operator's rollback."""
        if result.trigger == "manual_trigger":
            return None
        deployed = {s.name for s in self.plan.stages if s.deployed} | set(self.plan.workflow_gates)
        found: list[tuple[float, str, str]] = []
        for outcome in self.outcomes.values():
            if outcome.verdict != "failed" or outcome.stage not in deployed or not outcome.end:
                continue
            if outcome.stage in self.plan.workflow_gates:
                found.append((outcome.end, "failed deploy", outcome.nodeid))
                continue
            fired = [a for a in outcome.measured.get("alerts") or [] if isinstance(a, dict) and a.get("fired")]
            if outcome.kind == MONITOR and fired:
                for alert in fired:
                    at = outcome.start + float(alert.get("at_s") or 0.0)
                    found.append((at, "fired alert", f"{outcome.nodeid}: alert {alert.get('alert')}"))
                continue
            found.append((outcome.end, "failed gate", outcome.nodeid))
        if not found:
            return None
        at, what, where = min(found)
        return {"at": utc_iso(at), "what": what, "check": where, "_t": at}

    # -- the end of the session -----------------------------------------------------------------

    def _summary(self, session: pytest.Session) -> RunSummary:
        status = int(session.exitstatus)
        if self.summary is None or self.summary.exit_status != status:
            self.summary = summarize(self.plan, self.selected, self.outcomes, status, self.rollback)
        return self.summary

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report: Any) -> None:
        report.title = f"Release report: {self.plan.title} ({self.tree.run_id})"

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        """A warning's row in pytest-html's results table: its result cell is a "warned" badge
        (pytest-html knows only its own outcomes; it counts the row among the passed ones)."""
        if verdict_of(report) == Verdict.WARNING and cells and "col-result" in cells[0]:
            cells[0] = f'<td class="col-result release-warned">{badge("warned")}</td>'

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        html_path = Path(self.config.option.htmlpath).resolve().parent

        def link(check: CheckOutcome) -> str | None:
            if not check.record:
                return None
            rel, _, line = check.record.partition("#")
            return Path(os.path.relpath(self.tree.root / rel, html_path)).as_posix() + (f"#{line}" if line else "")

        prefix.append(redact(render_html(self._summary(session), link), self.plan.secrets))
        if self.analytics is not None:
            prefix.append(redact(trends_html(self.analytics), self.plan.secrets))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> Iterator[None]:
        session.exitstatus = final_exit_status(int(session.exitstatus), self.rollback, False)
        if self.plan.analytics_metrics or self.plan.analyses:  # before the reports, which show it
            self.analytics = run_analytics(self.plan, self.tree.run_id, self._summary(session),
                                           list(self.outcomes.values()), self.started,
                                           self.plan.history_store or default_store(self.tree.root))
        result = yield  # pytest's JUnit XML and pytest-html's report are written in here
        summary = self._summary(session)
        if self.journal is not None:
            self.tree.add_file(self.journal, self.journal)
        if self.rollback is not None:
            for run_id in self.rollback.resumed_runs or ([self.rollback.resumed_from]
                                                         if self.rollback.resumed_from else []):
                self.tree.adopt(run_id)
        self._write_end_records(summary)
        self._analytics_records()
        self._copy_reports()
        self._github_summary(summary)
        signed = None
        if self.tree.signer is not None:
            signed = test_result(self.plan, summary, self.outcomes.values(), self.rollback,
                                 os.path.relpath(self.plan.path, self.config.rootpath).replace(os.sep, "/"))
        try:
            self.manifest = self.tree.seal(self._metadata(summary), signed)
        except SealError as exc:  # the files stay, unsealed (verify lists them): evidence incomplete
            session.exitstatus = final_exit_status(int(session.exitstatus), self.rollback, True)
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"pytest-release: {summary.banner}: evidence NOT sealed: {exc}", red=True)
            return result
        self._report_end(summary)
        history = history_after_seal(self.tree.root)  # EVIDENCE/index.html, every sealed run
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(history)
        session.exitstatus = final_exit_status(int(session.exitstatus), self.rollback, bool(self.tree.unwritten))
        return result

    @pytest.hookimpl(wrapper=True, trylast=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_reports(self, session: pytest.Session, exitstatus: int) -> Iterator[None]:
        """Around the plugins that write the JUnit XML and the HTML report into the evidence: a
        report that cannot be written there is incomplete evidence, not an internal error that
        would hide the verdict (pytest's terminal summary runs outside this wrapper)."""
        try:
            return (yield)
        except OSError as exc:
            reports = [Path(v) for v in (getattr(self.config.option, "xmlpath", None),
                                         getattr(self.config.option, "htmlpath", None)) if v]
            ours = [r for r in reports if self._inside(r)]
            if exc.filename is not None and not self._inside(Path(exc.filename)) or not ours:
                raise
            missing = [r for r in ours if not r.is_file()] or ours
            for report in missing:
                self.tree.record_failure(report, exc)
            return None

    def _inside(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.tree.root.resolve())
        except ValueError:
            return False
        return True

    def _report_end(self, summary: RunSummary) -> None:
        """The last lines: the verdict, where the sealed evidence is, and what could not be written."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        unwritten = self.tree.unwritten
        if self.manifest is not None:
            how = f", signed by key {self.tree.signer.keyid[:16]}" if self.tree.signer else ""
            tr.write_line(f"pytest-release: {summary.banner}: evidence sealed in {self.tree.run_dir} "
                          f"(manifest sha256 {self.manifest[1]}{how})")
        else:
            tr.write_line(f"pytest-release: {summary.banner}: EVIDENCE NOT SEALED: the manifest in "
                          f"{self.tree.run_dir} could not be written", red=True, bold=True)
        if unwritten:
            tr.write_line(f"pytest-release: EVIDENCE INCOMPLETE: {len(unwritten)} evidence file(s) could not be "
                          f"written in {self.tree.root} (the verdict above stands):", red=True, bold=True)
            for rel, why in list(unwritten.items())[:SHOWN_UNWRITTEN]:
                tr.write_line(f"  {rel}: {why}", red=True)
            if len(unwritten) > SHOWN_UNWRITTEN:
                tr.write_line(f"  ... and {len(unwritten) - SHOWN_UNWRITTEN} more"
                              + (" (listed in the manifest)" if self.manifest is not None else ""), red=True)

    def _write_end_records(self, summary: RunSummary) -> None:
        end = time.time()
        for stage in summary.stages:
            for gate in stage.gates:
                ran = [c for c in gate.checks if c.end]
                record = {**self.envelope("gate"), "stage": stage.name, "gate": gate.name,
                          "required": gate.required, "budget_s": gate.budget, "verdict": gate.verdict,
                          "counts": gate.counts(),
                          "checks": [{"nodeid": c.nodeid, "verdict": c.verdict, "record": c.record}
                                     for c in gate.checks],
                          "start": utc_iso(min(c.start for c in ran)) if ran else None,
                          "end": utc_iso(max(c.end for c in ran)) if ran else None,
                          "duration_s": round(gate.duration, 6)}
                folder = {"rollback_gate": "gates", "monitoring_gate": "monitoring/metrics"}.get(
                    gate.name, "validation/gates")
                self.write(self.tree.path(folder, stage.name, f"{gate.name}.json"), record)
            self._strategy_gates(stage)
        stages = [{"name": s.name, "verdict": s.verdict, "reason": s.reason,
                   "gates": [{"name": g.name, "verdict": g.verdict} for g in s.gates]} for s in summary.stages]
        self.write(self.tree.path("strategy", "stages.json"), {**self.envelope("stages"), "stages": stages})
        if self.workflow is not None:
            flow = self.workflow.record({s.name: s.verdict for s in summary.stages},
                                        self.rollback.outcome if self.rollback else None)
            self.write(self.tree.path("automation/workflows", f"{self.workflow.workflow.name}.json"),
                       {**self.envelope("workflow"), **flow, "outcome": summary.outcome,
                        "start": utc_iso(self.started), "end": utc_iso(end)})
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome.verdict] = counts.get(outcome.verdict, 0) + 1
        self.write(self.tree.run_dir / "summary.json", {
            **self.envelope("run"), "outcome": summary.outcome, "banner": summary.banner,
            "exit_status": final_exit_status(summary.exit_status, self.rollback, bool(self.tree.unwritten)),
            "evidence_incomplete": dict(self.tree.unwritten), "interrupted_by": self.interrupted_by,
            "counts": counts,
            "stages_run": [s.name for s in summary.stages if s.verdict not in ("not_selected", "skipped", "not_run")],
            "stages_not_run": [{"name": s.name, "verdict": s.verdict, "reason": s.reason} for s in summary.stages
                               if s.verdict in ("skipped", "not_run")],
            "rollback": ({"trigger": self.rollback.trigger, "outcome": self.rollback.outcome,
                          "manual": self.rollback.trigger == "manual_trigger", **(self.rollback_timing or {})}
                         if self.rollback is not None else None),
            "start": utc_iso(self.started), "end": utc_iso(end), "duration_s": round(end - self.started, 6),
            "attention": [{"nodeid": c.nodeid, "verdict": c.verdict, "summary": c.summary,
                           "measured": c.measured, "expected": c.expected, "record": c.record}
                          for c in summary.attention()]})

    def _analytics_records(self) -> None:
        """What this run added to the history store, per metric, and what each analysis found."""
        if self.analytics is None:
            return
        store = self.analytics.store
        for outcome in self.analytics.metrics:
            metric = outcome.metric
            self.write(self.tree.path("analytics/metrics", f"{metric.name}.json"), {
                **self.envelope("analytics_metric"), "metric": metric.name, "source": metric.source,
                "kind": metric.kind, "store": store, "stored": self.analytics.error is None,
                "samples": [{"series": k, "value": v} for k, v in sorted(outcome.samples.items())],
                "pruned": outcome.pruned, "retention_s": metric.retention, "interval_s": metric.interval,
                "error": outcome.error or self.analytics.error})
        for analysis in self.analytics.analyses:
            spec = analysis.analysis
            self.write(self.tree.path("analytics/analysis", f"{spec.name}.json"), {
                **self.envelope("analysis"), "analysis": spec.name, "metric": spec.metric, "store": store,
                "verdict": analysis.verdict, "summary": analysis.line(), "baseline": analysis.baseline,
                "runs": analysis.runs, "tolerance": spec.tolerance, "interval_s": spec.interval,
                "retention_s": spec.retention, "series": [t.as_record() for t in analysis.series],
                "regressions": [t.series for t in analysis.regressions],
                "regressed_checks": analysis.regressed_checks, "flaky_checks": analysis.flaky_checks,
                "error": analysis.error})

    def _strategy_gates(self, stage: Any) -> None:
        plan_stage = next(s for s in self.plan.stages if s.name == stage.name)
        strategy = {g.get("name"): g for g in (self.plan.data.get("strategy") or {}).get("gates", [])}
        for name, flag in (("validation_gate", "validation"), ("rollback_gate", "rollback"),
                           ("monitoring_gate", "monitoring")):
            if name not in strategy or not getattr(plan_stage, flag):
                continue
            record = {**self.envelope("strategy_gate"), "stage": stage.name, "gate": name,
                      "required": strategy[name].get("required", True)}
            if name == "validation_gate":
                validation = [g for g in stage.gates if g.name != "rollback_gate"]
                record.update(acted_on=True, verdict=gate_verdict((g.verdict for g in validation), True)
                              if validation else "not_run",
                              gates=[{"name": g.name, "verdict": g.verdict} for g in validation])
            else:
                own = [g for g in stage.gates if g.name == name]
                record.update(acted_on=True, verdict=own[0].verdict if own else "not_run")
                if name == "monitoring_gate" and own:
                    record["metrics"] = [{"nodeid": c.nodeid, "verdict": c.verdict, "summary": c.summary,
                                          "record": c.record} for c in own[0].checks]
            self.write(self.tree.path("gates", f"{stage.name}.{name}.json"), record)

    def _copy_reports(self) -> None:
        """The run's JUnit XML and HTML report belong to its evidence, wherever pytest wrote them."""
        for option, name in (("xmlpath", "junit.xml"), ("htmlpath", "report.html")):
            value = getattr(self.config.option, option, None)
            if value:
                self.tree.add_file(Path(value), self.tree.run_dir / name)

    def _github_summary(self, summary: RunSummary) -> None:
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if not target:
            return
        text = redact(render_markdown(summary, str(self.tree.run_dir), str(self.tree.root / "index.html")), self.plan.secrets)
        try:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(f"pytest-release: cannot append to GITHUB_STEP_SUMMARY: {exc}", yellow=True)

    def _metadata(self, summary: RunSummary) -> dict[str, Any]:
        options = {k: v for k, v in vars(self.config.option).items()
                   if k.startswith("release_") or k in ("markexpr", "keyword", "numprocesses", "lf", "maxfail")}
        return {
            "release": {"name": self.plan.name, "version": self.plan.version},
            "plan": {"path": self.plan.display, "sha256": self.plan.sha256},
            "outcome": summary.outcome,
            "exit_status": final_exit_status(summary.exit_status, self.rollback, bool(self.tree.unwritten)),
            "git_commit": _git_commit(self.plan.base_dir),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "versions": {"pytest": pytest.__version__, "pytest-release": __version__,
                         **_plugin_versions(("pytest-xdist", "pytest-html", "pytest-timeout", "pluggy"))},
            "time_scale": self.plan.time_scale,
            "adopted": self.tree.adopted,
            "options": redact_value(options, self.plan.secrets),
            "args": [redact(str(a), self.plan.secrets) for a in self.config.invocation_params.args],
        }


def rollback_exit_status(result: RollbackResult) -> int:
    """A failed rollback exits 20. A rollback the run fired itself (a gate failed, an alert fired,
    a deploy failed) exits 1: the release did not happen. An operator's rollback
    (``--release-rollback``, or a workflow that reverts) that succeeded exits 0: it did what was
    asked, and the summary says ROLLED BACK (as asked)."""
    if result.outcome == "rollback_failed":
        return ROLLBACK_FAILED
    return 0 if result.trigger == "manual_trigger" else 1


def rollback_timing(result: RollbackResult, first_failure: dict[str, Any] | None) -> dict[str, Any]:
    """The rollback's start, end and duration (its steps through the final verify), and the time
    to restore: from the first failure to the end of the verify (``None`` when nothing failed
    first, as in an operator's rollback, or when the rollback did not restore)."""
    ran = [s for s in result.steps if s.end]
    start = min((s.start for s in ran), default=None)
    end = max((s.end for s in ran), default=None)
    failure = dict(first_failure) if first_failure else None
    at = failure.pop("_t") if failure else None
    restored = result.outcome == "rolled_back" and end is not None and at is not None
    return {"start": utc_iso(start) if start is not None else None, "end": utc_iso(end) if end is not None else None,
            "duration_s": round(end - start, 3) if start is not None and end is not None else None,
            "first_failure": failure,
            "time_to_restore_s": round(end - at, 3) if restored else None}  # type: ignore[operator]


def _first_line(report: pytest.TestReport) -> str:
    text = report.longreprtext.strip()
    return text.splitlines()[0] if text else "failed"


def _skip_or_failure_text(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext


def _git_commit(directory: Path) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _plugin_versions(names: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
