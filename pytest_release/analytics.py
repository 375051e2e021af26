"""Analytics: every run's results go into a history store, and trends come out of it.

At the end of a run (on the controller, once, also under xdist), when the plan has an
``analytics`` section:

1. Each analytics metric turns the run into samples, one number per series:
   ``system_metrics`` the run's own figures (checks passed, failed and skipped, pass rate, run and
   gate durations, whether it rolled back); ``KIND_metrics`` (``performance_metrics``) every
   number that checks of that kind measured (``p95_ms``, ``rps``, ``latency_ms``); a metric with
   ``source: {sql: ..., target: ...}`` one number from a data store (a business figure).
2. The run, its check verdicts and the samples go into the history store, shared by every run of
   the release: SQLite (``EVIDENCE/analytics/history.sqlite`` by default) or PostgreSQL
   (``store: postgresql://...``, for many CI runners). Rows older than their entry's
   ``retention`` are deleted.
3. Each analysis reads its metric's history over its ``retention``: per series a trend (the mean
   per ``interval``), and this run against the previous release (the latest other version in the
   store; the previous run when there is none): a figure worse by more than ``tolerance`` is a
   regression. ``system_analysis`` also lists checks that passed in the previous release and fail
   now, and checks that flip between verdicts within this version (flaky).

What a run added and concluded is evidence (``analytics/metrics``, ``analytics/analysis``,
sealed with the run); the store is the history those records came from. Analytics informs and
never changes a run's verdict; a store that cannot be reached is reported, not fatal.
"""

from __future__ import annotations

import decimal
import math
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import CheckContext
from .checks.stores import StoreError, open_store
from .db import PSYCOPG_MISSING, DatabaseError, dsn_label, is_postgres, open_postgres, open_sqlite
from .evidence import HISTORY
from .model import AnalyticsMetric, Analysis, Plan
from .secrets import scrub_value
from .summary import CheckOutcome, RunSummary

__all__ = ["AnalyticsRun", "HistoryError", "HistoryStore", "run_analytics", "samples_of"]

#: How long a SQL source or the history store may take (seconds).
BUDGET = 30.0
#: Figures where a higher value is worse, by the last part of the series name (else lower is worse
#: for LOWER_IS_WORSE, and a change without a direction is only reported).
HIGHER_IS_WORSE = ("_ms", "_s", "error_rate", "failed", "rolled_back", "errors")
LOWER_IS_WORSE = ("rps", "pass_rate", "throughput")
#: A time grows by more than this before it can be a regression, whatever its share: small times
#: are noisy (a gate of 6 ms that takes 9 ms is not slower in any sense that matters).
TIME_FLOOR = {"_ms": 50.0, "_s": 1.0}
#: Figures of a check that are bookkeeping, not measurements.
NOT_FIGURES = {"attempts", "samples"}
#: Trend points kept per series.
MAX_POINTS = 200

_TABLES = (
    "CREATE TABLE IF NOT EXISTS release_runs (run_id TEXT PRIMARY KEY, release TEXT NOT NULL, "
    "version TEXT NOT NULL, plan_sha256 TEXT, time_scale DOUBLE PRECISION, started DOUBLE PRECISION, "
    "ended DOUBLE PRECISION, outcome TEXT, exit_status INTEGER)",
    "CREATE TABLE IF NOT EXISTS release_results (run_id TEXT NOT NULL, release TEXT NOT NULL, "
    "stage TEXT, gate TEXT, check_id TEXT, kind TEXT, target TEXT, verdict TEXT, duration_s DOUBLE PRECISION, "
    "at DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS release_samples (run_id TEXT NOT NULL, release TEXT NOT NULL, metric TEXT, "
    "series TEXT, value DOUBLE PRECISION, at DOUBLE PRECISION)",
    "CREATE INDEX IF NOT EXISTS release_samples_by_series ON release_samples (release, metric, series, at)",
    "CREATE INDEX IF NOT EXISTS release_results_by_run ON release_results (run_id)",
    "CREATE INDEX IF NOT EXISTS release_runs_by_release ON release_runs (release, started)",
)


class HistoryError(Exception):
    """The history store cannot be opened or written; the message is safe to show."""


