"""The release summary: one verdict for the run, the stages in order with their gates, and the
checks that failed or warned, measured against expected. Built from check outcomes alone (so it
works on the xdist controller), rendered for the HTML report, the terminal and CI (Markdown).
"""

from __future__ import annotations

import html

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import MONITOR, Plan
from .records import gate_verdict
from .rollback.runner import RollbackResult

__all__ = ["CheckOutcome", "GateSummary", "RunSummary", "StageSummary", "badge", "summarize"]

BANNERS = {
    "released": "RELEASED",
    "passed": "PASSED",
    "blocked": "BLOCKED",
    "rolled_back": "ROLLED BACK",
    "rollback_failed": "ROLLBACK FAILED",
    "interrupted": "INTERRUPTED",
    "error": "ERROR",
}


@dataclass(slots=True)
class CheckOutcome:
    """What one check item came to, as the controller learns it from the reports (one per check,
    kept to the end of the run: slots, not a ``__dict__`` each)."""

    nodeid: str
    name: str
    stage: str
    gate: str
    kind: str
    target: str | None
    required: bool
    verdict: str = "skipped"
    summary: str = ""
    message: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0
    worker: str = "main"
    record: str | None = None  # the check record's path in the evidence tree
    #: Skipped because an earlier stage failed or never finished (the schedule said so).
    blocked: bool = False

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 0.0)


@dataclass
class GateSummary:
    name: str
    required: bool
    budget: float
    verdict: str
    checks: list[CheckOutcome]

    @property
    def duration(self) -> float:
        ran = [c for c in self.checks if c.end]
        return max(c.end for c in ran) - min(c.start for c in ran) if ran else 0.0

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for check in self.checks:
            counts[check.verdict] = counts.get(check.verdict, 0) + 1
        return counts


@dataclass
class StageSummary:
    name: str
    verdict: str  # passed, failed, skipped (blocked by an earlier stage), not_selected, not_run
    reason: str
    gates: list[GateSummary]


@dataclass
class RunSummary:
    title: str
    outcome: str
    stages: list[StageSummary]
    exit_status: int
    rollback: RollbackResult | None = None

    @property
    def banner(self) -> str:
        """RELEASED, BLOCKED, ROLLED BACK, ...; ``ROLLED BACK (as asked)`` for an operator's
        rollback that succeeded (it exits 0, where a rollback the run fired itself exits 1)."""
        asked = self.outcome == "rolled_back" and self.rollback is not None and self.rollback.trigger == "manual_trigger"
        return BANNERS[self.outcome] + (" (as asked)" if asked else "")

    def attention(self) -> list[CheckOutcome]:
        """Checks that failed or warned, in plan order."""
        return [c for s in self.stages for g in s.gates for c in g.checks if c.verdict in ("failed", "warning")]


def summarize(plan: Plan, selected: Sequence[str] | None, outcomes: Mapping[str, CheckOutcome],
              exit_status: int, rollback: RollbackResult | None = None) -> RunSummary:
    """The run's summary from the plan and the outcomes of its checks (by node id)."""
    by_gate: dict[tuple[str, str], list[CheckOutcome]] = {}
    for check in outcomes.values():
        by_gate.setdefault((check.stage, check.gate), []).append(check)
    stages = []
    for stage in plan.stages:
        gates = []
        for gate in plan.stage_gates(stage):
            checks = by_gate.get((stage.name, gate.name), [])
            gates.append(GateSummary(gate.name, gate.required, gate.timeout,
                                     gate_verdict((c.verdict for c in checks), gate.required), checks))
        stages.append(_stage(stage.name, gates, selected))
    failed = any(s.verdict == "failed" for s in stages)
    if rollback is not None:
        outcome = rollback.outcome
    elif exit_status == 2:
        outcome = "interrupted"
    elif failed:
        outcome = "blocked"
    elif exit_status not in (0, 5):
        outcome = "error"
    elif all(s.verdict not in ("not_selected", "not_run") for s in stages):
        outcome = "released"
    else:
        outcome = "passed"
    return RunSummary(plan.title, outcome, stages, exit_status, rollback)


