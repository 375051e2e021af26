"""The release summary: one verdict for the run, the stages in order with their gates, and the
checks that failed or warned, measured against expected. Built from check outcomes alone (so it
works on the xdist controller), rendered for the HTML report, the terminal and CI (Markdown).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .plan import MONITOR, Plan
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


@dataclass
class CheckOutcome:
    """What one check item came to, as the controller learns it from the reports."""

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
    for outcome in outcomes.values():
        by_gate.setdefault((outcome.stage, outcome.gate), []).append(outcome)
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

_COLOURS = {"passed": "#1a7f37", "released": "#1a7f37", "failed": "#cf222e", "blocked": "#cf222e",
            "warning": "#9a6700", "warned": "#9a6700", "skipped": "#6e7781", "not_run": "#6e7781", "not_selected": "#6e7781",
            "rollback_failed": "#cf222e", "rolled_back": "#9a6700", "interrupted": "#cf222e",
            "error": "#cf222e"}


def _plain(values: Mapping[str, Any]) -> str:
    """Figures inline; structured values (a histogram, a list of rows) stay in the record."""
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()
                     if not isinstance(v, list)) or "-"


def badge(verdict: str) -> str:
    colour = _COLOURS.get(verdict, "#6e7781")
    return (f'<span class="release-verdict" style="color:#fff;background:{colour};border-radius:3px;'
            f'padding:0 6px">{html.escape(verdict.replace("_", " "))}</span>')


def render_html(summary: RunSummary, link: Any) -> str:
    """The summary as an HTML fragment for pytest-html; ``link(check)`` gives a check record's URL."""
    esc = html.escape
    colour = _COLOURS.get(summary.outcome, "#6e7781")
    parts = [
        '<section id="release-summary" style="margin:1em 0">',
        f'<div id="release-banner" style="background:{colour};color:#fff;font-size:1.6em;font-weight:bold;'
        f'padding:0.5em 0.8em;border-radius:4px">{esc(summary.banner)}: {esc(summary.title)}</div>',
        '<h3>Stages</h3><table id="release-stages" style="border-collapse:collapse">',
        "<tr><th align=left>stage</th><th align=left>gate</th><th align=left>verdict</th>"
        "<th align=right>duration</th><th align=left>checks</th></tr>",
    ]
    for stage in summary.stages:
        parts.append(f"<tr style='border-top:1px solid #ccc'><td><b>{esc(stage.name)}</b></td><td></td>"
                     f"<td>{badge(stage.verdict)}</td><td></td><td>{esc(stage.reason)}</td></tr>")
        for gate in stage.gates:
            counts = ", ".join(f"{n} {v}" for v, n in sorted(gate.counts().items()))
            required = "" if gate.required else " (not required)"
            parts.append(f"<tr><td></td><td>{esc(gate.name)}{required}</td><td>{badge(gate.verdict)}</td>"
                         f"<td align=right>{gate.duration:.2f}s</td><td>{esc(counts)}</td></tr>")
    parts.append("</table>")
    if summary.rollback is not None:
        rollback = summary.rollback
        resumed = f" (resumed from run {esc(rollback.resumed_from)})" if rollback.resumed_from else ""
        parts += [f"<h3>Rollback: {esc(rollback.trigger)}{resumed}</h3><p>{esc(rollback.reason)}</p>",
                  '<table id="release-rollback" style="border-collapse:collapse">',
                  "<tr><th align=left>step</th><th align=left>action</th><th align=left>verdict</th>"
                  "<th align=right>duration</th><th align=left>summary</th></tr>"]
        for step in rollback.steps:
            parts.append(f"<tr style='border-top:1px solid #ccc'><td>{esc(step.key)}</td>"
                         f"<td>{esc(step.action or '-')}</td><td>{badge(step.verdict)}</td>"
                         f"<td align=right>{step.end - step.start:.2f}s</td><td>{esc(step.result.summary)}</td></tr>")
        parts.append("</table>")
    charts = [c for st in summary.stages for g in st.gates for c in g.checks
              if isinstance(c.measured.get("latency_histogram"), list)]
    if charts:
        parts.append('<h3>Latency distributions</h3><div id="release-latency">')
        for check in charts:
            figures = ", ".join(f"{p} {check.measured.get(f'{p}_ms')}ms" for p in ("p50", "p95", "p99"))
            parts.append(f"<figure style='display:inline-block;margin:0 1em 1em 0'>"
                         f"{latency_svg(check.measured['latency_histogram'])}"
                         f"<figcaption>{esc(check.stage)}::{esc(check.gate)}::{esc(check.name)}: "
                         f"{esc(figures)} {badge(check.verdict)}</figcaption></figure>")
        parts.append("</div>")
    windows = [c for st in summary.stages for g in st.gates for c in g.checks
               if c.kind == MONITOR and c.measured.get("samples_detail")]
    if windows:
        parts.append('<h3>Monitoring windows</h3><div id="release-monitoring">')
        for check in windows:
            fired = [a for a in check.measured.get("alerts") or [] if a.get("fired")]
            alerts = "; ".join(f"alert {a['alert']} fired at {a['at_s']}s ({a['share']:.1%} good < "
                               f"{a['threshold']:.1%} over {a['window_s']}s)" for a in fired)
            chart = samples_svg(check.measured["samples_detail"], float(check.expected.get("window_s") or 0),
                                [float(a["at_s"]) for a in fired])
            parts.append(f"<figure style='display:inline-block;margin:0 1em 1em 0'>{chart}"
                         f"<figcaption>{esc(check.stage)}::{esc(check.gate)}::{esc(check.name)}: "
                         f"{esc(check.summary)} {badge(check.verdict)}"
                         f"{'<br>' + esc(alerts) if alerts else ''}</figcaption></figure>")
        parts.append("</div>")
    attention = summary.attention()
    if attention:
        parts += ['<h3>Failed and warning checks: measured against expected</h3>',
                  '<table id="release-attention" style="border-collapse:collapse">',
                  "<tr><th align=left>check</th><th align=left>verdict</th><th align=left>measured</th>"
                  "<th align=left>expected</th><th align=left>summary</th></tr>"]
        for check in attention:
            url = link(check)
            name = f"{check.stage}::{check.gate}::{check.name}"
            cell = f'<a href="{esc(url)}">{esc(name)}</a>' if url else esc(name)
            parts.append(f"<tr style='border-top:1px solid #ccc'><td>{cell}</td><td>{badge(check.verdict)}</td>"
                         f"<td>{esc(_plain(check.measured))}</td><td>{esc(_plain(check.expected))}</td>"
                         f"<td>{esc(check.summary)}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def latency_svg(histogram: Sequence[Sequence[float]], width: int = 360, height: int = 140) -> str:
    """An inline SVG bar chart of a latency histogram: ``[[upper bound ms, count], ...]``."""
    bars = [(float(upper), int(count)) for upper, count in histogram if count is not None]
    if not bars:
        return ""
    top = max(count for _, count in bars) or 1
    step = (width - 40) / len(bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="release-latency-chart" width="{width}" '
             f'height="{height}" role="img" aria-label="latency distribution">',
             f'<line x1="30" y1="{height - 20}" x2="{width - 5}" y2="{height - 20}" stroke="#888"/>']
    for index, (upper, count) in enumerate(bars):
        bar = (height - 35) * count / top
        x = 32 + index * step
        parts.append(f'<rect x="{x:.1f}" y="{height - 20 - bar:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{bar:.1f}" fill="#4a7fd1"><title>&lt;= {upper:g}ms: {count}</title></rect>')
        if index % max(len(bars) // 6, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="9">{upper:g}</text>')
    parts.append(f'<text x="2" y="12" font-size="9">{top}</text><text x="{width - 30}" y="{height - 6}" '
                 'font-size="9">ms</text></svg>')
    return "".join(parts)


def samples_svg(samples: Sequence[Mapping[str, Any]], window: float, alerts: Sequence[float],
                width: int = 420, height: int = 90) -> str:
    """An inline SVG timeline of a monitoring window: one dot per sample at its time (green good,
    red bad; a Prometheus sample at its value's height), a dashed red line where an alert fired."""
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

    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="release-samples-chart" width="{width}" '
             f'height="{height}" role="img" aria-label="monitoring samples">',
             f'<line x1="10" y1="{height - 15}" x2="{width - 10}" y2="{height - 15}" stroke="#888"/>']
    for sample in samples:
        colour = "#1a7f37" if sample["good"] else "#cf222e"
        parts.append(f'<circle cx="{x(float(sample["t_s"])):.1f}" cy="{y(sample):.1f}" r="3" fill="{colour}">'
                     f'<title>{esc(str(sample["t_s"]))}s {esc(str(sample["check"]))}: '
                     f'{esc(str(sample["summary"]))}</title></circle>')
    for at in alerts:
        parts.append(f'<line class="release-alert" x1="{x(at):.1f}" y1="5" x2="{x(at):.1f}" y2="{height - 15}" '
                     'stroke="#cf222e" stroke-dasharray="4 2"/>')
    parts.append(f'<text x="10" y="{height - 3}" font-size="9">0s</text><text x="{width - 40}" y="{height - 3}" '
                 f'font-size="9">{span:g}s</text></svg>')
    return "".join(parts)


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
