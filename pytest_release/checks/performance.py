"""``performance``: is the service fast enough, and does it answer?

``requests`` GETs (default 100) of ``path`` (default: the target's health path, else ``/``) at
``concurrency`` (default 10) threads, over the shared keep-alive pool of ``health``. Measured:
p50, p95 and p99 latency (ms, nearest rank, over the requests that got an answer), the error
rate (a status other than ``status``, a connection error or a timeout), throughput (requests per
second of wall time) and the sample count. Thresholds: ``p50``, ``p95``, ``p99`` (durations),
``error_rate`` (a fraction, default 0: every request must succeed) and ``min_rps``. When the
gate's budget runs out the load stops and the check fails, saying how far it got. Each request
is one bounded GET (:func:`.http.get`: ``request_timeout``, ``max_body``); once a request times
out before any was answered no more are sent, and a check where nothing was answered says so.
"""

from __future__ import annotations

import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..units import DURATION_SCHEMA, THRESHOLD_SCHEMA, format_duration, parse_duration
from .base import CheckContext, CheckKind, CheckResult
from .http import get
from .limits import MAX_BODY_PARAM, REQUEST_TIMEOUT_PARAM, HttpLimits

__all__ = ["PERFORMANCE", "percentile"]

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/", "description": "the path to GET, starting with /"},
        "requests": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                     "description": "how many requests to send (default 100)"},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 256,
                        "description": "how many requests are in flight at once (default 10)"},
        "status": {"type": "integer", "minimum": 100, "maximum": 599,
                   "description": "the status a successful request answers (default 200)"},
        "p50": {**DURATION_SCHEMA, "description": "the highest median latency: a duration (250ms)"},
        "p95": {**DURATION_SCHEMA, "description": "the highest 95th-percentile latency: a duration (250ms)"},
        "p99": {**DURATION_SCHEMA, "description": "the highest 99th-percentile latency: a duration (1s)"},
        "error_rate": {**THRESHOLD_SCHEMA, "description": "the highest share of failed requests, "
                                                          "a fraction from 0 to 1 (default 0)"},
        "min_rps": {"type": "number", "minimum": 0, "description": "the lowest throughput, requests per second"},
        "request_timeout": REQUEST_TIMEOUT_PARAM,
        "max_body": MAX_BODY_PARAM,
        "name": {"type": "string", "description": "names the item (performance-NAME[target])"},
    },
}


def _no_answer(error: str) -> str:
    if error == "timeout":
        return "timed out"
    if error.startswith("cannot connect: "):
        return f"could not connect ({error.partition(': ')[2]})"
    return error


