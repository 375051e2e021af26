"""A small client for Prometheus's HTTP API: one instant query, one number.

``instant_query(url, query, timeout=...)`` GETs ``{url}/api/v1/query?query=...`` (``url`` is the
Prometheus base URL, with its path prefix if it has one) over the shared keep-alive pool of
:mod:`pytest_release.http`, and returns the query's value as a float:

- a ``scalar`` result: its value;
- a ``vector`` of exactly one sample: that sample's value;
- anything else is a :class:`PrometheusError`: an empty vector (no series matched), several
  series (aggregate them, e.g. ``sum(...)``), a range vector (``matrix``) or a ``string``.

``"NaN"``, ``"+Inf"`` and ``"-Inf"`` are floats like any other value: NaN comes back as
``float("nan")`` and the caller decides what it means. Every failure raises
:class:`PrometheusError` with a one-line reason: what Prometheus said about the query
(``errorType``: ``error``), or, naming the URL, why no usable answer came (cannot connect, no
answer within ``timeout``, an HTTP error, a body that is not Prometheus's JSON). Nothing is
retried. ``timeout`` bounds connecting, each wait for the answer and the whole body, and goes to
Prometheus as the query's own evaluation timeout too; a server that sends its headers a byte at
a time is ended at that deadline as well (:func:`pytest_release.http.guarded`).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import urlencode

import urllib3

from .http import connect_reason, guarded, http_pool, read_body

__all__ = ["PrometheusError", "instant_query"]

MAX_BODY = 16 * 1024 * 1024
"""The largest answer read; an instant query worth one number is far smaller."""


class PrometheusError(Exception):
    """A query that gave no single number; ``str()`` is a one-line reason."""


def instant_query(url: str, query: str, *, timeout: float, verify: bool = True, ca: str | None = None) -> float:
    """The value of the PromQL ``query`` now, from the Prometheus server at base ``url``.

    ``timeout`` (seconds, > 0) bounds connecting, waiting and reading; ``verify`` and ``ca``
    are the TLS settings for an ``https`` URL. Raises :class:`PrometheusError`.
    """
    if not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    endpoint = url.rstrip("/") + "/api/v1/query"
    document = _get_json(endpoint, {"query": query, "timeout": f"{timeout:g}"}, timeout, verify, ca)
    return _value(document, endpoint)


def _get_json(endpoint: str, fields: dict[str, str], timeout: float, verify: bool,
              ca: str | None) -> dict[str, Any]:
    """GET ``endpoint`` with ``fields``; Prometheus's JSON object, whatever the HTTP status."""
    started = time.monotonic()
    deadline = started + timeout
    guard = response = None
    try:
        with guarded(deadline) as guard:  # headers dripped a byte at a time end at the deadline too
            response = http_pool(verify=verify, ca=ca).request(
                "GET", f"{endpoint}?{urlencode(fields)}", headers={"Accept": "application/json"},
                timeout=urllib3.Timeout(total=timeout), retries=False, redirect=False, preload_content=False)
            if guard.expired:  # shut down while the headers dripped in: no answer
                response.close()
                response = None
            else:
                body = read_body(response, deadline, MAX_BODY)
    except urllib3.exceptions.NewConnectionError as exc:  # a subclass of TimeoutError in urllib3 2
        raise PrometheusError(f"cannot connect to Prometheus at {endpoint}: {connect_reason(exc)}") from None
    except (TimeoutError, urllib3.exceptions.TimeoutError):
        raise PrometheusError(f"Prometheus at {endpoint} gave no answer within {timeout:g}s") from None
    except urllib3.exceptions.HTTPError as exc:
        if guard is not None and guard.expired:
            body = None  # the deadline shut the connection: said below
        else:
            reason = getattr(exc, "reason", None) or exc
            raise PrometheusError(f"GET {endpoint} failed: {_one_line(str(reason))}") from None
    if response is None:
        raise PrometheusError(f"Prometheus at {endpoint} gave no answer within {timeout:g}s")
    if body is None:
        raise PrometheusError(f"Prometheus at {endpoint} answered {response.status} but its body did not "
                              f"arrive within {timeout:g}s")
    if len(body) > MAX_BODY:
        raise PrometheusError(f"the answer from {endpoint} is larger than {MAX_BODY // (1024 * 1024)} MiB")
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("status") not in ("success", "error"):
        snippet = _one_line(body[:300].decode("utf-8", "replace"))[:200]
        raise PrometheusError(f"{endpoint} answered {response.status} with a body that is not a Prometheus "
                              f"API answer" + (f": {snippet}" if snippet else " (empty)"))
    if document["status"] == "error":
        kind = document.get("errorType") or "error"
        raise PrometheusError(f"Prometheus at {endpoint} rejected the query ({response.status} {kind}): "
                              f"{_one_line(str(document.get('error') or 'no reason given'))}")
    return document


def _value(document: dict[str, Any], endpoint: str) -> float:
    """The one number in a successful answer's ``data``."""
    data = document.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(f"{endpoint} answered without a 'data' object")
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        return _number(result, endpoint)
    if kind == "vector":
        if not isinstance(result, list):
            raise PrometheusError(f"{endpoint} answered a vector that is not a list")
        if not result:
            raise PrometheusError("the query returned no data (no series matched)")
        if len(result) > 1:
            shown = ", ".join(_labels(sample) for sample in result[:3]) + (", ..." if len(result) > 3 else "")
            raise PrometheusError(f"the query returned {len(result)} series, expected one: aggregate them, "
                                  f"e.g. sum(...) or max(...) ({shown})")
        sample = result[0]
        if isinstance(sample, dict) and "value" not in sample and "histogram" in sample:
            raise PrometheusError(f"the query returned a native histogram {_labels(sample)}, not a number: "
                                  "use histogram_quantile(...), histogram_count(...) or histogram_sum(...)")
        return _number(sample.get("value") if isinstance(sample, dict) else None, endpoint)
    if kind == "matrix":
        raise PrometheusError("the query returned a range vector (matrix), expected one number: "
                              "drop the [range] or wrap it, e.g. in rate(...) or max_over_time(...)")
    if kind == "string":
        raise PrometheusError("the query returned a string, expected a number")
    raise PrometheusError(f"{endpoint} answered an unknown resultType {kind!r}")


def _number(pair: object, endpoint: str) -> float:
    """The float of a ``[timestamp, "value"]`` pair (``"NaN"``, ``"+Inf"`` and ``"-Inf"`` included)."""
    if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
        try:
            return float(pair[1])
        except ValueError:
            pass
    raise PrometheusError(f"{endpoint} answered a sample that is not [timestamp, \"number\"]: "
                          f"{_one_line(json.dumps(pair))[:100]}")


def _labels(sample: object) -> str:
    """A sample's series as PromQL writes it: ``name{label="value", ...}``."""
    metric = sample.get("metric") if isinstance(sample, dict) else None
    if not isinstance(metric, dict):
        return "{}"
    name = metric.get("__name__", "")
    labels = ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(metric.items()) if key != "__name__")
    return f"{name}{{{labels}}}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
