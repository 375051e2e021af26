"""Monitoring windows: the monitoring_gate of a stage samples every monitoring metric on its
schedule across one window, evaluates alerts as samples arrive, and runs periodic tasks.

In each stage whose ``monitoring`` flag is on (with a ``monitoring_gate`` in the strategy), the
gate holds one item per metric, ``STAGE::monitoring_gate::metric[NAME]``. When the first of them
runs, the whole window opens: one thread per metric takes a sample every ``interval`` (rounds on
an absolute schedule, so they do not drift), from its source:

* a check (``source: {check: health}``, or the kind its name ends in: ``service_health``)
  run against its targets; a sample is good when the check passes;
* a Prometheus instant query (``source: {prometheus: {url, query, compare}}``); a sample is good
  when its value compares with the threshold (``>=`` unless ``compare`` says otherwise).

An alert (``threshold``, ``window``) fires as soon as the share of good samples over its last
``window`` seconds falls below its threshold; then its metric fails, the whole gate stops early,
and the run fires ``monitoring_failure``. A probe metric also fails early once its threshold is
out of reach, a Prometheus metric at its first bad value. Tasks (``automation.tasks``) run on
their own ``interval`` (each run within its ``timeout``) while the window is open; a run counts
as a sample of its metric. Every sample, alert and task run is kept for the evidence.

Under pytest-xdist the process that runs the gate's first item claims the window and runs all of
its metrics; the items on other workers wait for the results it publishes (see ``runstate``).
"""

from __future__ import annotations

import math
import operator
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any

from . import notify
from .checks import CheckContext, CheckKind, CheckResult, NotBuilt
from .model import MONITOR, CheckSpec, MonitorMetric, Plan, Target, Task
from .prometheus import PrometheusError, instant_query
from .runstate import RunState
from .units import format_duration

__all__ = ["GateWindow", "Monitoring", "Progress", "monitor_kind"]

#: The samples kept in a record (the most recent), to keep records readable for long windows.
KEEP = 500
#: How often a window looks at its stop flag while it waits for the next sample.
TICK = 0.05
COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le,
                                                      ">": operator.gt, "<": operator.lt}


@dataclass
class Sample:
    #: Seconds since the window opened, when the sample was taken (its round started).
    t_s: float
    #: ``probe``, ``prometheus`` or ``task:NAME``.
    source: str
    check: str
    good: bool
    summary: str
    value: float | None = None


@dataclass
class Snapshot:
    """What a metric's window looks like now, for the live progress line."""

    metric: str
    elapsed: float
    window: float
    samples: int
    good: int
    threshold: float
    value: float | None = None
    state: str = "sampling"

    compare: str = ""

    def text(self) -> str:
        if self.compare:
            now = f"value {self.value:g} (good: {self.compare} {self.threshold:g})" if self.value is not None \
                else "no value yet"
        else:
            now = (f"{self.good / self.samples:.1%} good" if self.samples else "no sample yet") + \
                f" (needs {self.threshold:.1%})"
        return f"{self.metric}: {self.samples} samples, {now}" + (
            f" {self.state.upper()}" if self.state != "sampling" else "")