class HistoryStore:
    """The history store: SQLite or PostgreSQL (:mod:`pytest_release.db`) behind the same few
    statements, written with ``?`` placeholders."""

    def __init__(self, location: str, base_dir: Path) -> None:
        self.postgres = is_postgres(location)
        try:
            if self.postgres:
                self.label = dsn_label(location)
                self.db = open_postgres(location, connect_timeout=10, statement_timeout=BUDGET)
            else:
                path = Path(location) if Path(location).is_absolute() else base_dir / location
                self.label = str(location)
                self.db = open_sqlite(path, timeout=BUDGET, label=self.label)
        except DatabaseError as exc:
            if str(exc) == PSYCOPG_MISSING:
                raise HistoryError(PSYCOPG_MISSING) from None
            verb = "connect to" if self.postgres else "open"
            raise HistoryError(f"cannot {verb} {self.label}: {exc}") from None
        for statement in _TABLES:
            self.execute(statement)
        self.commit()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A database's error as a :class:`HistoryError` (a failed statement is rolled back)."""
        try:
            yield
        except DatabaseError as exc:
            raise HistoryError(f"{self.label}: {exc}") from None

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        args = scrub_value(tuple(args))  # the run's secrets never reach the store (nor its file)
        with self._errors():
            return self.db.rows(sql, args)

    def delete(self, sql: str, args: Sequence[object] = ()) -> int:
        """Run a DELETE; how many rows it removed."""
        with self._errors():
            return self.db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self._errors():
            self.db.executemany(sql, [scrub_value(tuple(r)) for r in rows])

    def commit(self) -> None:
        with self._errors():
            self.db.commit()

    def close(self) -> None:
        self.db.close()


# -- samples ------------------------------------------------------------------------------------


def samples_of(metric: AnalyticsMetric, plan: Plan, summary: RunSummary, outcomes: Iterable[CheckOutcome],
               duration: float) -> tuple[dict[str, float], str | None]:
    """This run's samples of ``metric`` (series -> value), and an error when its source failed."""
    if metric.source == "system":
        return _system_samples(summary, list(outcomes), duration), None
    if metric.source == "checks":
        found: dict[str, float] = {}
        for outcome in outcomes:
            if outcome.kind != metric.kind or outcome.verdict not in ("passed", "failed", "warning"):
                continue
            for name, value in outcome.measured.items():
                number = _number(value)
                if number is not None and name not in NOT_FIGURES:
                    found[f"{outcome.stage}::{outcome.gate}::{outcome.name}.{name}"] = number
        return found, None
    return _sql_sample(metric, plan)


