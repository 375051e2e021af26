"""The pytest glue: loading the plan, collection, and translating decisions into pytest calls.

Everything that decides something lives in plain modules: what the plan says (``plan``), what a
check measured (``checks``), what an item must do when its turn comes (``schedule``: blocked and
why, its deadline, fan-out, its monitoring window) and what it came to (``result``); this module
only connects them to pytest's hooks. It is imported only when ``--release-plan`` (or
the ``release_plan`` ini key) names a plan: ``pytest_release.plugin``, the entry point, registers
the options and calls the functions here from its hooks (so an ordinary pytest run imports
nothing of the plan loader, the checks or their libraries).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import __version__, ci
from .checks import BUILTIN_KINDS, CheckKind
from .items import BLOCKED, CARRIED, DEADLINE, EARLY, GRACE, RESULT, CheckItem, PlanFile, check_marker, \
    check_properties, gate_marker, stage_marker
from .evidence import EvidenceTree, new_run_id
from .metrics import metric_kind
from .monitoring import GateWindow, Monitoring, monitor_kind
from .loader import load_plan
from .model import DEFAULT_EVIDENCE, METRIC, MONITOR, READINESS, WORKFLOW_STEP, Plan, Trigger
from .people import People
from .problems import PlanError
from .recorder import Recorder
from .redaction import install as install_redaction, plan_variables
from .rollback.controller import RollbackController, hook_caller
from .rollback.journal import find_unfinished
from .rollback.runner import readiness_kind
from .result import ATTRIBUTE, ItemResult, Verdict, result_of, verdict_of
from .runstate import RunState
from .schedule import Schedule
from .secrets import redact
from .summary import summarize
from .workflows import WorkflowRun, select_workflow, workflow_step_kind

STATE_KEY = "pytest_release_state_dir"
SKIP_KEY = "pytest_release_skip_all"
RECORDER = "pytest-release-recorder"
ROLLBACK = "pytest-release-rollback"
PEOPLE = "pytest-release-people"


@dataclass
class Settings:
    """The options in force; each flag has an ini key, and the flag wins."""

    plan: Path
    stages: tuple[str, ...] | None
    evidence_dir: Path
    manual_rollback: bool = False
    rollback_on_interrupt: bool = True
    time_scale: float = 1.0
    workflow: str | None = None
    #: The key that signs the run's seal: a path, PEM text, or ``${env:NAME}`` holding either.
    sign_key: str | None = None


@dataclass
class Run:
    """What this process knows of the release run: the plan, its checks, shared state."""

    settings: Settings
    plan: Plan
    kinds: dict[str, CheckKind]
    state: RunState
    owns_state: bool
    items: list[CheckItem]
    #: What each item must do when its turn comes (the run-time policy).
    schedule: Schedule
    monitoring: Monitoring | None = None
    workflow: WorkflowRun | None = None


RUN = pytest.StashKey[Run]()


def resolve_settings(config: pytest.Config, plan: Plan | None = None) -> Settings | None:
    """The one place where flag and ini key are weighed: the flag first, then the ini key."""
    plan_value = config.getoption("release_plan") or config.getini("release_plan")
    if not plan_value:
        return None
    stages = config.getoption("release_stage") or config.getini("release_stages") or None
    evidence = (config.getoption("release_evidence_dir") or config.getini("release_evidence_dir")
                or (plan.evidence if plan else None) or DEFAULT_EVIDENCE)
    invocation = config.invocation_params.dir
    on_interrupt = config.getoption("release_rollback_on_interrupt")
    try:
        plan_path = (invocation / plan_value).resolve()
    except (OSError, RuntimeError):  # a symlink loop: load_plan says the plan cannot be read
        plan_path = Path(os.path.abspath(invocation / plan_value))
    return Settings(plan=plan_path, stages=tuple(stages) if stages else None,
                    evidence_dir=(invocation / evidence).resolve(),
                    manual_rollback=bool(config.getoption("release_rollback")),
                    rollback_on_interrupt=(on_interrupt == "yes") if on_interrupt
                    else bool(config.getini("release_rollback_on_interrupt")),
                    time_scale=_time_scale(config),
                    workflow=config.getoption("release_workflow") or config.getini("release_workflow") or None,
                    sign_key=config.getoption("release_sign_key") or config.getini("release_sign_key") or None)


def _time_scale(config: pytest.Config) -> float:
    value = config.getoption("release_time_scale")
    if value is None:
        try:
            value = float(config.getini("release_time_scale"))
        except ValueError:
            raise pytest.UsageError(f"release_time_scale = {config.getini('release_time_scale')!r}: "
                                    "not a number") from None
    if not value > 0:
        raise pytest.UsageError(f"--release-time-scale {value}: the time scale must be more than 0")
    return float(value)


def _display(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def check_kinds(config: pytest.Config) -> dict[str, CheckKind]:
    """The built-in check kinds, those of the ``pytest_release.checks`` entry points, and those
    that ``pytest_release_check_kinds`` hooks (conftest.py files, plugins) return."""
    from importlib.metadata import entry_points

    kinds = dict(BUILTIN_KINDS)
    added: list[tuple[str, Any]] = []
    for entry in entry_points(group="pytest_release.checks"):
        loaded = entry.load()
        added += [(f"entry point {entry.name}", k) for k in (loaded() if callable(loaded) else loaded)]
    for result in config.hook.pytest_release_check_kinds():
        added += [("pytest_release_check_kinds", k) for k in result or ()]
    for source, kind in added:
        if not isinstance(kind, CheckKind):
            raise pytest.UsageError(f"{source} returned {kind!r}, not a pytest_release.CheckKind")
        if kind.name in kinds:
            raise pytest.UsageError(f"{source}: check kind {kind.name!r} is defined twice")
        kinds[kind.name] = kind
    return kinds


def configure(config: pytest.Config) -> None:
    """Load the plan (in ``pytest_configure``, before other plugins configure): the check kinds,
    markers, the run's state, and on the controller the evidence and the rollback controller."""
    settings = resolve_settings(config)
    if settings is None:
        return
    kinds = check_kinds(config)
    try:
        plan = load_plan(settings.plan, kinds, display=_display(settings.plan, config.invocation_params.dir),
                         time_scale=settings.time_scale, variables=plan_variables(config))
    except PlanError as exc:
        if ci.enabled():  # on GitHub Actions, each problem also on its plan line
            print("\n".join(ci.problem_lines(exc.problems, cwd=config.invocation_params.dir)), flush=True)
        raise pytest.UsageError(f"the release plan has {len(exc.problems)} problem(s):\n{exc}") from None
    install_redaction(config, plan.secrets)
    if config.getoption("release_version"):
        plan.version = str(config.getoption("release_version"))
    names = [s.name for s in plan.stages]
    unknown = [s for s in settings.stages or () if s not in names]
    if unknown:
        raise pytest.UsageError(f"--release-stage {', '.join(unknown)}: no such stage in {plan.display}; "
                                f"stages: {', '.join(names)}")
    settings = resolve_settings(config, plan)
    assert settings is not None
    if settings.manual_rollback and "manual_trigger" not in plan.triggers:
        raise pytest.UsageError(f"--release-rollback: {plan.display} has no manual_trigger in rollback.triggers")
    workflow = None
    if settings.workflow:
        if settings.stages or settings.manual_rollback:
            raise pytest.UsageError("--release-workflow runs the stages its steps name: do not give "
                                    "--release-stage or --release-rollback with it")
        try:
            plan, workflow = select_workflow(plan, settings.workflow)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    manual = _manual_trigger(settings, plan, workflow)
    kinds[READINESS] = readiness_kind(plan, hook_caller(config))
    kinds[METRIC] = metric_kind(plan, kinds)
    kinds[WORKFLOW_STEP] = workflow_step_kind(plan, hook_caller(config))
    # Markers from plan names carry a prefix (release_stage_, release_gate_, release_check_), so that
    # they never collide with a project's own markers.
    for stage in plan.stages:
        config.addinivalue_line("markers", f"{stage_marker(stage.name)}: checks of release stage {stage.name}")
    for gate in plan.gates:
        config.addinivalue_line("markers", f"{gate_marker(gate.name)}: checks of validation gate {gate.name}")
    for gate in {g.name: g for g in plan.workflow_gates.values()}.values():
        config.addinivalue_line("markers", f"{gate_marker(gate.name)}: action steps of workflow {gate.name}")
    config.addinivalue_line("markers", f"{gate_marker('rollback_gate')}: rollback readiness checks "
                                       "(strategy gate rollback_gate)")
    config.addinivalue_line("markers", f"{gate_marker('monitoring_gate')}: monitoring metrics "
                                       "(strategy gate monitoring_gate)")
    config.addinivalue_line("markers", f"{check_marker(MONITOR)}: a monitoring metric sampled across a "
                                       "monitoring window")
    for kind in kinds.values():
        config.addinivalue_line("markers", f"{check_marker(kind.name)}: {kind.description}")

    worker_input = getattr(config, "workerinput", None)
    skip_all = ""
    if worker_input is not None:
        state = RunState(Path(worker_input[STATE_KEY]), wait_for_others=True)
        owns = False
        skip_all = worker_input.get(SKIP_KEY, "")
    else:
        state = RunState(Path(tempfile.mkdtemp(prefix="pytest-release-")), wait_for_others=False)
        owns = True
        if not config.option.collectonly:
            try:
                skip_all = _start_evidence_and_rollback(config, settings, plan, kinds, manual, workflow, state)
            except pytest.UsageError:
                shutil.rmtree(state.directory, ignore_errors=True)
                raise
    monitoring = Monitoring(plan, kinds, state)
    kinds[MONITOR] = monitor_kind(monitoring)
    schedule = Schedule(plan, state, skip_all=skip_all,
                        workflow=(workflow.workflow.name, workflow.workflow.timeout) if workflow else None)
    config.stash[RUN] = Run(settings, plan, kinds, state, owns, [], schedule, monitoring=monitoring,
                            workflow=workflow)
    # The plan is what this run is about: without explicit paths, collect only the plan.
    plan_arg = str(settings.plan)
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [plan_arg]
    elif not any(Path(config.invocation_params.dir, a.split("::")[0]).resolve() == settings.plan
                 for a in config.args):
        config.args.append(plan_arg)