class Progress:
    """The live state of the windows open in this process (read by the terminal's progress line)."""

    def __init__(self, order: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._order = {name: i for i, name in enumerate(order)}  # the plan's order, not the threads'

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots[snapshot.metric] = snapshot

    def line(self, gate: str) -> str:
        with self._lock:
            snaps = sorted(self._snapshots.values(), key=lambda s: self._order.get(s.metric, len(self._order)))
        if not snaps:
            return f"{gate} opening the monitoring window"
        elapsed = max(s.elapsed for s in snaps)
        window = max(s.window for s in snaps)
        return (f"{gate} {format_duration(round(elapsed, 1))}/{format_duration(round(window, 1))} "
                f"({format_duration(round(max(window - elapsed, 0), 1))} left) | "
                + " | ".join(s.text() for s in snaps))


@dataclass
class _Schedule:
    """An absolute schedule: events at ``start + k * interval`` while before ``end``."""

    name: str
    interval: float
    start: float
    end: float
    k: int = 0
    missed: int = 0
    drifts: list[float] = field(default_factory=list)

    @property
    def next(self) -> float:
        return self.start + self.k * self.interval

    def due(self, now: float) -> bool:
        return self.next <= now and self.next < self.end

    def advance(self, now: float) -> None:
        """Past the event just taken; rounds whose time has passed already are missed, not run late."""
        self.drifts.append(now - self.next)
        self.k += 1
        while self.next + self.interval <= now and self.next < self.end:
            self.k += 1
            self.missed += 1


class MetricRun:
    """One metric sampled across one window; :meth:`run` runs in a thread of its own."""

    def __init__(self, plan: Plan, kinds: Mapping[str, CheckKind], gate_id: str, metric: MonitorMetric,
                 tasks: list[Task], stop: threading.Event, progress: Progress, pool: ThreadPoolExecutor) -> None:
        self.plan, self.kinds, self.gate_id, self.metric = plan, kinds, gate_id, metric
        self.tasks, self.stop, self.progress, self.pool = tasks, stop, progress, pool
        self.window = plan.window_of(metric)
        budget = plan.strategy_gates.get("monitoring_gate", (True, metric.interval))[1]
        #: A sample has at most its interval (and never more than the gate's timeout).
        self.sample_budget = min(metric.interval, budget)
        self.alerts = [a for a in plan.alerts if a.metric == metric.name]
        self.samples: list[Sample] = []
        self.task_runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in tasks}
        self.fired: dict[str, dict[str, Any]] = {}
        self.results: queue.SimpleQueue[tuple[str, Sample, float]] = queue.SimpleQueue()

    # -- what a sample is ---------------------------------------------------------------------------

    def _probes(self, spec: CheckSpec, names: tuple[str, ...] | None) -> list[tuple[CheckSpec, Target]]:
        return [(spec, t) for t in self.plan.targets_named(names, self.kinds[spec.kind])]

    def _check(self, spec: CheckSpec, target: Target, budget: float) -> tuple[bool, str]:
        ctx = CheckContext(kind=spec.kind, params=spec.params, target=target, base_dir=self.plan.base_dir,
                           gate=self.gate_id, budget=budget, deadline=time.monotonic() + budget,
                           targets=self.plan.targets)
        run = self.kinds[spec.kind].run
        assert run is not None
        try:
            result = run(ctx)
        except NotBuilt as exc:
            return False, f"not checked: {exc}"
        except Exception as exc:  # a probe that breaks is a bad sample, not a crashed window
            return False, f"{type(exc).__name__}: {exc}"
        return result.passed, result.summary

    def _prometheus(self) -> tuple[bool, str, float | None]:
        source = self.metric.prometheus or {}
        compare = self.metric.compare
        try:
            value = instant_query(source["url"], source["query"], timeout=self.sample_budget,
                                  verify=source.get("verify_tls", True), ca=source.get("ca"))
        except PrometheusError as exc:
            return False, str(exc), None
        good = not math.isnan(value) and COMPARE[compare](value, self.metric.threshold)
        return good, f"{source['query']} = {value:g} ({'' if good else 'not '}{compare} {self.metric.threshold:g})", value

    def _submit(self, name: str, jobs: list[Callable[[], Sample]]) -> int:
        for job in jobs:
            def done(job: Callable[[], Sample] = job) -> None:
                started = time.monotonic()
                sample = job()
                self.results.put((name, sample, time.monotonic() - started))
            self.pool.submit(done)
        return len(jobs)

    def _round_jobs(self, t_s: float) -> list[Callable[[], Sample]]:
        metric = self.metric
        if metric.prometheus is not None:
            def query() -> Sample:
                good, summary, value = self._prometheus()
                return Sample(t_s, "prometheus", metric.prometheus["query"], good, summary, value)  # type: ignore[index]
            return [query]
        assert metric.check is not None
        return [self._check_job(t_s, "probe", spec, target, self.sample_budget)
                for spec, target in self._probes(metric.check, metric.targets)]

    def _check_job(self, t_s: float, source: str, spec: CheckSpec, target: Target, budget: float) -> Callable[[], Sample]:
        def job() -> Sample:
            good, summary = self._check(spec, target, budget)
            return Sample(t_s, source, spec.item_name(target), good, summary)
        return job

    # -- the window -----------------------------------------------------------------------------

    def run(self) -> CheckResult:
        metric = self.metric
        t0 = time.monotonic()
        end = t0 + self.window
        rounds = _Schedule("probe", metric.interval, t0, end)
        task_schedules = {t.name: _Schedule(t.name, t.interval, t0, end) for t in self.tasks}
        pending = 0
        stopped_by: str | None = None
        decided: str | None = None
        expected = self._expected_samples()
        while True:
            now = time.monotonic()
            if rounds.due(now):
                pending += self._submit("probe", self._round_jobs(round(rounds.next - t0, 3)))
                rounds.advance(now)
            for task in self.tasks:
                schedule = task_schedules[task.name]
                if schedule.due(now):
                    t_s = round(schedule.next - t0, 3)
                    pending += self._submit(task.name, [self._check_job(t_s, f"task:{task.name}", spec, target,
                                                                            task.timeout)
                                                            for spec, target in self._probes(task.check, task.targets)])
                    schedule.advance(now)
            if self.stop.is_set():
                stopped_by = "stopped"
                break
            schedules = [rounds, *task_schedules.values()]
            upcoming = [s.next for s in schedules if s.next < end]
            if not upcoming and pending == 0 and now >= end:
                break  # the window is over: watched for all of it
            if not upcoming and now > end + max(self.sample_budget, *(t.timeout for t in self.tasks), 0) + 1:
                break  # a probe that ignores its deadline does not hold the window open
            wait = min([u - now for u in upcoming] + [end - now if now < end else TICK, TICK])
            try:
                name, sample, took = self.results.get(timeout=max(wait, 0))
            except queue.Empty:
                self._report(time.monotonic() - t0)
                continue
            pending -= 1
            decided = self._take(name, sample, took, expected) or decided
            self._report(time.monotonic() - t0)
            if decided:
                self.stop.set()
                break
        took = time.monotonic() - t0
        result = self._verdict(took, rounds, task_schedules, decided, stopped_by, pending)
        self._report(took, "failed" if not result.passed else "done")
        return result

    def _expected_samples(self) -> int:
        """How many samples the window will take at most (to know when a threshold is out of reach)."""
        per_round = 1 if self.metric.prometheus is not None else len(self._probes(self.metric.check, self.metric.targets))  # type: ignore[arg-type]
        total = math.ceil(self.window / self.metric.interval) * per_round
        for task in self.tasks:
            if task.metric == self.metric.name:
                total += math.ceil(self.window / task.interval) * len(self._probes(task.check, task.targets))
        return total

    def _take(self, name: str, sample: Sample, took: float, expected: int) -> str | None:
        """Keep a sample; evaluate the alerts and whether the verdict is decided already."""
        if name != "probe":
            task = next(t for t in self.tasks if t.name == name)
            self.task_runs[name].append({"t_s": sample.t_s, "check": sample.check, "good": sample.good,
                                         "summary": sample.summary, "duration_s": round(took, 4),
                                         "counts_for": task.metric})
            if task.metric != self.metric.name:
                return None
        self.samples.append(sample)
        now_s = sample.t_s
        for alert in self.alerts:
            if alert.name in self.fired:
                continue
            recent = [s for s in self.samples if s.t_s > now_s - alert.window]
            good = sum(s.good for s in recent)
            share = good / len(recent)
            if share < alert.threshold:
                self.fired[alert.name] = {"alert": alert.name, "metric": self.metric.name, "fired": True,
                                          "at_s": now_s, "share": round(share, 4), "good": good,
                                          "samples": len(recent), "threshold": alert.threshold,
                                          "window_s": alert.window,
                                          "samples_detail": [asdict(s) for s in recent[-KEEP:]]}
                notify.alert_fired(self.gate_id, self.fired[alert.name])  # now, on its own thread
                return (f"alert {alert.name} fired at {format_duration(now_s)}: {good} of {len(recent)} samples "
                        f"good ({share:.1%}) < {alert.threshold:.1%} over the last {format_duration(alert.window)}")
        if self.metric.prometheus is not None and not sample.good:
            return f"at {format_duration(now_s)}: {sample.summary}"
        good = sum(s.good for s in self.samples)
        best = (good + max(expected - len(self.samples), 0)) / max(expected, len(self.samples))
        if best < self.metric.threshold:
            return (f"threshold out of reach at {format_duration(now_s)}: {len(self.samples) - good} bad samples, "
                    f"at most {best:.1%} of {expected} can be good < {self.metric.threshold:.1%}")
        return None

    def _report(self, elapsed: float, state: str = "sampling") -> None:
        value = self.samples[-1].value if self.samples and self.metric.prometheus is not None else None
        if self.fired:
            state = "alert"
        self.progress.update(Snapshot(self.metric.name, elapsed, self.window, len(self.samples),
                                      sum(s.good for s in self.samples), self.metric.threshold, value, state,
                                      self.metric.compare if self.metric.prometheus is not None else ""))

    def _verdict(self, took: float, rounds: _Schedule, tasks: Mapping[str, _Schedule], decided: str | None,
                 stopped: str | None, pending: int) -> CheckResult:
        metric = self.metric
        samples = self.samples
        good = sum(s.good for s in samples)
        share = good / len(samples) if samples else 0.0
        drifts = rounds.drifts
        drift_mean = sum(drifts) / len(drifts) if drifts else 0.0
        alerts = [self.fired.get(a.name) or {"alert": a.name, "metric": metric.name, "fired": False,
                                             "threshold": a.threshold, "window_s": a.window}
                  for a in self.alerts]
        measured: dict[str, Any] = {
            "samples": len(samples), "good": good, "share": round(share, 4), "window_s": round(took, 3),
            "rounds": len(drifts), "missed_rounds": rounds.missed, "unfinished_samples": pending,
            "sampled_by_pid": os.getpid(),  # under xdist: the one worker that ran the stage's window
            "drift_ms_mean": round(drift_mean * 1000, 3), "drift_ms_max": round(max(drifts, default=0) * 1000, 3),
            "drift_pct_of_interval": round(100 * drift_mean / metric.interval, 3),
            "alerts": alerts,
            "tasks": [{"task": name, "interval_s": s.interval, "runs": self.task_runs[name]}
                      for name, s in tasks.items()],
            "samples_detail": [asdict(s) for s in samples[-KEEP:]],
        }
        source = ({"prometheus": dict(metric.prometheus), "compare": metric.compare}
                  if metric.prometheus is not None else {"check": metric.check.kind if metric.check else None,
                                                         "targets": list(metric.targets or []) or "all"})
        expected = {"threshold": metric.threshold, "window_s": self.window, "interval_s": metric.interval,
                    "source": source}
        if metric.prometheus is not None:
            measured["last_value"] = samples[-1].value if samples else None
            passed = bool(samples) and good == len(samples)
            rule = f"every value {metric.compare} {metric.threshold:g}"
        else:
            passed = bool(samples) and share >= metric.threshold
            rule = f"threshold {metric.threshold:.1%}"
        passed = passed and not self.fired and decided is None
        over = f"over {format_duration(round(took, 2))} of a {format_duration(self.window)} window"
        if decided:
            summary = f"{metric.name}: {decided}"
        else:
            summary = f"{metric.name}: {good} of {len(samples)} samples good ({share:.1%}), {rule}, {over}"
            if stopped:
                summary += " (stopped early: another metric of the gate failed)"
        bad = [f"{s.t_s}s {s.source} {s.check}: {s.summary}" for s in samples if not s.good]
        return CheckResult(passed, summary, measured, expected, bad[:20])