def _number(value: object) -> float | None:
    """A finite number as a float (a PostgreSQL ``numeric`` arrives as a Decimal); else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _system_samples(summary: RunSummary, outcomes: list[CheckOutcome], duration: float) -> dict[str, float]:
    counts = {v: sum(1 for o in outcomes if o.verdict == v) for v in ("passed", "failed", "warning", "skipped")}
    judged = counts["passed"] + counts["failed"] + counts["warning"]
    found = {f"checks.{v}": float(n) for v, n in counts.items()}
    if judged:
        found["checks.pass_rate"] = round(counts["passed"] / judged, 6)
    found["run.duration_s"] = round(duration, 3)
    found["run.rolled_back"] = 1.0 if summary.rollback is not None else 0.0
    for stage in summary.stages:
        for gate in stage.gates:
            if gate.verdict in ("passed", "failed", "warning"):  # it ran
                found[f"gate.{stage.name}::{gate.name}.duration_s"] = round(gate.duration, 3)
    return found


def _sql_sample(metric: AnalyticsMetric, plan: Plan) -> tuple[dict[str, float], str | None]:
    target = plan.targets[metric.target or ""]
    ctx = CheckContext(kind="analytics", params={}, target=target, base_dir=plan.base_dir,
                       gate=f"analytics metric {metric.name}", budget=BUDGET,
                       deadline=time.monotonic() + BUDGET, targets=plan.targets)
    try:
        store = open_store(ctx, target.spec)
        try:
            rows = store.query(metric.sql or "")
        finally:
            store.close()
    except StoreError as exc:
        return {}, f"{metric.name}: {exc}"
    first = rows[0][0] if rows and rows[0] else None
    value = _number(first)
    if value is None:
        got = repr(first) if rows and rows[0] else "no row"
        return {}, f"{metric.name}: the query must return one number, it returned {got}"
    return {metric.name: value}, None


# -- the run ------------------------------------------------------------------------------------


@dataclass
class MetricOutcome:
    metric: AnalyticsMetric
    samples: dict[str, float]
    error: str | None = None
    pruned: int = 0


@dataclass
class SeriesTrend:
    series: str
    current: float
    baseline: float | None
    direction: str  # "higher_is_worse", "lower_is_worse" or "unknown"
    change: float | None  # (current - baseline) / |baseline|
    regression: bool
    points: list[tuple[float, float, int]]  # (bucket start, mean, samples)

    def as_record(self) -> dict[str, Any]:
        return {"series": self.series, "current": self.current, "baseline": self.baseline,
                "direction": self.direction, "change": self.change, "regression": self.regression,
                "points": [{"t": t, "mean": m, "n": n} for t, m, n in self.points]}


@dataclass
class AnalysisOutcome:
    analysis: Analysis
    baseline: str | None = None  # "release 1.0.0" or "run RUN_ID"
    runs: int = 0
    series: list[SeriesTrend] = field(default_factory=list)
    regressed_checks: list[str] = field(default_factory=list)
    flaky_checks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def regressions(self) -> list[SeriesTrend]:
        return [s for s in self.series if s.regression]

    @property
    def verdict(self) -> str:
        if self.error:
            return "error"
        if self.regressions or self.regressed_checks:
            return "regressed"
        return "steady" if self.baseline else "no_baseline"

    def line(self) -> str:
        """One line for the terminal."""
        name = self.analysis.name
        if self.error:
            return f"{name}: not analysed: {self.error}"
        if not self.baseline:
            return f"{name}: {len(self.series)} series over {self.runs} run(s); no earlier run to compare with"
        parts = []
        for trend in self.regressions[:3]:
            change = f"{trend.change:+.0%}" if trend.change is not None else "from zero"
            parts.append(f"{trend.series} {_fmt(trend.baseline)} -> {_fmt(trend.current)} ({change})")
        if len(self.regressions) > 3:
            parts.append(f"and {len(self.regressions) - 3} more series")
        if self.regressed_checks:
            more = len(self.regressed_checks) - 3
            parts.append(f"failing now, passed in {self.baseline}: {', '.join(self.regressed_checks[:3])}"
                         + (f" and {more} more" if more > 0 else ""))
        if not parts:
            return (f"{name}: no regression against {self.baseline} ({len(self.series)} series, "
                    f"tolerance {self.analysis.tolerance:.0%})")
        count = len(self.regressions) + len(self.regressed_checks)
        return f"{name}: {count} regression(s) against {self.baseline}: " + "; ".join(parts)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


@dataclass
class AnalyticsRun:
    """What analytics did in this run."""

    store: str
    metrics: list[MetricOutcome] = field(default_factory=list)
    analyses: list[AnalysisOutcome] = field(default_factory=list)
    error: str | None = None


def default_store(evidence_root: Path) -> str:
    return str(evidence_root / HISTORY)


def run_analytics(plan: Plan, run_id: str, summary: RunSummary, outcomes: Sequence[CheckOutcome],
                  started: float, store_location: str, now: float | None = None) -> AnalyticsRun:
    """Record this run in the history store, prune it, and analyse it (see the module's text)."""
    now = time.time() if now is None else now
    result = AnalyticsRun(store=dsn_label(store_location) if is_postgres(store_location) else store_location)
    for metric in plan.analytics_metrics.values():
        samples, error = samples_of(metric, plan, summary, outcomes, now - started)
        result.metrics.append(MetricOutcome(metric, samples, error))
    try:
        store = HistoryStore(store_location, plan.base_dir)
    except HistoryError as exc:
        result.error = str(exc)
        return result
    try:
        _record(store, plan, run_id, summary, outcomes, started, now, result.metrics)
        _prune(store, plan, now, result.metrics)
        store.commit()
        for analysis in plan.analyses:
            try:
                result.analyses.append(_analyse(store, plan, run_id, analysis, now))
            except HistoryError as exc:
                result.analyses.append(AnalysisOutcome(analysis, error=str(exc)))
    except HistoryError as exc:
        result.error = str(exc)
    finally:
        store.close()
    return result


def _record(store: HistoryStore, plan: Plan, run_id: str, summary: RunSummary, outcomes: Sequence[CheckOutcome],
            started: float, now: float, metrics: Sequence[MetricOutcome]) -> None:
    store.execute("INSERT INTO release_runs (run_id, release, version, plan_sha256, time_scale, started, ended, "
                  "outcome, exit_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (run_id, plan.name, plan.version, plan.sha256, plan.time_scale, started, now, summary.outcome,
                   summary.exit_status))
    store.executemany("INSERT INTO release_results (run_id, release, stage, gate, check_id, kind, target, verdict, "
                      "duration_s, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      [(run_id, plan.name, o.stage, o.gate, f"{o.stage}::{o.gate}::{o.name}", o.kind, o.target,
                        o.verdict, round(o.duration, 6), o.end or now) for o in outcomes])
    store.executemany("INSERT INTO release_samples (run_id, release, metric, series, value, at) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      [(run_id, plan.name, m.metric.name, series, value, now)
                       for m in metrics for series, value in sorted(m.samples.items())])