def _stage(name: str, gates: list[GateSummary], selected: Sequence[str] | None) -> StageSummary:
    if selected is not None and name not in selected:
        return StageSummary(name, "not_selected", "not selected with --release-stage", gates)
    checks = [c for g in gates for c in g.checks]
    blocked = [c for c in checks if c.verdict == "skipped" and c.blocked]
    if any(g.verdict == "failed" for g in gates):
        return StageSummary(name, "failed", "a required gate failed", gates)
    if checks and len(blocked) == len(checks):
        return StageSummary(name, "skipped", blocked[0].message, gates)
    if not any(c.verdict in ("passed", "warning") for c in checks):
        return StageSummary(name, "not_run", "no check of this stage ran", gates)
    return StageSummary(name, "passed", "", gates)


# -- rendering ----------------------------------------------------------------------------------

#: The colour of each verdict and outcome in the HTML report and the history page.
COLOURS = {"passed": "#1a7f37", "released": "#1a7f37", "failed": "#cf222e", "blocked": "#cf222e",
           "warning": "#9a6700", "warned": "#9a6700", "skipped": "#6e7781",
           "not_run": "#6e7781", "not_selected": "#6e7781",
           "rollback_failed": "#cf222e", "rolled_back": "#9a6700", "interrupted": "#cf222e",
           "error": "#cf222e"}
GREY = "#6e7781"


def colour(verdict: str | None) -> str:
    """The colour of a verdict or outcome (grey for one it does not know)."""
    return COLOURS.get(verdict or "", GREY)


def badge(verdict: str) -> str:
    """A verdict as a coloured badge (HTML), as the summary's tables show it (pytest-html's
    results table shows a warning's result with it)."""
    return (f'<span class="release-verdict" style="color:#fff;background:{colour(verdict)};border-radius:3px;'
            f'padding:0 6px">{html.escape(verdict.replace("_", " "))}</span>')


def _plain(values: Mapping[str, Any]) -> str:
    """Figures inline; structured values (a histogram, a list of rows) stay in the record."""
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()
                     if not isinstance(v, list)) or "-"


def render_html(summary: RunSummary, link: Callable[[CheckOutcome], str | None]) -> str:
    """The summary as an HTML fragment for pytest-html (``templates/summary.html.j2``);
    ``link(check)`` gives a check record's URL."""
    from .rendering import render

    checks = [c for st in summary.stages for g in st.gates for c in g.checks]
    latency = [(c, latency_chart(c.measured["latency_histogram"])) for c in checks
               if isinstance(c.measured.get("latency_histogram"), list)]
    windows = []
    for check in checks:
        if check.kind != MONITOR or not check.measured.get("samples_detail"):
            continue
        fired = [a for a in check.measured.get("alerts") or [] if a.get("fired")]
        alerts = "; ".join(f"alert {a['alert']} fired at {a['at_s']}s ({a['share']:.1%} good < "
                           f"{a['threshold']:.1%} over {a['window_s']}s)" for a in fired)
        chart = samples_chart(check.measured["samples_detail"], float(check.expected.get("window_s") or 0),
                              [float(a["at_s"]) for a in fired])
        windows.append((check, chart, alerts))
    attention = [(check, link(check)) for check in summary.attention()]
    return render("summary.html.j2", {"colour": colour, "plain": _plain},
                  summary=summary, latency=latency, windows=windows, attention=attention)


@dataclass(frozen=True)
class Bar:
    x: float
    height: float
    upper: float  # the bucket's upper bound, ms
    count: int
    labelled: bool  # its bound is written under the axis


@dataclass(frozen=True)
class LatencyChart:
    """A latency histogram's bar chart (``charts.html.j2``)."""

    width: int
    height: int
    top: int  # the highest count
    bar_width: float
    bars: list[Bar]


