"""The release plan as plain data: frozen dataclasses of what a loaded plan says.

A :class:`Plan` is built by :func:`pytest_release.loader.load_plan` (YAML -> schema -> meaning ->
this model) and read by everything else. This module imports nothing from the rest of the
package but :mod:`.secrets` (the redactor of :meth:`Plan.effective`, itself importing nothing):
not the check library, rollback, evidence or pytest. What the model needs of a check kind it
states as a small protocol (:class:`Judge`); what a check without a target is named after
(``command[migrate]``) the loader reads from the kind and stores on the :class:`CheckSpec`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from .secrets import redact_value

__all__ = ["DEFAULT_EVIDENCE", "MAX_INSTANCES", "METRIC", "MONITOR", "READINESS", "TARGET_KINDS", "WORKFLOW_STEP",
           "Alert", "AnalyticsMetric", "Analysis", "CheckSpec", "Gate", "Judge", "Mark", "Metric", "MonitorMetric",
           "Plan", "Procedure", "Receiver", "Stage", "Step", "Target", "Task", "Trigger", "Workflow", "count_urls",
           "expand_urls", "merge_params", "target_kind"]

#: The most instances one target may have (a list of URLs, or ranges such as {8001..8004}).
MAX_INSTANCES = 1000
#: Where the evidence tree goes when neither the plan nor the command line says.
DEFAULT_EVIDENCE = "evidence/release"
#: The check kind of the rollback_gate's readiness checks (internal: not for plans to name).
READINESS = "rollback_readiness"
#: The check kind of a validation metric, added to each gate it covers (internal).
METRIC = "validation_metric"
#: The check kind of a monitoring metric, one per metric in each stage's monitoring_gate (internal).
MONITOR = "monitoring_metric"
#: The check kind of a workflow's action step, such as release_workflow's deploy (internal).
WORKFLOW_STEP = "workflow_step"

#: The kinds of target a plan can name, by the key that makes them.
TARGET_KINDS = {
    "url": "service",
    "tcp": "service",
    "sqlite": "datastore",
    "dsn": "datastore",
    "files": "config",
    "manifest": "artifacts",
}


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    col: int


def target_kind(spec: Mapping[str, Any]) -> str:
    """The kind of target ``spec`` makes (``service``, ``datastore``, ...), ``unknown`` for none."""
    for key, kind in TARGET_KINDS.items():
        if key in spec:
            return kind
    return "unknown"


@dataclass(frozen=True)
class Target:
    """Something checks look at: a service, a data store, config files or artifacts."""

    name: str
    kind: str
    spec: Mapping[str, Any]
    mark: Mark

    def describe(self) -> str:
        key = next(k for k in TARGET_KINDS if k in self.spec)
        value = self.spec[key]
        return f"{self.name} ({self.kind}: {', '.join(value) if isinstance(value, list) else value})"

    def instances(self) -> list[Target]:
        """One target per instance: a service with several URLs (a list, or a ``{a..b}`` range)
        is judged per URL, as ``api@host:port``; every other target is its own one instance."""
        url = self.spec.get("url")
        urls = expand_urls(url) if url is not None else []
        if not urls or urls == [url]:
            return [self]
        return [replace(self, name=f"{self.name}@{_host_port(u)}", spec={**self.spec, "url": u}) for u in urls]


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def count_urls(value: str | Sequence[str]) -> int:
    """How many URLs ``value`` expands to, counted without expanding it."""
    total = 0
    for url in [value] if isinstance(value, str) else value:
        if not isinstance(url, str):
            continue  # the schema rejected it
        count = 1
        for match in _RANGE.finditer(url):
            count *= abs(int(match.group(2)) - int(match.group(1))) + 1
        total += count
    return total


def expand_urls(value: str | Sequence[str]) -> list[str]:
    """Every URL of ``value``: a list as it is, a ``{a..b}`` range in a string expanded; at most
    ``MAX_INSTANCES`` (a plan with more does not load)."""
    if count_urls(value) > MAX_INSTANCES:
        raise ValueError(f"more than {MAX_INSTANCES} instances")
    found: list[str] = []
    for url in [value] if isinstance(value, str) else value:
        match = _RANGE.search(url)
        if match is None:
            found.append(url)
            continue
        low, high = int(match.group(1)), int(match.group(2))
        step = 1 if high >= low else -1
        for number in range(low, high + step, step):
            found += expand_urls(url[:match.start()] + str(number) + url[match.end():])
    return found


def _host_port(url: str) -> str:
    """``host:port`` of a URL, with its path when it has one (instances may differ by path)."""
    parts = urlsplit(url)
    return (parts.netloc + parts.path.rstrip("/")) or url


@dataclass(frozen=True)
class Stage:
    name: str
    index: int
    validation: bool
    rollback: bool
    monitoring: bool
    mark: Mark
    #: The release is deployed when this stage runs (default: every stage but the first). A
    #: required gate failing in a deployed stage fires validation_failure; before, it blocks.
    deployed: bool = False


@dataclass(frozen=True)
class CheckSpec:
    """One entry of a gate's ``checks`` list; ``label`` is its item name before the target."""

    kind: str
    params: Mapping[str, Any]
    label: str
    mark: Mark
    #: What the final verify after a rollback does with this check: ``None`` (the default: see
    #: ``rollback.expectations``), ``"judge"`` (as written), ``"skip"``, or parameter overrides.
    after_rollback: str | Mapping[str, Any] | None = None
    #: A readiness check: the gate's other checks start only once it passed.
    ready: bool = False
    #: What a check without a target is named after: the program a ``command`` runs (the kind's
    #: ``label`` callback, asked by the loader), the procedure a readiness check prepares, the
    #: metric a metric check samples; ``None``: its label alone.
    subject: str | None = None

    def item_name(self, target: Target | None) -> str:
        """``health[api]``; a check without a target names what it runs (``command[migrate]``)."""
        if target is not None:
            return f"{self.label}[{target.name}]"
        return f"{self.label}[{self.subject}]" if self.subject else self.label


