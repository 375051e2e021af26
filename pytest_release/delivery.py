"""Delivery metrics: how releases have been going, from the runs' own evidence.

Each run records its delivery facts (``runs/RUN_ID/delivery.json``, sealed with the run): whether
it deployed, when the first failure after the deploy was seen (a failed required gate, a fired
alert, a failed deploy step), the trigger and the rollback's outcome, when the rollback's final
verify passed, and how long the release spent in monitoring windows. Over a set of runs (one
release name, a period) come the metrics, defined as DORA's four keys define the first three:

* **deployment frequency**: how often a release goes out and stays: runs that deployed and ended
  RELEASED or PASSED, per day and per week of the period;
* **change failure rate**: the share of deployments that failed in production: deployed runs that
  were rolled back, whose rollback failed, or whose required gate failed after the deploy with no
  rollback, over deployed runs;
* **time to restore**: from the first failure after the deploy (failed gate, fired alert, failed
  deploy step) to the end of the rollback's final verify that passed: median and worst, over the
  failed deployments that were restored (those that were not are counted apart);
* **rollback success rate**: rollbacks that ended ROLLED BACK over rollbacks that ran (manual ones
  too);
* **time in monitoring**: the mean time a deployed release spent in its monitoring windows.

Everything here is plain Python over plain values (no pytest), so the history page and the tests
use the same definitions.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["DEFINITIONS", "Metrics", "RunFacts", "compute", "run_facts"]

WENT_OUT = ("released", "passed")
DAY = 86400.0

DEFINITIONS = {
    "deployment_frequency": "How often a release goes out and stays (DORA: deployment frequency): runs that "
                            "deployed and ended RELEASED or PASSED, per day and per week of the period.",
    "change_failure_rate": "The share of deployments that failed in production (DORA: change failure rate): "
                           "deployed runs that were rolled back, whose rollback failed, or whose required gate "
                           "failed after the deploy with no rollback, over the runs that deployed.",
    "time_to_restore": "How long it took to restore service after a failed deployment (DORA: time to restore "
                       "service): from the first failure after the deploy (a failed required gate, a fired alert, "
                       "a failed deploy step) to the end of the rollback's final verify that passed. Median and "
                       "worst over the restored failures.",
    "rollback_success_rate": "Rollbacks that ended ROLLED BACK (every step and the final verify passed) over the "
                             "rollbacks that ran, manual ones included.",
    "monitoring_time": "The mean time a deployed release spent in its monitoring windows (all stages of a run "
                       "added up), over the deployed runs that had one.",
}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class RunFacts:
    """One run, as the history page and the metrics see it."""

    run_id: str
    release: str
    version: str
    outcome: str
    start: float
    end: float
    deployed: bool
    stages: list[dict[str, Any]] = field(default_factory=list)
    trigger: str | None = None
    manual: bool = False
    rollback: str | None = None  # rolled_back, rollback_failed, or None
    rollback_reason: str = ""
    detected_at: float | None = None
    detected_by: str | None = None
    restored_at: float | None = None
    monitoring_s: float | None = None
    report: str | None = None  # relative to the evidence directory
    exit_status: int | None = None
    notifications: dict[str, int] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 0.0)

    @property
    def went_out(self) -> bool:
        return self.deployed and self.outcome in WENT_OUT

    @property
    def change_failed(self) -> bool:
        return self.deployed and self.outcome not in WENT_OUT

    @property
    def time_to_restore(self) -> float | None:
        if self.restored_at is None or self.detected_at is None:
            return None
        return max(self.restored_at - self.detected_at, 0.0)

    def as_record(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "deployed": self.deployed, "stages": self.stages,
                "start": _iso(self.start), "end": _iso(self.end), "duration_s": round(self.duration, 3),
                "trigger": self.trigger, "manual": self.manual, "rollback": self.rollback,
                "rollback_reason": self.rollback_reason, "detected_at": _iso(self.detected_at),
                "detected_by": self.detected_by, "restored_at": _iso(self.restored_at),
                "time_to_restore_s": None if self.time_to_restore is None else round(self.time_to_restore, 3),
                "monitoring_s": None if self.monitoring_s is None else round(self.monitoring_s, 3)}

    @classmethod
    def from_record(cls, run_id: str, summary: Mapping[str, Any], delivery: Mapping[str, Any] | None,
                    trigger: Mapping[str, Any] | None = None, report: str | None = None) -> RunFacts:
        """A sealed run from its ``summary.json`` and ``delivery.json`` (a run from before delivery
        records: from its summary and its trigger record alone)."""
        release = summary.get("release") or {}
        start = parse_time(summary.get("start")) or 0.0
        end = parse_time(summary.get("end")) or start
        outcome = str(summary.get("outcome") or "error")
        facts = cls(run_id, str(release.get("name") or ""), str(release.get("version") or ""), outcome, start, end,
                    deployed=False, report=report, exit_status=summary.get("exit_status"))
        if delivery:
            facts.deployed = bool(delivery.get("deployed"))
            facts.stages = list(delivery.get("stages") or [])
            facts.trigger = delivery.get("trigger")
            facts.manual = bool(delivery.get("manual"))
            facts.rollback = delivery.get("rollback")
            facts.rollback_reason = str(delivery.get("rollback_reason") or "")
            facts.detected_at = parse_time(delivery.get("detected_at"))
            facts.detected_by = delivery.get("detected_by")
            facts.restored_at = parse_time(delivery.get("restored_at"))
            monitoring = delivery.get("monitoring_s")
            facts.monitoring_s = float(monitoring) if isinstance(monitoring, (int, float)) else None
            return facts
        # An older run: what its summary and trigger say.
        stages_run = list(summary.get("stages_run") or [])
        facts.stages = [{"name": s, "verdict": "ran", "deployed": i > 0} for i, s in enumerate(stages_run)]
        if trigger:
            facts.trigger = trigger.get("trigger")
            facts.manual = facts.trigger == "manual_trigger"
            facts.rollback = trigger.get("outcome")
            facts.rollback_reason = str(trigger.get("reason") or "")
            first = trigger.get("first_failure")
            if isinstance(first, Mapping):
                facts.detected_at = parse_time(first.get("at"))
                facts.detected_by = str(first.get("check") or "").partition("::")[2] or None
                restore = trigger.get("time_to_restore_s")
                if facts.detected_at is not None and isinstance(restore, (int, float)):
                    facts.restored_at = facts.detected_at + float(restore)
        facts.deployed = (outcome in ("rolled_back", "rollback_failed") and not facts.manual) or (
            outcome in WENT_OUT and len(stages_run) > 1)
        return facts


def run_facts(plan: Any, run_id: str, summary: Any, outcomes: Iterable[Any], rollback: Any, started: float,
              ended: float, manual: bool, timing: Mapping[str, Any] | None = None) -> RunFacts:
    """This run's delivery facts, from the plan, the check outcomes, the rollback and the summary
    (the same values the recorder has on the controller). ``timing``: the recorder's rollback
    timing (the trigger record's first failure and time to restore), which wins when given, so
    that the evidence states one time to restore."""
    deployed_stages = {s.name for s in plan.stages if s.deployed} | set(plan.workflow_gates)
    outcomes = list(outcomes)
    deployed = any(o.stage in deployed_stages and o.verdict in ("passed", "failed", "warning") for o in outcomes)
    detections: list[tuple[float, str]] = []
    monitoring: dict[str, float] = {}
    for o in outcomes:
        if o.kind == "monitoring_metric" and o.verdict in ("passed", "failed", "warning") and o.stage in deployed_stages:
            window = o.measured.get("window_s")
            if isinstance(window, (int, float)):
                monitoring[o.stage] = max(monitoring.get(o.stage, 0.0), float(window))
        if o.verdict != "failed" or o.stage not in deployed_stages:
            continue
        fired = [a for a in o.measured.get("alerts") or [] if isinstance(a, dict) and a.get("fired")]
        for alert in fired:
            detections.append((o.start + float(alert.get("at_s") or 0.0), f"alert {alert.get('alert')} ({o.stage})"))
        if not fired:
            detections.append((o.end or ended, f"{o.stage}::{o.gate}::{o.name}"))
    stage_deployed = {s.name: s.deployed for s in plan.stages}
    facts = RunFacts(run_id, plan.name, plan.version, summary.outcome, started, ended, deployed,
                     stages=[{"name": s.name, "verdict": s.verdict,
                              "deployed": stage_deployed.get(s.name, s.name in deployed_stages)}
                             for s in summary.stages],
                     monitoring_s=sum(monitoring.values()) if monitoring else None, exit_status=summary.exit_status)
    if rollback is not None:
        facts.trigger, facts.rollback, facts.rollback_reason = rollback.trigger, rollback.outcome, rollback.reason
        facts.manual = manual
        if not manual:
            facts.deployed = True
        if rollback.outcome == "rolled_back" and rollback.steps:
            verify = [s for s in rollback.steps if s.key == "verify"]
            facts.restored_at = (verify[-1] if verify else rollback.steps[-1]).end
        if manual and rollback.steps:
            detections = [(min(s.start for s in rollback.steps), f"{rollback.trigger} (asked for)")]
    if detections and (facts.deployed or manual):
        facts.detected_at, facts.detected_by = min(detections)
    first = (timing or {}).get("first_failure")
    detected_at = parse_time(first.get("at")) if isinstance(first, Mapping) else None
    if isinstance(first, Mapping) and detected_at is not None:
        facts.detected_at = detected_at
        facts.detected_by = str(first.get("check") or "").partition("::")[2] or facts.detected_by
        restore = (timing or {}).get("time_to_restore_s")
        facts.restored_at = detected_at + float(restore) if isinstance(restore, (int, float)) else None
    return facts


# -- metrics over runs --------------------------------------------------------------------------


@dataclass
class Metrics:
    """The delivery metrics of a set of runs; every figure with the runs it came from."""

    runs: list[RunFacts]
    days: float
    deployed: list[RunFacts] = field(default_factory=list)
    went_out: list[RunFacts] = field(default_factory=list)
    failed: list[RunFacts] = field(default_factory=list)
    restored: list[RunFacts] = field(default_factory=list)
    not_restored: list[RunFacts] = field(default_factory=list)
    rollbacks: list[RunFacts] = field(default_factory=list)
    rollbacks_ok: list[RunFacts] = field(default_factory=list)
    monitored: list[RunFacts] = field(default_factory=list)

    @property
    def per_day(self) -> float:
        return len(self.went_out) / self.days if self.days else 0.0

    @property
    def per_week(self) -> float:
        return self.per_day * 7

    @property
    def change_failure_rate(self) -> float | None:
        return len(self.failed) / len(self.deployed) if self.deployed else None

    @property
    def restore_times(self) -> list[float]:
        return [r.time_to_restore for r in self.restored if r.time_to_restore is not None]

    @property
    def median_restore(self) -> float | None:
        times = self.restore_times
        return statistics.median(times) if times else None

    @property
    def worst_restore(self) -> float | None:
        times = self.restore_times
        return max(times) if times else None

    @property
    def rollback_success_rate(self) -> float | None:
        return len(self.rollbacks_ok) / len(self.rollbacks) if self.rollbacks else None

    @property
    def mean_monitoring(self) -> float | None:
        values = [r.monitoring_s for r in self.monitored if r.monitoring_s is not None]
        return statistics.fmean(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        """The figures (and the run ids behind each) as plain values."""
        ids = lambda runs: [r.run_id for r in runs]  # noqa: E731
        return {
            "runs": len(self.runs), "days": round(self.days, 3),
            "deployment_frequency": {"per_day": round(self.per_day, 4), "per_week": round(self.per_week, 4),
                                     "released": ids(self.went_out)},
            "change_failure_rate": {"value": self.change_failure_rate, "failed": ids(self.failed),
                                    "deployed": ids(self.deployed)},
            "time_to_restore": {"median_s": self.median_restore, "worst_s": self.worst_restore,
                                "restored": ids(self.restored), "not_restored": ids(self.not_restored)},
            "rollback_success_rate": {"value": self.rollback_success_rate, "rolled_back": ids(self.rollbacks_ok),
                                      "rollbacks": ids(self.rollbacks)},
            "monitoring_time": {"mean_s": self.mean_monitoring, "runs": ids(self.monitored)},
        }


def compute(runs: Sequence[RunFacts], since: float | None, until: float) -> Metrics:
    """The metrics of ``runs`` that started in ``[since, until]`` (``since=None``: all of them; the
    period is then from the first run to ``until``)."""
    chosen = [r for r in runs if (since is None or r.start >= since) and r.start <= until]
    if since is None:
        first = min((r.start for r in chosen), default=until)
        days = max((until - first) / DAY, 1.0)
    else:
        days = max((until - since) / DAY, 1.0 / 24)
    metrics = Metrics(chosen, days)
    for run in chosen:
        if run.deployed:
            metrics.deployed.append(run)
            if run.went_out:
                metrics.went_out.append(run)
            else:
                metrics.failed.append(run)
                (metrics.restored if run.time_to_restore is not None else metrics.not_restored).append(run)
            if run.monitoring_s is not None:
                metrics.monitored.append(run)
        if run.rollback is not None:
            metrics.rollbacks.append(run)
            if run.rollback == "rolled_back":
                metrics.rollbacks_ok.append(run)
    return metrics


def week_start(timestamp: float) -> float:
    """The Monday 00:00 UTC of ``timestamp``'s week."""
    day = datetime.fromtimestamp(timestamp, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp() - day.weekday() * DAY


def weekly(runs: Sequence[RunFacts], since: float | None, until: float, max_weeks: int = 104
           ) -> list[tuple[float, int, int, int]]:
    """Per week (its Monday): released, failed deployments, other runs (nothing deployed); the
    weeks from ``since`` (else the first run) to ``until``, the latest ``max_weeks``."""
    start = since if since is not None else min((r.start for r in runs), default=until)
    weeks: dict[float, list[int]] = {}
    week = week_start(start)
    last = week_start(until)
    while week <= last:
        weeks[week] = [0, 0, 0]
        week += 7 * DAY
    for run in runs:
        key = week_start(run.start)
        if key not in weeks:
            continue
        weeks[key][0 if run.went_out else 1 if run.change_failed else 2] += 1
    return [(k, v[0], v[1], v[2]) for k, v in sorted(weeks.items())][-max_weeks:]