def _manual_trigger(settings: Settings, plan: Plan, workflow: WorkflowRun | None) -> Trigger | None:
    """The trigger of a rollback asked for: --release-rollback, or a workflow that reverts (the
    plan's manual_trigger, else one named after the workflow, within its timeout)."""
    if settings.manual_rollback:
        return plan.triggers["manual_trigger"]
    if workflow is not None and workflow.rollback:
        flow = workflow.workflow
        return plan.triggers.get("manual_trigger") or Trigger(flow.name, "rollback", flow.timeout, None, flow.mark)
    return None


def _start_evidence_and_rollback(config: pytest.Config, settings: Settings, plan: Plan,
                                 kinds: dict[str, CheckKind], manual: Trigger | None,
                                 workflow: WorkflowRun | None, state: RunState) -> str:
    """On the controller: the recorder (evidence) and the rollback controller; why no check runs
    if this run is a manual rollback or resumes an interrupted one. An evidence directory that
    cannot be written is a usage error here, before any check runs."""
    tree = EvidenceTree(settings.evidence_dir, new_run_id())
    if settings.sign_key:
        from .attest import KeyProblem, load_signer

        try:
            tree.signer = load_signer(settings.sign_key, config.invocation_params.dir)
        except KeyProblem as exc:
            raise pytest.UsageError(f"--release-sign-key: {exc}") from None
        if tree.signer.secret:  # inline key text is redacted from every record, like ${env:...} values
            plan.secrets = plan.secrets | {tree.signer.secret}
            install_redaction(config, plan.secrets)
    problem = tree.preflight()
    if problem is not None:
        shown = _display(settings.evidence_dir, config.invocation_params.dir)
        raise pytest.UsageError(f"the evidence directory {shown} cannot be written: {problem}. Nothing ran; "
                                "choose another with --release-evidence-dir (or release.evidence in the plan)")
    _default_reports(config, tree)
    recorder = Recorder(config, plan, tree, settings.stages, workflow, kinds=kinds, state=state)
    config.pluginmanager.register(recorder, RECORDER)
    resume = find_unfinished(settings.evidence_dir / "rollback" / "procedures")
    if resume is not None and resume.start.get("trigger") not in plan.triggers:
        resume = None
    asked_by = f"--release-workflow {settings.workflow}" if workflow else "--release-rollback"
    controller = RollbackController(config, plan, kinds, tree, recorder, manual=manual, asked_by=asked_by,
                                    on_interrupt=settings.rollback_on_interrupt, resume=resume)
    config.pluginmanager.register(controller, ROLLBACK)
    config.pluginmanager.register(People(config, plan, kinds, tree, recorder, manual=manual is not None), PEOPLE)
    if resume is not None:
        return f"not run: this run resumes the rollback interrupted in run {resume.run_id}"
    if manual is not None:
        return f"not run: {asked_by} asks for a rollback, not for the gates"
    return ""