@dataclass(frozen=True)
class Gate:
    """A validation gate: its checks, budget, whether it is required, where it applies."""

    name: str
    checks: tuple[CheckSpec, ...]
    timeout: float
    required: bool
    targets: tuple[str, ...] | None
    stages: tuple[str, ...] | None
    mark: Mark
    #: How many of the gate's target checks run at once in one process.
    concurrency: int = 16
    #: ``"judge"`` or ``"skip"``: the default of its checks' ``after_rollback`` (``None``: theirs).
    after_rollback: str | None = None


@dataclass(frozen=True)
class Metric:
    """A validation metric: its gates' checks sampled every ``interval`` over ``window``; the
    share of good samples must reach ``threshold``."""

    name: str
    threshold: float
    window: float
    interval: float
    gates: tuple[str, ...]
    mark: Mark


@dataclass(frozen=True)
class MonitorMetric:
    """A monitoring metric: sampled every ``interval`` across a stage's monitoring window.

    A sample comes from ``check`` run against ``targets`` (good when it passes), or from a
    Prometheus instant query (good when its value ``compare``s with ``threshold``).
    """

    name: str
    interval: float
    threshold: float
    #: This metric's window; ``None``: the monitoring_gate's window.
    window: float | None
    check: CheckSpec | None
    targets: tuple[str, ...] | None
    prometheus: Mapping[str, Any] | None
    mark: Mark

    @property
    def compare(self) -> str:
        return str((self.prometheus or {}).get("compare", ">="))


@dataclass(frozen=True)
class Alert:
    """An alert on a monitoring metric: it fires when the share of good samples over the last
    ``window`` seconds falls below ``threshold``."""

    name: str
    metric: str
    threshold: float
    window: float
    mark: Mark


@dataclass(frozen=True)
class Task:
    """A periodic task: ``check`` run against ``targets`` every ``interval`` while a monitoring
    window is open; its runs count as samples of ``metric`` (when it has one)."""

    name: str
    interval: float
    timeout: float
    check: CheckSpec
    targets: tuple[str, ...] | None
    metric: str | None
    mark: Mark


@dataclass(frozen=True)
class AnalyticsMetric:
    """An analytics metric: what each run adds to the history store. ``source`` is ``system`` (the
    run's own figures), ``checks`` (every number checks of ``kind`` measured) or ``sql`` (one
    number from ``sql`` run on the data store ``target``). ``interval`` is its trend's resolution,
    ``retention`` how long its samples are kept (``None``: for ever); neither is time-scaled."""

    name: str
    source: str
    kind: str | None
    sql: str | None
    target: str | None
    interval: float | None
    retention: float | None
    mark: Mark


