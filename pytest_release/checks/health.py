"""``health``: is the service up? An HTTP(S) GET of a path, or a TCP connect.

Parameters: ``path`` (default: the target's ``health`` path, else ``/``), ``status`` (an
expected status or a list of them, default 200), ``json`` (dotted field -> expected value in
the JSON body), ``contains`` (text the body must contain), ``retries`` (further attempts after
a failure, default 0) with ``delay`` between them (default 1s). Every attempt's timeout is the
gate's budget left; retrying stops when the budget runs out.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import urllib3

from ..units import DURATION_SCHEMA, format_duration, parse_duration
from .base import CheckContext, CheckKind, CheckResult

__all__ = ["HEALTH", "http_pool", "read_body"]

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": "^/", "description": "a path starting with /"},
        "status": {"description": "an HTTP status (100-599) or a list of them", "anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                             {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599},
                              "minItems": 1}]},
        "json": {"type": "object"},
        "contains": {"type": "string"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 1000},
        "delay": DURATION_SCHEMA,
        "name": {"type": "string"},
    },
}

_pools: dict[tuple[bool, str | None], urllib3.PoolManager] = {}
_pools_lock = threading.Lock()


def http_pool(*, verify: bool = True, ca: str | None = None) -> urllib3.PoolManager:
    """A process-wide keep-alive pool for these TLS settings (thread-safe)."""
    key = (verify, ca)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = urllib3.PoolManager(
                num_pools=64,
                maxsize=32,
                cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                ca_certs=ca,
                retries=False,
            )
        return _pools[key]


MAX_BODY = 1024 * 1024


def read_body(response: urllib3.BaseHTTPResponse, deadline: float, limit: int = MAX_BODY) -> bytes | None:
    """The body, cut once more than ``limit`` bytes arrived, or ``None`` when it does not arrive
    before ``deadline``: a socket timeout is per read, so a server that trickles bytes would
    otherwise never time out. The connection goes back to the pool only when fully read."""
    chunks: list[bytes] = []
    size = 0
    complete = False
    try:
        while size <= limit and time.monotonic() <= deadline:
            chunk = response.read1(64 * 1024)
            if not chunk:
                complete = True
                break
            chunks.append(chunk)
            size += len(chunk)
    except (urllib3.exceptions.TimeoutError, socket.timeout):
        pass
    finally:
        if complete:
            response.release_conn()
        else:
            response.close()  # never hand a half-read connection back to the pool
    if not complete and size <= limit:
        return None
    return b"".join(chunks)


def _field(document: object, dotted: str) -> object:
    value = document
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(dotted)
    return value


def _judge_http(ctx: CheckContext, url: str) -> CheckResult:
    params = ctx.params
    target = ctx.target
    assert target is not None
    statuses = params.get("status", 200)
    statuses = statuses if isinstance(statuses, list) else [statuses]
    expected: dict[str, Any] = {"status": statuses[0] if len(statuses) == 1 else statuses}
    if "json" in params:
        expected["json"] = params["json"]
    if "contains" in params:
        expected["contains"] = params["contains"]
    remaining = ctx.remaining()
    if remaining <= 0:
        return CheckResult(False, f"GET {url} not tried: {ctx.budget_text()} was used up", {}, expected)
    pool = http_pool(verify=target.spec.get("verify_tls", True), ca=_ca(ctx))
    started = time.monotonic()
    try:
        response = pool.request("GET", url, timeout=urllib3.Timeout(total=remaining),
                                retries=False, redirect=False, preload_content=False)
        body = read_body(response, ctx.deadline)
    except urllib3.exceptions.NewConnectionError as exc:  # a subclass of TimeoutError in urllib3 2
        return CheckResult(False, f"GET {url} failed: cannot connect: {_reason(exc)}",
                           {"error": f"cannot connect: {_reason(exc)}"}, expected)
    except (urllib3.exceptions.TimeoutError, socket.timeout):
        waited = time.monotonic() - started
        return CheckResult(False, f"GET {url} gave no answer within {format_duration(round(waited, 2))} "
                                  f"({ctx.budget_text()} ran out)",
                           {"error": "timeout", "waited_s": round(waited, 3)}, expected)
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        return CheckResult(False, f"GET {url} failed: {reason}", {"error": str(reason)}, expected)
    if body is None:
        waited = time.monotonic() - started
        return CheckResult(False, f"GET {url} answered {response.status} but its body did not arrive within "
                                  f"{format_duration(round(waited, 2))} ({ctx.budget_text()} ran out)",
                           {"status": response.status, "error": "body timeout", "waited_s": round(waited, 3)},
                           expected)
    latency = time.monotonic() - started
    measured: dict[str, Any] = {"status": response.status, "latency_ms": round(latency * 1000, 1)}
    problems = []
    if response.status not in statuses:
        problems.append(f"answered {response.status}, expected {' or '.join(map(str, statuses))}")
    if "json" in params:
        try:
            document = json.loads(body)
        except ValueError:
            problems.append("body is not JSON")
            document = None
        if document is not None:
            for dotted, want in params["json"].items():
                try:
                    got = _field(document, dotted)
                except KeyError:
                    problems.append(f"JSON field {dotted!r} is missing, expected {want!r}")
                    continue
                measured[f"json.{dotted}"] = got
                if got != want:
                    problems.append(f"JSON field {dotted!r} is {got!r}, expected {want!r}")
    if "contains" in params and params["contains"].encode() not in body:
        problems.append(f"body does not contain {params['contains']!r}")
    if problems:
        snippet = " ".join(body[:300].decode("utf-8", "replace").split())[:200]
        return CheckResult(False, f"GET {url} " + "; ".join(problems), measured, expected,
                           [f"body: {snippet}"] if snippet else [])
    return CheckResult(True, f"GET {url} answered {response.status} in {measured['latency_ms']}ms",
                       measured, expected)


def _reason(exc: Exception) -> str:
    """The OS's words for a failed connection, without urllib3's object reprs."""
    text = str(exc)
    return text.rpartition("Failed to establish a new connection: ")[2] or text


def _ca(ctx: CheckContext) -> str | None:
    assert ctx.target is not None
    ca = ctx.target.spec.get("ca")
    return str(ctx.path(ca)) if ca else None


def _judge_tcp(ctx: CheckContext, address: str) -> CheckResult:
    host, _, port = address.rpartition(":")
    remaining = ctx.remaining()
    expected = {"connect": True}
    if remaining <= 0:
        return CheckResult(False, f"TCP {address} not tried: {ctx.budget_text()} was used up", {}, expected)
    started = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=remaining):
            pass
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


HTTP_ONLY = ("path", "status", "json", "contains")


def param_problem(params: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """HTTP parameters mean nothing to a TCP target: say so rather than ignore them."""
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
