"""``health``: is the service up? An HTTP(S) GET of a path, or a TCP connect.

Parameters: ``path`` (default: the target's ``health`` path, else ``/``), ``status`` (an
expected status or a list of them, default 200), ``json`` (field path -> expectation in the
JSON body: a value it must equal, or comparisons; see :mod:`pytest_release.compare`),
``contains`` (text the body must contain), ``retries`` (further attempts after a failure,
default 0) with ``delay`` between them (default 1s), ``request_timeout`` and
``max_body`` (see :mod:`.limits`). Every attempt's whole answer must arrive within
``request_timeout`` and the gate's budget left; retrying stops when the budget runs out.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from typing import Any

from ..compare import MISSING, bounded, fields_problems, fields_schema, judge, lookup
from ..units import DURATION_SCHEMA, format_duration, parse_duration
from .base import CheckContext, CheckKind, CheckResult
from .http import get
from .limits import MAX_BODY_PARAM, REQUEST_TIMEOUT_PARAM, HttpLimits

__all__ = ["HEALTH", "json_problems"]

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/", "description": "a path starting with /"},
        "status": {"description": "an HTTP status (100-599) or a list of them",
                   "anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                             {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599},
                              "minItems": 1}]},
        "json": fields_schema("field path (status, checks.db, rows.0.id) -> a value it must equal, or "
                              "comparisons ({'>=': 1}, {length: {'>=': 1}}, {matches: '^ok'}, ...)"),
        "contains": {"type": "string"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 1000},
        "delay": DURATION_SCHEMA,
        "request_timeout": REQUEST_TIMEOUT_PARAM,
        "max_body": MAX_BODY_PARAM,
        "name": {"type": "string"},
    },
}



def json_problems(document: object, fields: Mapping[str, Any], measured: dict[str, Any]) -> list[str]:
    """Each field of ``fields`` judged in ``document``; what each field held goes into ``measured``
    (``json.PATH``, bounded), also when it passes."""
    problems = []
    for path, want in fields.items():
        got = lookup(document, path)
        if got is not MISSING:
            measured[f"json.{path}"] = bounded(got)
        problem = judge(got, want)
        if problem is not None:
            problems.append(f"JSON field {path!r} {problem}")
    return problems


def _judge_http(ctx: CheckContext, url: str) -> CheckResult:
    params = ctx.params
    statuses = params.get("status", 200)
    statuses = statuses if isinstance(statuses, list) else [statuses]
    expected: dict[str, Any] = {"status": statuses[0] if len(statuses) == 1 else statuses}
    if "json" in params:
        expected["json"] = params["json"]
    if "contains" in params:
        expected["contains"] = params["contains"]
    limits = HttpLimits.of(ctx)
    if "json" in params or "contains" in params:
        expected["max_body"] = limits.max_body
    answer = get(ctx, url, limits=limits, keep_body=True)
    if answer.kind == "budget":
        return CheckResult(False, f"GET {url} {answer.error}", {}, expected)
    if not answer.ok:
        return CheckResult(False, f"GET {url} {answer.error}", answer.measured(), expected)
    body = answer.body
    measured: dict[str, Any] = {"status": answer.status, "latency_ms": round(answer.elapsed * 1000, 1)}
    problems = []
    if answer.status not in statuses:
        problems.append(f"answered {answer.status}, expected {' or '.join(map(str, statuses))}")
    if "json" in params:
        try:
            document = json.loads(body)
        except ValueError:
            problems.append("body is not JSON")
        else:
            problems += json_problems(document, params["json"], measured)
    if "contains" in params and params["contains"].encode() not in body:
        problems.append(f"body does not contain {params['contains']!r}")
    if problems:
        snippet = " ".join(body[:300].decode("utf-8", "replace").split())[:200]
        # Each problem also on a line of its own: the summary is cut at a terminal line's length.
        lines = problems if len(problems) > 1 else []
        return CheckResult(False, f"GET {url} " + "; ".join(problems), measured, expected,
                           lines + ([f"body: {snippet}"] if snippet else []))
    return CheckResult(True, f"GET {url} answered {answer.status} in {measured['latency_ms']}ms",
                       measured, expected)


def _judge_tcp(ctx: CheckContext, address: str) -> CheckResult:
    host, _, port = address.rpartition(":")
    remaining = ctx.remaining()
    expected = {"connect": True}
    if remaining <= 0:
        return CheckResult(False, f"TCP {address} not tried: {ctx.budget_text()} was used up", {}, expected)
    limits = HttpLimits.of(ctx)
    timeout = min(limits.request_timeout, remaining)
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except TimeoutError:
        why = f"{ctx.budget_text()} ran out" if remaining <= limits.request_timeout else limits.timeout_text()
        return CheckResult(False, f"TCP connect to {address} timed out after "
                                  f"{format_duration(round(time.monotonic() - started, 2))} ({why})",
                           {"connect": False, "error": "timeout"}, expected)
    except OSError as exc:
        return CheckResult(False, f"TCP connect to {address} failed: {exc.strerror or exc}",
                           {"connect": False, "error": str(exc)}, expected)
    latency = round((time.monotonic() - started) * 1000, 1)
    return CheckResult(True, f"TCP connect to {address} in {latency}ms",
                       {"connect": True, "latency_ms": latency}, expected)


def run(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    if "tcp" in target.spec:
        attempt = lambda: _judge_tcp(ctx, target.spec["tcp"])  # noqa: E731
    else:
        path = ctx.params.get("path") or target.spec.get("health") or "/"
        url = target.spec["url"].rstrip("/") + path
        attempt = lambda: _judge_http(ctx, url)  # noqa: E731
    retries = int(ctx.params.get("retries", 0))
    delay = parse_duration(ctx.params.get("delay", 1))
    attempts = 0
    while True:
        attempts += 1
        result = attempt()
        if result.passed or attempts > retries or ctx.remaining() <= delay:
            break
        time.sleep(delay)
    result.measured["attempts"] = attempts
    if not result.passed and attempts > 1:
        result.summary += f" (after {attempts} attempts)"
    return result


HTTP_ONLY = ("path", "status", "json", "contains", "max_body")


def param_problem(params: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """HTTP parameters mean nothing to a TCP target: say so rather than ignore them."""
    problem = fields_problems(params.get("json"), "json")
    if problem:
        return problem
    used = [p for p in HTTP_ONLY if p in params]
    if "tcp" in target and used:
        return f"{', '.join(used)} apply to HTTP targets (url), not to a TCP target"
    return None


HEALTH = CheckKind(
    name="health",
    judges=frozenset({"service"}),
    params=PARAMS,
    run=run,
    param_problem=param_problem,
    description="HTTP(S) GET of a health path (status, JSON field, body text) or a TCP connect",
)