def _prune(store: HistoryStore, plan: Plan, now: float, metrics: Sequence[MetricOutcome]) -> None:
    """Samples older than their metric's retention go; runs and verdicts older than the longest
    retention of the section (when every entry has one) go too."""
    for outcome in metrics:
        if outcome.metric.retention is None:
            continue
        outcome.pruned = store.delete("DELETE FROM release_samples WHERE release = ? AND metric = ? AND at < ?",
                                      (plan.name, outcome.metric.name, now - outcome.metric.retention))
    retentions = [m.retention for m in plan.analytics_metrics.values()] + [a.retention for a in plan.analyses]
    if retentions and all(r is not None for r in retentions):
        oldest = now - max(r for r in retentions if r is not None)
        store.delete("DELETE FROM release_results WHERE run_id IN (SELECT run_id FROM release_runs "
                     "WHERE release = ? AND ended < ?)", (plan.name, oldest))
        store.delete("DELETE FROM release_runs WHERE release = ? AND ended < ?", (plan.name, oldest))


def _direction(series: str) -> str:
    last = series.rpartition(".")[2]
    if last.endswith(LOWER_IS_WORSE):
        return "lower_is_worse"
    if last.endswith(HIGHER_IS_WORSE):
        return "higher_is_worse"
    return "unknown"


def _analyse(store: HistoryStore, plan: Plan, run_id: str, analysis: Analysis, now: float) -> AnalysisOutcome:
    """One analysis of the runs within its retention that were run at this run's time scale."""
    outcome = AnalysisOutcome(analysis)
    since = now - analysis.retention if analysis.retention is not None else float("-inf")
    runs = store.execute("SELECT run_id, version, outcome FROM release_runs WHERE release = ? AND time_scale = ? "
                         "AND ended >= ? ORDER BY ended, run_id", (plan.name, plan.time_scale, since))
    outcome.runs = len(runs)
    versions = {rid: version for rid, version, _ in runs}
    baseline_runs, outcome.baseline = _baseline([r for r in runs if r[0] != run_id], plan.version)
    rows = store.execute("SELECT run_id, series, value, at FROM release_samples WHERE release = ? AND metric = ? "
                         "AND at >= ? ORDER BY at", (plan.name, analysis.metric, since))
    by_series: dict[str, list[tuple[str, float, float]]] = {}
    for rid, series, value, at in rows:
        if rid in versions:
            by_series.setdefault(series, []).append((rid, float(value), float(at)))
    for series, values in sorted(by_series.items()):
        current = [v for rid, v, _ in values if rid == run_id]
        if not current:
            continue
        base = [v for rid, v, _ in values if rid in baseline_runs]
        baseline = statistics.median(base) if base else None
        direction = _direction(series)
        change = None
        if baseline is not None:
            change = (current[0] - baseline) / abs(baseline) if baseline else (0.0 if current[0] == 0 else math.inf)
        worse = change is not None and ((direction == "higher_is_worse" and change > analysis.tolerance) or
                                        (direction == "lower_is_worse" and change < -analysis.tolerance))
        floor = next((f for suffix, f in TIME_FLOOR.items() if series.endswith(suffix)), 0.0)
        if worse and baseline is not None and abs(current[0] - baseline) <= floor:
            worse = False
        outcome.series.append(SeriesTrend(series, current[0], baseline, direction,
                                          None if change is None or math.isinf(change) else round(change, 6),
                                          worse, _buckets(values, analysis.interval)))
    if analysis.checks:
        _check_verdicts(store, plan, run_id, outcome, versions, baseline_runs, since)
    return outcome