def _default_reports(config: pytest.Config, tree: EvidenceTree) -> None:
    """JUnit XML and a self-contained HTML report go to the run's evidence unless asked elsewhere
    (then the recorder copies them into the evidence when the session ends)."""
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(tree.run_dir / "junit.xml")
    if hasattr(config.option, "htmlpath") and not config.option.htmlpath:
        config.option.htmlpath = str(tree.run_dir / "report.html")
        config.option.self_contained_html = True


def configure_node(node: Any) -> None:
    """pytest-xdist (controller): hand the run's record directory to each worker."""
    session = node.config.stash.get(RUN, None)
    if session is not None:
        node.workerinput[STATE_KEY] = str(session.state.directory)
        node.workerinput[SKIP_KEY] = session.schedule.skip_all


def unconfigure(config: pytest.Config) -> None:
    for name in (RECORDER, ROLLBACK):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)
    session = config.stash.get(RUN, None)
    if session is not None and session.owns_state:
        shutil.rmtree(session.state.directory, ignore_errors=True)


def collect_file(file_path: Path, parent: pytest.Collector) -> PlanFile | None:
    session = parent.config.stash.get(RUN, None)
    if session is None or file_path.resolve() != session.settings.plan:
        return None
    node = PlanFile.from_parent(parent, path=file_path)
    node.plan, node.kinds, node.stage_names = session.plan, session.kinds, session.settings.stages
    return node