def latency_chart(histogram: Sequence[Sequence[float]], width: int = 360, height: int = 140) -> LatencyChart | None:
    """The bars of a latency histogram: ``[[upper bound ms, count], ...]``; ``None`` without one."""
    buckets = [(float(upper), int(count)) for upper, count in histogram if count is not None]
    if not buckets:
        return None
    top = max(count for _, count in buckets) or 1
    step = (width - 40) / len(buckets)
    every = max(len(buckets) // 6, 1)
    bars = [Bar(32 + index * step, (height - 35) * count / top, upper, count, index % every == 0)
            for index, (upper, count) in enumerate(buckets)]
    return LatencyChart(width, height, top, max(step - 2, 1), bars)


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    good: bool
    t_s: object
    check: object
    summary: object


@dataclass(frozen=True)
class SamplesChart:
    """A monitoring window's timeline (``charts.html.j2``)."""

    width: int
    height: int
    span: float  # seconds the x axis covers
    dots: list[Dot]
    alerts: list[float]  # x of each alert that fired


def samples_chart(samples: Sequence[Mapping[str, Any]], window: float, alerts: Sequence[float],
                  width: int = 420, height: int = 90) -> SamplesChart:
    """A monitoring window's timeline: one dot per sample at its time (green good, red bad; a
    Prometheus sample at its value's height), a dashed red line where an alert fired."""
    span = max([window, *(float(s["t_s"]) for s in samples), *alerts, 0.001])
    numeric = [float(s["value"]) for s in samples if isinstance(s.get("value"), (int, float))]
    low, high = (min(numeric), max(numeric)) if numeric else (0.0, 1.0)

    def x(t: float) -> float:
        return 10 + (width - 20) * t / span

    def y(sample: Mapping[str, Any]) -> float:
        value = sample.get("value")
        if isinstance(value, (int, float)) and high > low:
            return height - 20 - (height - 35) * (float(value) - low) / (high - low)
        return height / 2 - 5 if sample["good"] else height - 25

    dots = [Dot(x(float(s["t_s"])), y(s), bool(s["good"]), s["t_s"], s["check"], s["summary"]) for s in samples]
    return SamplesChart(width, height, span, dots, [x(at) for at in alerts])


def render_markdown(summary: RunSummary, evidence: str, history: str | None = None) -> str:
    """A short Markdown summary for CI job pages (``GITHUB_STEP_SUMMARY``)."""
    lines = [f"### {summary.banner}: {summary.title}", "", "| stage | gate | verdict | duration |",
             "| --- | --- | --- | --- |"]
    for stage in summary.stages:
        for gate in stage.gates:
            lines.append(f"| {stage.name} | {gate.name} | {gate.verdict} | {gate.duration:.2f}s |")
        if not stage.gates:
            lines.append(f"| {stage.name} | | {stage.verdict} | |")
    if summary.rollback is not None:
        lines += ["", f"Rollback ({summary.rollback.trigger}): {summary.rollback.reason}", "",
                  "| step | verdict | summary |", "| --- | --- | --- |"]
        lines += [f"| `{s.key}` | {s.verdict} | {s.result.summary.replace('|', chr(92) + '|')} |"
                  for s in summary.rollback.steps]
    attention = summary.attention()
    if attention:
        lines += ["", "| check | verdict | measured | expected |", "| --- | --- | --- | --- |"]
        for check in attention:
            cells = (_plain(check.measured), _plain(check.expected))
            measured, expected = (c.replace("|", "\\|") for c in cells)
            lines.append(f"| `{check.stage}::{check.gate}::{check.name}` | {check.verdict} | {measured} | {expected} |")
    lines += ["", f"Evidence: `{evidence}`", ""]
    if history:  # in the evidence artifact: every sealed run and the delivery metrics
        lines[-1:] = [f"History: `{history}` (every sealed run, delivery metrics)", ""]
    return "\n".join(lines)
