"""The history page: ``EVIDENCE/index.html``, every sealed run newest first, and delivery metrics.

Rewritten after every run seals its evidence, and by ``python -m pytest_release index DIR``. It
reads only sealed runs (``runs/RUN_ID/manifest.json``), from their ``summary.json`` and
``delivery.json`` (see :mod:`delivery`), so what it shows is what ``verify`` can check. The page
is one self-contained file (inline CSS, SVG and a little JavaScript to filter): no manifest lists
it, since every run rewrites it, and ``verify`` leaves it out.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .delivery import DAY, DEFINITIONS, Metrics, RunFacts, compute, weekly
from .fsutil import atomic_write
from .summary import BANNERS, colour

__all__ = ["INDEX", "PERIODS", "build_index", "load_runs", "render", "write_index"]

INDEX = "index.html"
#: The periods the page offers: (key, label, days; ``None``: every run).
PERIODS = (("all", "all runs", None), ("7d", "last 7 days", 7), ("30d", "last 30 days", 30),
           ("90d", "last 90 days", 90))
ALL = "*"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def load_runs(root: Path) -> list[RunFacts]:
    """Every sealed run of the evidence directory ``root``, newest first."""
    runs: list[RunFacts] = []
    runs_dir = root / "runs"
    try:
        names = sorted(os.listdir(runs_dir), reverse=True)
    except OSError:
        return runs
    for run_id in names:
        run_dir = runs_dir / run_id
        try:
            files = set(os.listdir(run_dir))
        except OSError:
            continue
        if "manifest.json" not in files or "summary.json" not in files:
            continue  # not sealed: not history yet
        summary = _read_json(run_dir / "summary.json")
        if not isinstance(summary, dict):
            continue
        delivery = _read_json(run_dir / "delivery.json") if "delivery.json" in files else None
        trigger = None
        if delivery is None:
            triggers = sorted((root / "rollback" / "triggers" / run_id).glob("*.json"))
            trigger = _read_json(triggers[0]) if triggers else None
        report = f"runs/{run_id}/report.html" if "report.html" in files else None
        facts = RunFacts.from_record(run_id, summary, delivery if isinstance(delivery, dict) else None,
                                     trigger if isinstance(trigger, dict) else None, report)
        if "notifications.json" in files:
            record = _read_json(run_dir / "notifications.json")
            if isinstance(record, dict) and isinstance(record.get("counts"), dict):
                facts.notifications = {str(k): int(v) for k, v in record["counts"].items()}
        runs.append(facts)
    runs.sort(key=lambda r: (r.start, r.run_id), reverse=True)
    return runs


# -- formatting ---------------------------------------------------------------------------------


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m {int(value % 60)}s"
    if value < DAY:
        return f"{int(value // 3600)}h {int(value % 3600 // 60)}m"
    return f"{value / DAY:.1f}d"


def fmt_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}" if value in (0.0, 1.0) else f"{value:.1%}"


def weekly_svg(weeks: Sequence[tuple[float, int, int, int]], width: int = 560, height: int = 160) -> str:
    """Stacked bars per week: released (green), failed deployments (red), nothing deployed (grey)."""
    esc = html.escape
    top = max((a + b + c for _, a, b, c in weeks), default=0) or 1
    step = min((width - 50) / max(len(weeks), 1), 48.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="history-weekly" width="{width}" height="{height}" '
             f'role="img" aria-label="runs per week">',
             f'<line x1="40" y1="{height - 22}" x2="{width - 5}" y2="{height - 22}" stroke="#888"/>',
             f'<text x="2" y="14" font-size="10">{top}</text><text x="2" y="{height - 24}" font-size="10">0</text>']
    for index, (week, released, failed, other) in enumerate(weeks):
        x = 42 + index * step
        y = height - 22.0
        label = datetime.fromtimestamp(week, timezone.utc).strftime("%Y-%m-%d")
        for count, fill, what in ((released, "#1a7f37", "released"), (failed, "#cf222e", "failed deployments"),
                                  (other, "#afb8c1", "not deployed")):
            if not count:
                continue
            bar = (height - 40) * count / top
            y -= bar
            parts.append(f'<rect class="history-bar-{what.split()[0]}" x="{x:.1f}" y="{y:.1f}" '
                         f'width="{max(step - 2, 1):.1f}" height="{bar:.1f}" fill="{fill}">'
                         f'<title>week of {esc(label)}: {count} {esc(what)}</title></rect>')
        if index % max(len(weeks) // 6, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="9">{esc(label[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def restore_svg(runs: Sequence[RunFacts], median: float | None, width: int = 560, height: int = 160) -> str:
    """One bar per restored failure, oldest first (its height: the time to restore), and the median."""
    esc = html.escape
    restored = sorted((r for r in runs if r.time_to_restore is not None), key=lambda r: r.start)[-120:]
    if not restored:
        return '<p class="history-empty">no restored failure in this period</p>'
    top = max(r.time_to_restore or 0.0 for r in restored) or 1.0
    step = min((width - 50) / len(restored), 48.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="history-restore" width="{width}" height="{height}" '
             'role="img" aria-label="time to restore per failure">',
             f'<line x1="40" y1="{height - 22}" x2="{width - 5}" y2="{height - 22}" stroke="#888"/>',
             f'<text x="2" y="14" font-size="10">{esc(fmt_seconds(top))}</text>']
    for index, run in enumerate(restored):
        value = run.time_to_restore or 0.0
        bar = (height - 40) * value / top
        x = 42 + index * step
        parts.append(f'<rect x="{x:.1f}" y="{height - 22 - bar:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{bar:.1f}" fill="#9a6700"><title>{esc(run.run_id)} ({esc(run.version)}): '
                     f'{esc(fmt_seconds(value))} to restore</title></rect>')
    if median is not None:
        y = height - 22 - (height - 40) * median / top
        parts.append(f'<line class="history-median" x1="40" y1="{y:.1f}" x2="{width - 5}" y2="{y:.1f}" '
                     f'stroke="#0550ae" stroke-dasharray="5 3"/><text x="{width - 110}" y="{y - 3:.1f}" '
                     f'font-size="10" fill="#0550ae">median {esc(fmt_seconds(median))}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- the page -----------------------------------------------------------------------------------


@dataclass
class Block:
    """The metrics of one release name (or all) over one period."""

    release: str
    period: str
    label: str
    metrics: Metrics
    weekly: str
    restore: str


def _blocks(runs: Sequence[RunFacts], now: float, index_of: dict[str, int]) -> list[dict[str, Any]]:
    names = sorted({r.release for r in runs})
    blocks = []
    for release in [ALL, *names]:
        subset = [r for r in runs if release == ALL or r.release == release]
        for key, label, days in PERIODS:
            since = now - days * DAY if days is not None else None
            metrics = compute(subset, since, now)
            ids = lambda chosen: " ".join(str(index_of[r.run_id]) for r in chosen)  # noqa: E731
            blocks.append({
                "release": release, "period": key, "label": label, "metrics": metrics,
                "weekly": weekly_svg(weekly(metrics.runs, since, now)),
                "restore": restore_svg(metrics.restored, metrics.median_restore),
                "ids": {"runs": ids(metrics.runs), "released": ids(metrics.went_out),
                        "failed": ids(metrics.failed), "deployed": ids(metrics.deployed),
                        "restored": ids(metrics.restored), "not_restored": ids(metrics.not_restored),
                        "rollbacks": ids(metrics.rollbacks), "monitored": ids(metrics.monitored)},
            })
    return blocks


def render(runs: Sequence[RunFacts], *, title: str = "Release history", now: float | None = None) -> str:
    """The page for ``runs`` (newest first), from ``templates/history.html.j2``."""
    from markupsafe import Markup

    from .rendering import render as render_template

    now = time.time() if now is None else now
    index_of = {r.run_id: i for i, r in enumerate(runs)}
    blocks = _blocks(runs, now, index_of)
    for block in blocks:
        block["weekly"], block["restore"] = Markup(block["weekly"]), Markup(block["restore"])
    outcomes = sorted({r.outcome for r in runs})
    filters: dict[str, Callable[..., str]] = {"seconds": fmt_seconds, "when": fmt_time, "rate": fmt_rate, "colour": colour}
    return render_template(
        "history.html.j2", filters,
        title=title, runs=runs, blocks=blocks, names=sorted({r.release for r in runs}), outcomes=outcomes,
        banners=BANNERS, periods=PERIODS, definitions=DEFINITIONS, generated=fmt_time(now), all_key=ALL, now=now)


def build_index(root: Path, now: float | None = None) -> str:
    runs = load_runs(root)
    names = ", ".join(sorted({r.release for r in runs})) or str(root)
    return render(runs, title=f"Release history: {names}", now=now)


def write_index(root: Path, now: float | None = None) -> Path:
    """Write ``root/index.html`` atomically (a reader sees the old page or the new one)."""
    text = build_index(root, now)
    path = root / INDEX
    atomic_write(path, text.encode("utf-8"))
    return path