def collection_finish(session: pytest.Session) -> None:
    release = session.config.stash.get(RUN, None)
    if release is not None:
        release.items = [i for i in session.items if isinstance(i, CheckItem)]
        release.schedule.collected(release.items)


def report_header(config: pytest.Config) -> list[str] | None:
    session = config.stash.get(RUN, None)
    if session is None:
        return None
    plan = session.plan
    stages = ", ".join(session.settings.stages or [s.name for s in plan.stages])
    lines = [f"pytest-release {__version__}: {plan.title} from {plan.display} "
             f"(sha256 {plan.sha256[:12]}), stages: {stages}",
             f"evidence: {session.settings.evidence_dir}"]
    if plan.time_scale != 1.0:
        lines.append(f"pytest-release: TIME SCALE {plan.time_scale:g}: a rehearsal; every budget, window and "
                     f"interval is {plan.time_scale:g} x the plan's")
    if plan.not_acted_on:
        lines.append(f"pytest-release: {len(plan.not_acted_on)} part(s) of the plan are validated but not "
                     "acted on by this version (listed in the summary)")
    return lines


# -- running a check ----------------------------------------------------------------------------


def before_protocol(item: pytest.Item) -> None:
    """Before a check's run protocol (setup, call, teardown): the schedule decides; here its
    answer becomes pytest's: a skip in setup, the deadline, a pytest-timeout marker, the live
    line of a monitoring window."""
    release = item.config.stash.get(RUN, None)
    if release is None or not isinstance(item, CheckItem):
        return
    decision = release.schedule.decide(item)
    if decision.blocked is not None:
        item.stash[BLOCKED] = decision.blocked
    item.stash[DEADLINE] = decision.deadline
    if decision.opens_window:
        # The first monitoring item of a stage opens its window and, in a terminal, shows its
        # progress until the window closes (this runs before the item's setup, outside capture).
        assert release.monitoring is not None
        window = release.monitoring.open(item.stage.name)
        if window is not None and not hasattr(item.config, "workerinput"):
            _watch(item.config, window, item.gate_id)
    if decision.early is not None:
        item.stash[EARLY] = decision.early  # its runtest waits for it within the deadline
    elif hasattr(signal, "SIGALRM"):
        left = max(decision.deadline - time.monotonic(), 0.0)
        item.add_marker(pytest.mark.timeout(round(left + GRACE, 2), method="signal"))