def percentile(sorted_values: list[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}ms"
    if value >= 10:
        return f"{value:.1f}ms"
    return f"{value:.2f}ms"


def histogram(ordered: list[float], buckets: int = 20) -> list[list[float]]:
    """The latency distribution as ``[[upper bound ms, count], ...]`` in equal-width buckets from
    the fastest to the slowest answer (drawn as a chart in the HTML report)."""
    if not ordered:
        return []
    low, high = ordered[0], ordered[-1]
    width = (high - low) / buckets or 1.0
    counts = [0] * buckets
    for value in ordered:
        counts[min(int((value - low) / width), buckets - 1)] += 1
    return [[round(low + width * (i + 1), 3), count] for i, count in enumerate(counts)]


def run(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    params = ctx.params
    path = params.get("path") or target.spec.get("health") or "/"
    url = target.spec["url"].rstrip("/") + path
    total = int(params.get("requests", 100))
    concurrency = min(int(params.get("concurrency", 10)), total)
    want_status = int(params.get("status", 200))
    thresholds = {k: parse_duration(params[k]) for k in ("p50", "p95", "p99") if k in params}
    max_error_rate = float(params.get("error_rate", 0.0))
    min_rps = params.get("min_rps")
    expected: dict[str, Any] = {f"{k}_ms": round(v * 1000, 3) for k, v in thresholds.items()}
    expected["error_rate"] = max_error_rate
    if min_rps is not None:
        expected["min_rps"] = min_rps
    expected["requests"] = total
    if ctx.remaining() <= 0:
        return CheckResult(False, f"GET {url} not tried: {ctx.budget_text()} was used up", {}, expected)

    limits = HttpLimits.of(ctx)
    lock = threading.Lock()
    issued = 0
    completed = 0
    answered = 0
    cut = 0  # requests in flight when the budget ran out
    latencies: list[float] = []
    errors: dict[str, int] = {}
    out_of_budget = threading.Event()
    hanging = threading.Event()  # a request timed out before any was answered: send no more

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= total or out_of_budget.is_set() or hanging.is_set():
                return False
            issued += 1
            return True

    def worker() -> None:
        nonlocal issued, completed, answered, cut
        while take():
            answer = get(ctx, url, limits=limits, keep_body=False)
            if answer.kind == "budget" or answer.kind == "timeout" and answer.by_budget:
                out_of_budget.set()  # cut by the budget, not slow by itself: not a sample
                with lock:
                    issued -= 1
                    cut += answer.kind == "timeout"
                return
            error = None
            if answer.ok:
                if answer.status != want_status:
                    error = f"status {answer.status}"
            elif answer.kind == "connect":
                error = "cannot connect: " + re.sub(r"^\[Errno -?\d+\] ", "", answer.error.rpartition("cannot connect: ")[2])
            elif answer.kind == "timeout":
                error = "timeout"
            elif answer.kind == "too_large":
                error = f"body larger than {limits.max_body} bytes"
            else:
                error = answer.error.removeprefix("failed: ")[:80]
            with lock:
                completed += 1
                if answer.status is not None:
                    answered += 1
                if answer.ok:
                    latencies.append(answer.elapsed * 1000)
                if error:
                    errors[error] = errors.get(error, 0) + 1
                if not answered and errors.get("timeout", 0):
                    hanging.set()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="performance") as executor:
        for future in [executor.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall = max(time.monotonic() - started, 1e-9)

    done = completed
    failed = sum(errors.values())
    ordered = sorted(latencies)
    measured: dict[str, Any] = {"samples": done, "answered": answered}
    for name in ("p50", "p95", "p99"):
        value = percentile(ordered, float(name[1:]))
        measured[f"{name}_ms"] = None if math.isnan(value) else round(value, 3)
    error_rate = failed / done if done else 1.0
    measured.update({"error_rate": round(error_rate, 4), "errors": failed, "rps": round(done / wall, 1),
                     "wall_s": round(wall, 3), "latency_histogram": histogram(ordered)})
    for error, count in errors.items():
        measured[f"errors.{error}"] = count
    details = [f"errors: {', '.join(f'{n} x {e}' for e, n in sorted(errors.items()))}"] if errors else []

    if not answered and (done or cut):
        counted = [(f"{n} {_no_answer(e)}", n) for e, n in sorted(errors.items(), key=lambda item: -item[1])]
        if cut:
            counted.append((f"{cut} had no complete answer when {ctx.budget_text()} ran out", cut))
        tried = done + cut
        if len(counted) == 1:
            what = f"{tried} of {tried} {counted[0][0].partition(' ')[2]}"
        else:
            what = f"of {tried}, " + ", ".join(text for text, _ in counted)
        tail = f"; {total - tried} of {total} not sent" if tried < total else ""
        if hanging.is_set():
            tail += f" (the service answers nothing: each request waited {limits.timeout_text()})"
        measured["cut_by_budget"] = cut
        return CheckResult(False, f"GET {url}: no request was answered: {what}{tail}", measured, expected, details)

    over: list[str] = []
    for name, limit in thresholds.items():
        value = measured[f"{name}_ms"]
        if value is None:
            over.append(f"{name} not measured (no request answered) <= {format_duration(limit)}")
        elif value > limit * 1000:
            over.append(f"{name} {_ms(value)} > {format_duration(limit)}")
    if error_rate > max_error_rate:
        over.append(f"error rate {error_rate:.1%} > {max_error_rate:.1%} ({failed} of {done} failed)")
    if min_rps is not None and measured["rps"] < min_rps:
        over.append(f"throughput {measured['rps']:g} rps < {min_rps:g} rps")
    if hanging.is_set() and not out_of_budget.is_set() and done < total:
        return CheckResult(False, f"GET {url}: stopped after {done} of {total} requests: a request timed out "
                                  f"({limits.timeout_text()}) before any was answered"
                           + (f"; {', '.join(over)}" if over else ""), measured, expected, details)
    if out_of_budget.is_set() or done < total:
        return CheckResult(False, f"GET {url}: stopped after {done} of {total} requests: {ctx.budget_text()} "
                                  f"ran out" + (f"; {', '.join(over)}" if over else ""), measured, expected,
                           details)
    if over:
        return CheckResult(False, f"{', '.join(over)} over {done} requests (GET {url}, concurrency {concurrency})",
                           measured, expected, details)
    figures = ", ".join(f"{n} {_ms(measured[f'{n}_ms'])}" for n in ("p50", "p95", "p99"))
    return CheckResult(True, f"{figures}, {error_rate:.1%} errors, {measured['rps']:g} rps over {done} requests "
                             f"(GET {url}, concurrency {concurrency})", measured, expected, details)


PERFORMANCE = CheckKind(
    name="performance",
    judges=frozenset({"service"}),
    judges_target=lambda target: "url" in target.spec,
    params=PARAMS,
    run=run,
    description="latency percentiles, error rate and throughput of a service under concurrent requests",
)