@dataclass(frozen=True)
class Analysis:
    """An analysis of an analytics metric's history over ``retention``: a trend per ``interval``,
    and this run against the previous release, where worse by more than ``tolerance`` is a
    regression. ``checks``: also compare check verdicts (an analysis of the system metrics)."""

    name: str
    metric: str
    interval: float | None
    retention: float | None
    tolerance: float
    checks: bool
    mark: Mark


@dataclass(frozen=True)
class Step:
    """A rollback step: its name in the procedure and the action it resolves to (``None``: none)."""

    procedure: str
    name: str
    index: int
    action: str | None
    params: Mapping[str, Any]
    mark: Mark

    @property
    def id(self) -> str:
        return f"{self.procedure}::{self.name}"


@dataclass(frozen=True)
class Procedure:
    """A rollback procedure: its steps in order within ``timeout``."""

    name: str
    steps: tuple[Step, ...]
    timeout: float
    mark: Mark
    #: The validation gates it is for, found by the loader from names (service_rollback is for
    #: service_validation: see ``loader.CONVENTIONS``). A trigger that lists no procedures runs
    #: the ones for the failed gates; a verify step that names no gates re-judges these.
    gates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workflow:
    """An automation workflow: its steps in order (a step's action is ``None`` when the step
    names what pytest-release does itself: validate, verify, a stage, backup, revert, ...)."""

    name: str
    steps: tuple[Step, ...]
    timeout: float
    mark: Mark


@dataclass(frozen=True)
class Trigger:
    name: str
    action: str
    timeout: float
    procedures: tuple[str, ...] | None
    mark: Mark
    #: The validation gates its final verify re-judges (``None``: the failed ones, or the last
    #: stage's for a manual or monitoring rollback).
    verify: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Receiver:
    """A webhook receiver of ``notify`` (see the notify module): where, in which format, which
    events, signed with ``secret`` when it has one."""

    name: str
    url: str
    format: str
    secret: str | None
    events: tuple[str, ...]
    timeout: float
    retries: int
    line: int = 0


class Judge(Protocol):
    """What the model asks of a check kind: whether it can judge a target (``CheckKind`` is one)."""

    def can_judge(self, target: Target) -> bool: ...


