"""Prometheus for real: the example shop's /metrics, scraped by a private Prometheus server
(Debian's /usr/bin/prometheus), queried through ``pytest_release.prometheus.instant_query``."""

from __future__ import annotations

import math
import re
import socket
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import Example, wait_for_data
from pytest_release.prometheus import PrometheusError, instant_query


def _hit(example: Example, path: str, times: int) -> None:
    for _ in range(times):
        example.get(path)


def test_metrics_endpoint_speaks_the_prometheus_text_format(example: Example) -> None:
    _hit(example, "/healthz", 3)
    _hit(example, "/nowhere", 2)
    assert example.get("/version") == (200, {"version": "1.0.0"})  # the JSON endpoints are unchanged
    with urllib.request.urlopen(f"http://127.0.0.1:{example.port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    lines = text.splitlines()
    assert "# TYPE shop_http_requests_total counter" in lines
    assert "# TYPE shop_http_request_duration_seconds histogram" in lines
    # The order of the labels on a line is prometheus_client's choice (it changed across versions).
    assert re.search(r'^shop_http_requests_total\{(path="/healthz",code="200"|code="200",path="/healthz")\} 3\.0$',
                     text, re.MULTILINE), text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("shop_http_requests_total", (("code", "404"), ("path", "other")))] == 2  # one series
    assert samples[("shop_http_requests_total", (("code", "200"), ("path", "/version")))] == 1
    assert samples[("shop_http_request_duration_seconds_count", (("path", "/healthz"),))] == 3
    assert samples[("shop_http_request_duration_seconds_bucket", (("le", "+Inf"), ("path", "/healthz")))] == 3
    # Prometheus asks for OpenMetrics first, and gets it.
    request = urllib.request.Request(f"http://127.0.0.1:{example.port}/metrics",
                                     headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().endswith("# EOF\n")


def test_instant_query_reads_what_prometheus_scraped(example: Example,
                                                      prometheus_factory: Callable[..., str]) -> None:
    _hit(example, "/healthz", 5)
    _hit(example, "/api/items", 2)
    url = prometheus_factory([f"127.0.0.1:{example.port}"])
    assert wait_for_data(url, 'up{job="shop"} == 1') == 1.0  # scraped at least once
    assert instant_query(url, 'up{job="shop"}', timeout=5) == 1.0
    assert instant_query(url, 'sum(shop_http_requests_total{path="/healthz"})', timeout=5) == 5.0
    assert instant_query(url, 'shop_http_requests_total{path="/api/items", code="200"}', timeout=5) == 2.0
    assert instant_query(url, 'sum(shop_http_request_duration_seconds_count{path="/healthz"})', timeout=5) == 5.0
    assert instant_query(url + "/", "count(shop_http_requests_total)", timeout=5) >= 2  # a trailing / is fine

    with pytest.raises(PrometheusError) as several:
        instant_query(url, "shop_http_requests_total", timeout=5)
    assert "series, expected one: aggregate them, e.g. sum(...)" in str(several.value)
    assert 'shop_http_requests_total{code="200", instance=' in str(several.value)
    with pytest.raises(PrometheusError, match=r"^the query returned no data \(no series matched\)$"):
        instant_query(url, 'shop_http_requests_total{path="/nowhere"}', timeout=5)

    # More requests show up at the next scrapes (200ms apart).
    _hit(example, "/healthz", 3)
    assert wait_for_data(url, 'sum(shop_http_requests_total{path="/healthz"})', until=lambda v: v == 8,
                         within=5) == 8.0


@pytest.fixture
def prometheus(prometheus_factory: Callable[..., str]) -> str:
    """A Prometheus scraping nothing: answers at once, for queries that need no data."""
    return prometheus_factory([])


@pytest.mark.parametrize(("query", "expected"), [
    ("1 + 1", 2.0),                 # scalar
    ("vector(3.5)", 3.5),           # a vector of one sample
    ("scalar(vector(-2))", -2.0),
    ("1 / 0", math.inf),
    ("-1 / 0", -math.inf),
])
def test_instant_query_values(prometheus: str, query: str, expected: float) -> None:
    assert instant_query(prometheus, query, timeout=5) == expected


def test_nan_is_a_float_for_the_caller_to_judge(prometheus: str) -> None:
    assert math.isnan(instant_query(prometheus, "0 / 0", timeout=5))
    assert math.isnan(instant_query(prometheus, "vector(0) / 0", timeout=5))


@pytest.mark.parametrize(("query", "message"), [
    ("absent_metric_name", r"^the query returned no data \(no series matched\)$"),
    ('vector(1) or label_replace(vector(2), "x", "y", "", "")',
     r"^the query returned 2 series, expected one: aggregate them, e\.g\. sum\(\.\.\.\) or max\(\.\.\.\) "
     r"\(\{\}, \{x=\"y\"\}\)$"),
    ("up[1m]", r"^the query returned a range vector \(matrix\), expected one number"),
    ('"text"', r"^the query returned a string, expected a number$"),
])
def test_results_that_are_not_one_number(prometheus: str, query: str, message: str) -> None:
    with pytest.raises(PrometheusError, match=message):
        instant_query(prometheus, query, timeout=5)


@pytest.mark.parametrize(("query", "reason"), [
    ("sum(", r"\(400 bad_data\): .*parse error"),
    ("rate(up)", r"\(400 bad_data\): .*expected type range vector"),
])
def test_prometheus_rejects_bad_promql(prometheus: str, query: str, reason: str) -> None:
    with pytest.raises(PrometheusError, match=rf"^Prometheus at {prometheus}/api/v1/query rejected the query "
                                              rf"{reason}") as caught:
        instant_query(prometheus, query, timeout=5)
    assert "\n" not in str(caught.value)


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PrometheusError, match=rf"^cannot connect to Prometheus at http://127\.0\.0\.1:{port}"
                                              r"/api/v1/query: \[Errno 111\] Connection refused$"):
        instant_query(f"http://127.0.0.1:{port}", "up", timeout=5)


def test_no_answer_within_the_timeout(hang_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(PrometheusError, match=rf"^Prometheus at {hang_url}/api/v1/query gave no answer within 0\.3s$"):
        instant_query(hang_url, "up", timeout=0.3)
    assert time.monotonic() - started < 2


def test_a_body_that_trickles_times_out(trickle_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(PrometheusError, match=r"answered 200 but its body did not arrive within 0\.5s$"):
        instant_query(trickle_url, "up", timeout=0.5)
    assert time.monotonic() - started < 2


def test_an_answer_that_is_not_prometheus(http_url: str) -> None:
    with pytest.raises(PrometheusError, match=rf"^{http_url}/api/v1/query answered 404 with a body that is not "
                                              r"a Prometheus API answer: \{\"error\": \"not found\"\}$"):
        instant_query(http_url, "up", timeout=5)


def test_a_path_prefix_is_kept(http_url: str) -> None:
    with pytest.raises(PrometheusError, match=rf"{http_url}/prometheus/api/v1/query answered 404"):
        instant_query(f"{http_url}/prometheus", "up", timeout=5)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_the_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        instant_query("http://127.0.0.1:1", "up", timeout=timeout)