def _baseline(earlier: Sequence[tuple[str, str, str]], version: str) -> tuple[set[str], str | None]:
    """The runs to compare with, and what they are: the latest release of another version that went
    out (released or passed), else the latest earlier run of this version that did, else the latest
    other version however it ended, else the previous run."""
    went_out = [r for r in earlier if r[2] in ("released", "passed")]
    for candidates, whole_version in ((went_out, True), (went_out, False), (earlier, True), (earlier, False)):
        pool = [r for r in candidates if (r[1] != version) == whole_version]
        if not pool:
            continue
        if whole_version:
            chosen = pool[-1][1]
            return {r[0] for r in pool if r[1] == chosen}, f"release {chosen or '(no version)'}"
        return {pool[-1][0]}, f"run {pool[-1][0]}"
    return set(), None


def _buckets(values: Sequence[tuple[str, float, float]], interval: float | None) -> list[tuple[float, float, int]]:
    """The mean per ``interval`` (per run when there is none), the latest ``MAX_POINTS``."""
    groups: dict[float, list[float]] = {}
    for _rid, value, at in values:
        key = math.floor(at / interval) * interval if interval else at
        groups.setdefault(key, []).append(value)
    return [(t, round(statistics.fmean(v), 6), len(v)) for t, v in sorted(groups.items())][-MAX_POINTS:]


def _check_verdicts(store: HistoryStore, plan: Plan, run_id: str, outcome: AnalysisOutcome,
                    versions: Mapping[str, str], baseline_runs: set[str], since: float) -> None:
    """Checks failing now that passed in the baseline's last run; checks that both passed and
    failed within this version's runs (flaky). ``versions``: the runs the analysis looks at."""
    rows = [r for r in store.execute("SELECT run_id, check_id, verdict FROM release_results WHERE release = ? "
                                     "AND at >= ?", (plan.name, since)) if r[0] in versions]
    now_failing = {c for rid, c, v in rows if rid == run_id and v in ("failed", "warning")}
    last_baseline = max(baseline_runs) if baseline_runs else None  # run ids sort by time
    passed_before = {c for rid, c, v in rows if rid == last_baseline and v == "passed"}
    outcome.regressed_checks = sorted(now_failing & passed_before)
    seen: dict[str, set[str]] = {}
    for rid, check, verdict in rows:
        if versions.get(rid) == plan.version and verdict in ("passed", "failed", "warning"):
            seen.setdefault(check, set()).add("passed" if verdict == "passed" else "failed")
    outcome.flaky_checks = sorted(c for c, v in seen.items() if len(v) == 2)


# -- the report ---------------------------------------------------------------------------------


def trends_html(run: AnalyticsRun, rows_per_analysis: int = 30) -> str:
    """The analyses as an HTML fragment for the report (``templates/trends.html.j2``): per series
    now, the baseline, the change and a sparkline of its trend; regressions first."""
    from .rendering import render

    analyses = []
    for analysis in run.analyses:
        ordered = sorted(analysis.series, key=lambda t: (not t.regression, t.series))[:rows_per_analysis]
        analyses.append((analysis, [(trend, sparkline(trend.points)) for trend in ordered],
                         max(len(analysis.series) - rows_per_analysis, 0)))
    return render("trends.html.j2", {"figure": _fmt}, run=run, analyses=analyses)


@dataclass(frozen=True)
class Sparkline:
    """A trend's line (``charts.html.j2``): its points' coordinates, the last one marked."""

    width: int
    height: int
    points: list[tuple[float, float]]
    low: float
    high: float

    @property
    def count(self) -> int:
        return len(self.points)

    @property
    def last(self) -> tuple[float, float]:
        return self.points[-1]


def sparkline(points: Sequence[tuple[float, float, int]], width: int = 140, height: int = 28) -> Sparkline | None:
    """The line of a trend's points (the mean per interval); ``None`` without points."""
    if not points:
        return None
    values = [p[1] for p in points]
    low, high = min(values), max(values)
    step = (width - 8) / max(len(values) - 1, 1)

    def y(value: float) -> float:
        return height / 2 if high == low else height - 4 - (height - 8) * (value - low) / (high - low)

    return Sparkline(width, height, [(4 + i * step, y(v)) for i, v in enumerate(values)], low, high)