def _watch(config: pytest.Config, window: GateWindow, gate_id: str) -> None:
    """One updating line per monitoring gate: elapsed and remaining time, samples, values against
    thresholds. A terminal gets it rewritten in place; a log (CI) gets a line every tenth of the
    window (at least every second, at most every 30 seconds)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or window.done():
        return
    tty = bool(getattr(tr, "isatty", False))
    longest = max((run.window for run in window.runs), default=1.0)
    period = 0.25 if tty else min(max(longest / 10, 1.0), 30.0)
    width = shutil.get_terminal_size().columns - 1  # a rewritten line must not wrap

    def show(final: bool = False) -> None:
        line = window.progress.line(gate_id)
        if not tty:
            tr.write_line(line)
            return
        tr.rewrite(line if len(line) <= width else line[:width - 3] + "...", erase=True)
        if final:
            tr.write_line("")

    tr.ensure_newline()
    while not window.done():
        show()
        for _ in range(int(period / 0.05)):
            if window.done():
                break
            time.sleep(0.05)
    show(final=True)


def make_report(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> pytest.TestReport:
    """A check's report as pytest made it, with its verdict and its structured result (see
    :mod:`pytest_release.result`); after teardown the verdict goes to the schedule.

    A failed check of a gate with ``required: false`` is a warning: the report's outcome is
    ``passed`` (pytest's exit code, ``-x`` and ``--lf`` leave it alone) and it says what it is
    everywhere: status ``W``/``WARNED`` in the terminal (see :func:`report_teststatus`),
    ``release_verdict=warning`` in JUnit XML, a badge in the HTML report. It is no xfail and no skip."""
    if not isinstance(item, CheckItem):
        return report
    release = item.config.stash[RUN]
    result = item.stash[RESULT]
    if report.failed and not item.gate.required:
        report.outcome = "passed"
        result.verdict = Verdict.WARNING
    elif report.failed:
        result.verdict = Verdict.FAILED
    elif report.skipped and result.verdict == Verdict.PASSED:
        result.verdict = Verdict.SKIPPED
        if isinstance(report.longrepr, tuple):
            # A skip speaks of the plan line of the check, not of the plugin's code.
            path, line, _ = item.reportinfo()
            report.longrepr = (item.plan.display, (line or 0) + 1, report.longrepr[2])
    if result.verdict in (Verdict.FAILED, Verdict.WARNING) and not result.summary:
        result.summary = redact(_first_line(report), item.plan.secrets)
    shared = item.stash.get(CARRIED, None)
    if call.when == "teardown" and report.passed and shared is not None:
        carried, properties = shared  # nothing changed since the call: its report's, not a copy
    elif call.when == "setup" and report.passed:
        carried, properties = result.as_dict(), []  # the check has not run: its properties come with the call
    else:
        carried, properties = result.as_dict(), check_properties(result)
        if call.when == "call":
            item.stash[CARRIED] = (carried, properties)
    setattr(report, ATTRIBUTE, carried)
    report.user_properties.extend(properties)
    if call.when == "teardown":
        if CARRIED in item.stash:
            del item.stash[CARRIED]
        release.schedule.finished(item.nodeid, item, result.verdict, result.summary or "see the report")
    return report


def _first_line(report: pytest.TestReport) -> str:
    text = report.longreprtext.strip()
    return text.splitlines()[0] if text else "failed"


def report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """A warning is counted and shown as what it is: ``W`` / ``WARNED``, "N warned" in the summary line."""
    if report.when == "call" and verdict_of(report) == Verdict.WARNING:
        return "warned", "W", "WARNED"
    return None


def terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    release = config.stash.get(RUN, None)
    if release is None:
        return
    tr = terminalreporter
    plan = release.plan
    warned = _results(tr.stats.get("warned", []))
    failed = _results(tr.stats.get("failed", []))
    skipped = _results(tr.stats.get("skipped", []))
    not_checked = [(r, res) for r, res in skipped if res.not_checked]
    stages_blocked: dict[str, str] = {}  # one line per stage: why it was skipped
    for _, res in skipped:
        if res.blocked is not None and res.blocked.blocks_stage:
            stages_blocked.setdefault(res.stage, res.blocked.reason)
    tr.section("pytest-release", sep="=")
    if failed:
        gates = sorted({res.gate_id for _, res in failed})
        tr.write_line(f"{plan.title}: required gate(s) failed: {', '.join(gates)}", red=True,
                      bold=True)
    elif tr.stats.get("error"):
        tr.write_line(f"{plan.title}: errors stopped the run", red=True, bold=True)
    else:
        tr.write_line(f"{plan.title}: every required gate that ran passed", green=True, bold=True)
    recorder = config.pluginmanager.get_plugin(RECORDER)
    rollback = recorder.rollback if recorder is not None else None
    if recorder is not None and rollback is not None:
        resumed = f" (resumed the rollback of run {rollback.resumed_from})" if rollback.resumed_from else ""
        if rollback.outcome == "rolled_back":
            asked = " (as asked: exit 0)" if rollback.trigger == "manual_trigger" else ""
            tr.write_line(f"ROLLED BACK{asked}{resumed}: {rollback.trigger}: every step passed and verify passed",
                          yellow=True, bold=True)
            if rollback.steps and rollback.steps[-1].verdict == "passed":
                tr.write_line(f"  verify: {redact(rollback.steps[-1].result.summary, plan.secrets)}")
        else:
            step = rollback.failed_step
            tr.write_line(f"ROLLBACK FAILED{resumed}: THE SYSTEM MAY BE INCONSISTENT", red=True, bold=True)
            if step is not None:
                tr.write_line(f"  step {step.key} ({step.action}) failed: {redact(step.result.summary, plan.secrets)}",
                              red=True)
                for line in step.result.details[-20:]:
                    tr.write_line(f"    {redact(line, plan.secrets)}")
        tr.write_line(f"{len(rollback.steps)} rollback step(s) are reported as results beside the "
                      f"{len(recorder.outcomes)} checks: pytest's counts below add both")
    if release.workflow is not None and recorder is not None:
        stages = summarize(plan, None, recorder.outcomes, exitstatus, rollback).stages
        verdicts = {s.name: s.verdict for s in stages}
        steps = release.workflow.record(verdicts, rollback.outcome if rollback else None)["steps"]
        tr.write_line(f"workflow {release.workflow.workflow.name}: "
                      + ", ".join(f"{s['step']} {s['verdict']}" for s in steps))
    analytics = recorder.analytics if recorder is not None else None
    if analytics is not None:
        if analytics.error:
            tr.write_line(redact(f"analytics: this run is not in the history: {analytics.error}", plan.secrets),
                          yellow=True)
        for metric in analytics.metrics:
            if metric.error:
                tr.write_line(redact(f"analytics: metric {metric.error}", plan.secrets), yellow=True)
        for analysis in analytics.analyses:
            tr.write_line(redact(f"analytics: {analysis.line()}", plan.secrets), yellow=analysis.verdict != "steady")
    for report, result in failed:
        tr.write_line(f"FAILED   {_shown(plan, report)}: {result.summary or _first_line(report)}")
    for report, result in warned:
        tr.write_line(f"WARNING  {_shown(plan, report)}: {result.warning_line(_first_line(report))}", yellow=True)
    for reason in stages_blocked.values():
        tr.write_line(f"SKIPPED  {reason}", yellow=True)
    if not_checked:
        tr.write_line(f"NOT CHECKED ({len(not_checked)} item(s); they did not count towards any gate):",
                      yellow=True)
        for reason, count in _count(res.not_checked for _, res in not_checked):
            tr.write_line(f"  {count} x {reason}")
    if plan.not_acted_on:
        tr.write_line("NOT ACTED ON by this version (validated only):", yellow=True)
        for note in plan.not_acted_on:
            tr.write_line(f"  {note}")
    xml = getattr(config.option, "xmlpath", None)
    html = getattr(config.option, "htmlpath", None)
    for label, path in (("JUnit XML", xml), ("HTML report", html)):
        if path:
            tr.write_line(f"{label}: {path}")


def _shown(plan: Plan, report: pytest.TestReport) -> str:
    """A check's node id with the plan path as the user gave it (relative to where pytest runs)."""
    return f"{plan.display}::{report.nodeid.partition('::')[2]}"


def _results(reports: list[Any]) -> list[tuple[pytest.TestReport, ItemResult]]:
    """The reports of release checks among ``reports``, each with its result."""
    return [(r, res) for r in reports if (res := result_of(r)) is not None]


def _count(values: Iterator[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return list(counts.items())