@dataclass
class Plan:
    path: Path
    display: str
    sha256: str
    name: str
    version: str
    evidence: str | None
    stages: list[Stage]
    targets: dict[str, Target]
    gates: list[Gate]
    secrets: frozenset[str]
    not_acted_on: list[str] = field(default_factory=list)
    #: The plan's sections as loaded (plain data, ``${env:...}`` values substituted).
    data: dict[str, Any] = field(default_factory=dict, repr=False)
    procedures: list[Procedure] = field(default_factory=list)
    triggers: dict[str, Trigger] = field(default_factory=dict)
    #: The strategy's gates by name (validation_gate, rollback_gate, monitoring_gate): required, timeout.
    strategy_gates: dict[str, tuple[bool, float]] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    #: Every budget, window and interval is the plan's times this (a rehearsal when below 1).
    time_scale: float = 1.0
    monitors: dict[str, MonitorMetric] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    #: How long each stage's monitoring window lasts (see MonitorMetric.window).
    monitoring_window: float = 0.0
    #: The gate of each stage that a workflow's action step runs as (see workflows.select_workflow).
    workflow_gates: dict[str, Gate] = field(default_factory=dict)
    analytics_metrics: dict[str, AnalyticsMetric] = field(default_factory=dict)
    analyses: list[Analysis] = field(default_factory=list)
    #: The history store as the plan gives it (``None``: the evidence tree's SQLite file).
    history_store: str | None = None
    #: The webhook receivers of ``notify`` (see the notify module).
    notify: list[Receiver] = field(default_factory=list)

    def effective(self) -> dict[str, Any]:
        """The plan as this run uses it: defaults applied, secrets redacted, and for each section
        whether this version acts on it."""
        strategy = dict(self.data.get("strategy") or {})
        strategy["stages"] = [{"name": s.name, "validation": s.validation, "rollback": s.rollback,
                               "monitoring": s.monitoring} for s in self.stages]
        effective: dict[str, Any] = {
            "release": {"name": self.name, "version": self.version, "evidence": self.evidence},
            "targets": {n: {"kind": t.kind, **t.spec} for n, t in self.targets.items()},
            "strategy": strategy,
            "validation": {
                "gates": [{"name": g.name, "timeout_s": g.timeout, "required": g.required,
                           "targets": list(g.targets) if g.targets is not None else list(self.targets),
                           "stages": list(g.stages) if g.stages is not None
                           else [s.name for s in self.stages if s.validation],
                           "after_rollback": g.after_rollback,
                           "checks": [{"kind": c.kind, "name": c.label, "params": dict(c.params),
                                       "after_rollback": c.after_rollback if not isinstance(c.after_rollback, Mapping)
                                       else dict(c.after_rollback), "ready": c.ready}
                                      for c in g.checks]}
                          for g in self.gates],
                "metrics": (self.data.get("validation") or {}).get("metrics", []),
            },
        }
        for section in ("rollback", "monitoring", "analytics", "automation"):
            if section in self.data:
                effective[section] = self.data[section]
        effective["not_acted_on"] = list(self.not_acted_on)
        redacted = redact_value(effective, self.secrets)
        assert isinstance(redacted, dict)
        return redacted

    @property
    def title(self) -> str:
        """``name version``, or the name alone when the plan gives no version."""
        return f"{self.name} {self.version}".strip()

    @property
    def base_dir(self) -> Path:
        """Relative paths in the plan are relative to the plan file's directory."""
        return self.path.parent

    def gates_in(self, stage: Stage) -> list[Gate]:
        """The validation gates that run in ``stage``, in plan order."""
        if not stage.validation:
            return []
        return [g for g in self.gates if g.stages is None or stage.name in g.stages]

    def readiness_gate(self, stage: Stage) -> Gate | None:
        """The strategy's rollback_gate in ``stage``: one readiness check per rollback procedure
        (it takes backups in a stage before the release is deployed)."""
        if not stage.rollback or "rollback_gate" not in self.strategy_gates or not self.procedures:
            return None
        required, timeout = self.strategy_gates["rollback_gate"]
        checks = tuple(CheckSpec(READINESS, {"procedure": p.name, "take_backups": not stage.deployed},
                                 "readiness", p.mark, subject=p.name) for p in self.procedures)
        return Gate("rollback_gate", checks, timeout, required, None, None, self.procedures[0].mark)

    def monitoring_gate(self, stage: Stage) -> Gate | None:
        """The strategy's monitoring_gate in ``stage``: one item per monitoring metric, all sampled
        across one window."""
        if not stage.monitoring or "monitoring_gate" not in self.strategy_gates or not self.monitors:
            return None
        required, timeout = self.strategy_gates["monitoring_gate"]
        checks = tuple(CheckSpec(MONITOR, {"metric": m.name}, "metric", m.mark, subject=m.name)
                       for m in self.monitors.values())
        mark = next(iter(self.monitors.values())).mark
        return Gate("monitoring_gate", checks, timeout, required, None, None, mark,
                    concurrency=len(checks))

    def stage_gates(self, stage: Stage) -> list[Gate]:
        """Every gate that runs in ``stage``: the rollback_gate first, then the validation gates,
        then the monitoring_gate (its window opens once the stage's validation is done)."""
        if stage.name in self.workflow_gates:
            return [self.workflow_gates[stage.name]]
        readiness = self.readiness_gate(stage)
        monitoring = self.monitoring_gate(stage)
        return ([readiness] if readiness else []) + self.gates_in(stage) + ([monitoring] if monitoring else [])

    def window_of(self, metric: MonitorMetric) -> float:
        return metric.window if metric.window is not None else self.monitoring_window

    def targets_named(self, names: Sequence[str] | None, kind: Judge) -> list[Target]:
        """The instances of the targets ``names`` (default: all) that checks of ``kind`` can judge."""
        names = list(self.targets) if names is None else names
        return [i for n in names if kind.can_judge(self.targets[n]) for i in self.targets[n].instances()]

    def targets_for(self, gate: Gate, check: CheckSpec, kinds: Mapping[str, Judge]) -> list[Target]:
        """The targets ``check`` judges in ``gate``: the gate's targets (all by default) it can judge."""
        return self.targets_named(gate.targets, kinds[check.kind])


def merge_params(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A check's parameters with ``after_rollback`` overrides: a mapping merges key by key into the
    mapping it overrides (``json: {version: 1.0.0}`` keeps the other JSON fields); any other value
    replaces the one written."""
    merged = dict(params)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_params(merged[key], value)
        else:
            merged[key] = value
    return merged
