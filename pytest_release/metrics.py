"""Validation metrics: a gate's checks sampled repeatedly over a window.

A metric (``validation.metrics``: ``threshold``, ``window``, optional ``interval`` and ``gates``)
becomes one more check of each gate it covers, ``GATE::metric[NAME]``. It runs the gate's checks
(all but ``command`` checks, which may change things) every ``interval`` until the ``window`` has
passed; each run of each check is a sample, good when the check passes. The share of good samples
against the threshold decides, so a failed metric fails its gate. Every sample is kept in the
check's record (``validation/metrics/RUN_ID/...``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .checks import CheckContext, CheckKind, CheckResult, NotBuilt
from .model import METRIC, Plan
from .units import format_duration

__all__ = ["metric_kind", "metric_budget"]

#: The samples kept in a record (the most recent), to keep records readable for long windows.
KEEP = 500


def metric_budget(plan: Plan, params: Mapping[str, Any], gate_budget: float) -> float:
    """A metric's own budget: its window, plus the gate's budget for the last round of checks."""
    return plan.metrics[params["metric"]].window + gate_budget


def metric_kind(plan: Plan, kinds: Mapping[str, CheckKind]) -> CheckKind:
    """The check kind that samples a metric's gate (one per plan: it knows the plan's gates)."""

    def run(ctx: CheckContext) -> CheckResult:
        metric = plan.metrics[ctx.params["metric"]]
        gate_name = ctx.gate.rpartition("::")[2]
        gate = next(g for g in plan.gates if g.name == gate_name)
        checks = [(spec, target) for spec in gate.checks
                  if spec.kind not in (METRIC, "command") and kinds[spec.kind].run is not None
                  for target in (plan.targets_for(gate, spec, kinds) if kinds[spec.kind].judges else [None])]
        expected = {"threshold": metric.threshold, "window_s": metric.window, "interval_s": metric.interval}
        if not checks:
            return CheckResult(False, f"{metric.name}: gate {gate.name} has no check to sample", {}, expected)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        while True:
            round_started = time.monotonic()
            for spec, target in checks:
                deadline = min(round_started + max(metric.interval, 1.0), ctx.deadline)
                sample_ctx = CheckContext(kind=spec.kind, params=spec.params, target=target,
                                          base_dir=plan.base_dir, gate=ctx.gate, budget=metric.interval,
                                          deadline=deadline, targets=plan.targets)
                try:
                    result = kinds[spec.kind].run(sample_ctx)  # type: ignore[misc]
                except NotBuilt:
                    continue
                samples.append({"t_s": round(round_started - started, 3), "check": spec.item_name(target),
                                "good": result.passed, "summary": result.summary})
            next_round = round_started + metric.interval
            if next_round - started >= metric.window or next_round >= ctx.deadline:
                break
            time.sleep(max(next_round - time.monotonic(), 0))
        good = sum(1 for s in samples if s["good"])
        share = good / len(samples) if samples else 0.0
        took = time.monotonic() - started
        measured = {"samples": len(samples), "good": good, "share": round(share, 4), "window_s": round(took, 3),
                    "samples_detail": samples[-KEEP:]}
        passed = bool(samples) and share >= metric.threshold
        relation = ">=" if passed else "<"
        summary = (f"{metric.name}: {good} of {len(samples)} samples good ({share:.1%}) {relation} threshold "
                   f"{metric.threshold:.1%} over {format_duration(round(took, 2))}")
        bad = [f"{s['t_s']}s {s['check']}: {s['summary']}" for s in samples if not s["good"]]
        return CheckResult(passed, summary, measured, expected, bad[:20])

    return CheckKind(METRIC, frozenset(), {"type": "object"}, run,
                     "a validation metric: the share of good samples of a gate's checks over a window")