class GateWindow:
    """The monitoring window of one stage: every metric sampled at once, stopped together."""

    def __init__(self, plan: Plan, kinds: Mapping[str, CheckKind], stage: str) -> None:
        self.stage = stage
        self.stop = threading.Event()
        self.progress = Progress(list(plan.monitors))
        self.futures: dict[str, Future[CheckResult]] = {}
        workers = 4 * max(len(plan.monitors), 1) + 4
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pytest-release-monitor")
        gate_id = f"{stage}::monitoring_gate"
        first = next(iter(plan.monitors), None)
        self.runs = [MetricRun(plan, kinds, gate_id, metric,
                               [t for t in plan.tasks if t.metric == name or (t.metric is None and name == first)],
                               self.stop, self.progress, self._pool)
                     for name, metric in plan.monitors.items()]

    def start(self, publish: Callable[[str, CheckResult], None] | None = None) -> None:
        for run in self.runs:
            future: Future[CheckResult] = Future()
            self.futures[run.metric.name] = future
            threading.Thread(target=self._run, args=(run, future, publish), daemon=True,
                             name=f"pytest-release-window-{run.metric.name}").start()

    def _run(self, run: MetricRun, future: Future[CheckResult],
             publish: Callable[[str, CheckResult], None] | None) -> None:
        try:
            result = run.run()
        except BaseException as exc:  # handed to the item, which reports it
            result = CheckResult(False, f"{run.metric.name}: the window broke: {type(exc).__name__}: {exc}")
        if not result.passed:
            self.stop.set()
        if publish is not None:
            publish(run.metric.name, result)
        future.set_result(result)
        if self.done():  # samples still queued (a window stopped early) are not taken
            self._pool.shutdown(wait=False, cancel_futures=True)

    def done(self) -> bool:
        return all(f.done() for f in self.futures.values())


class Monitoring:
    """The windows of this process: one per stage, opened by the first metric item that runs."""

    def __init__(self, plan: Plan, kinds: Mapping[str, CheckKind], state: RunState) -> None:
        self.plan, self.kinds, self.state = plan, kinds, state
        self.windows: dict[str, GateWindow] = {}
        self._lock = threading.Lock()

    def open(self, stage: str) -> GateWindow | None:
        """The window of ``stage``, opened now if this process is the first to ask; ``None`` when
        another process (an xdist worker) runs it."""
        with self._lock:
            if stage in self.windows:
                return self.windows[stage]
            if not self.state.claim(f"monitoring-{stage}"):
                return None
            window = self.windows[stage] = GateWindow(self.plan, self.kinds, stage)
        window.start(lambda metric, result: self.state.publish(f"monitoring-{stage}-{metric}", asdict(result)))
        return window

    def result(self, stage: str, metric: str, deadline: float) -> CheckResult:
        window = self.open(stage)
        if window is not None:
            try:
                return window.futures[metric].result(timeout=max(deadline - time.monotonic(), 0.0))
            except FutureTimeout:
                return CheckResult(False, f"{metric}: the {stage} monitoring window did not finish within its "
                                          f"budget ({format_duration(window_budget(self.plan))})")
        data = self.state.wait_published(f"monitoring-{stage}-{metric}", deadline)
        if data is None:
            return CheckResult(False, f"{metric}: no result from the worker that runs the {stage} monitoring "
                                      "window before the deadline")
        return CheckResult(**data)


def monitor_kind(monitoring: Monitoring) -> CheckKind:
    """The check kind of a monitoring metric's item: it takes its metric's result from the window."""

    def run(ctx: CheckContext) -> CheckResult:
        stage = ctx.gate.partition("::")[0]
        return monitoring.result(stage, ctx.params["metric"], ctx.deadline)

    return CheckKind(MONITOR, frozenset(), {"type": "object"}, run,
                     "a monitoring metric: sampled across the stage's monitoring window, with its alerts")


def window_budget(plan: Plan) -> float:
    """How long a monitoring item may take: the longest window, and the last samples' budget."""
    budget = plan.strategy_gates.get("monitoring_gate", (True, 0.0))[1]
    longest = max((plan.window_of(m) for m in plan.monitors.values()), default=0.0)
    tasks = max((t.timeout for t in plan.tasks), default=0.0)
    return longest + max(budget, tasks) + 1.0
