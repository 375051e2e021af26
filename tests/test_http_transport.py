"""pytest_release.http, the transport every HTTP user goes through, against real server processes
(tests/servers.py): whole answers, every hostile server ended at its deadline or byte limit, the
keep-alive pool, and the watchdog on a raw socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3

from pytest_release.http import (Answer, connect_reason, fetch, guarded, http_pool, read_body, tls_context,
                                 watch)

#: Generous: the machine is shared and loaded; a request that is not ended runs for ever.
SLACK = 4.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_whole_answer_arrives_with_status_headers_and_body(http_url: str) -> None:
    answer = fetch(f"{http_url}/healthz", timeout=5, max_body=1024)
    assert answer.ok and answer.kind == "" and answer.status == 200
    assert json.loads(answer.body)["status"] == "ok"
    assert answer.size == len(answer.body) and answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path, status", [("/fail", 503), ("/nowhere", 404)])
def test_an_error_status_is_an_answer_not_a_failure(http_url: str, path: str, status: int) -> None:
    answer = fetch(http_url + path, timeout=5, max_body=1024)
    assert answer.ok and answer.status == status


@pytest.mark.parametrize("keep_body", [True, False])
def test_a_body_not_kept_is_still_read_and_counted(http_url: str, keep_body: bool) -> None:
    answer = fetch(f"{http_url}/healthz", timeout=5, max_body=1024, keep_body=keep_body)
    assert answer.ok and answer.size > 0
    assert (answer.body != b"") is keep_body


def test_headers_only_stops_before_the_body(server_factory: Callable[[str], int]) -> None:
    url = f"http://127.0.0.1:{server_factory('huge')}/"  # a 1 GiB body: read, it would not end in time
    answer = fetch(url, timeout=5, max_body=1024, read_body=False)
    assert answer.ok and answer.status == 200 and answer.body == b"" and answer.size == 0
    assert answer.headers["Content-Length"] == str(1024 ** 3)


def test_a_connection_read_whole_goes_back_to_the_pool_and_is_reused(http_url: str) -> None:
    fetch(f"{http_url}/healthz", timeout=5, max_body=1024)
    pool = http_pool().connection_from_url(http_url)
    opened = pool.num_connections
    for _ in range(5):
        assert fetch(f"{http_url}/healthz", timeout=5, max_body=1024).ok
    assert pool.num_connections == opened


def test_a_closed_pool_is_not_used_again(http_url: str) -> None:
    """fetch keeps its own lookup of pools by origin, which must never hand out a closed one
    (closed by a caller of http_pool, or by the manager)."""
    assert fetch(f"{http_url}/healthz", timeout=5, max_body=1024).ok
    http_pool().connection_from_url(http_url).close()
    http_pool().clear()
    assert fetch(f"{http_url}/healthz", timeout=5, max_body=1024).ok


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def test_more_origins_than_the_manager_keeps() -> None:
    """Requests to 70 origins (the manager keeps 64 pools), then to the first ones again: fetch's
    own lookup of pools by origin answers each (whatever the manager evicted meanwhile)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Ok) for _ in range(70)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for server in servers + servers[:8]:
            answer = fetch(f"http://127.0.0.1:{server.server_address[1]}/", timeout=5, max_body=1024)
            assert answer.ok and answer.status == 200 and answer.body == b"ok", answer.error
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_refused_connection_says_so_in_the_systems_words() -> None:
    url = f"http://127.0.0.1:{_free_port()}/"
    answer = fetch(url, timeout=5, max_body=1024)
    assert answer.kind == "connect" and not answer.ok
    assert "refused" in answer.error.lower() and "object at 0x" not in answer.error
    assert answer.measured() == {"error": "connect", "waited_s": round(answer.elapsed, 3)}


@pytest.mark.parametrize("mode, kind, status, max_body", [
    ("hang", "timeout", None, 64 * 1024),            # never answers
    ("drip-headers", "timeout", 200, 64 * 1024),     # a header byte a second: no socket timeout ends it
    ("slow-headers", "timeout", 200, 64 * 1024),
    ("drip-body", "timeout", 200, 1024 * 1024),      # the body (100000 bytes) a byte a second
    ("trickle", "timeout", 200, 1024 * 1024),
    ("drip-body", "too_large", 200, 64 * 1024),      # its Content-Length is past max_body: not read
    ("endless", "too_large", 200, 64 * 1024),        # a chunked body without end: cut at max_body
    ("huge", "too_large", 200, 64 * 1024),           # 1 GiB announced: not read at all
])
def test_every_hostile_server_is_ended_by_the_deadline_or_the_byte_limit(
        server_factory: Callable[[str], int], mode: str, kind: str, status: int | None, max_body: int) -> None:
    url = f"http://127.0.0.1:{server_factory(mode)}/"
    timeout = 0.6
    started = time.monotonic()
    answer = fetch(url, timeout=timeout, max_body=max_body, why_late="the test's timeout")
    took = time.monotonic() - started
    assert answer.kind == kind, answer
    assert took < timeout + SLACK
    if kind == "timeout":
        assert took >= timeout * 0.9 and "the test's timeout" in answer.error
        assert answer.status in (None, status)
    else:
        assert answer.status == status and f"larger than {max_body} bytes" in answer.error
        assert answer.measured()["body_bytes_read"] == answer.size and answer.body == b""


def test_read_body_under_guarded_ends_a_dripping_body_at_the_deadline(server_factory: Callable[[str], int]) -> None:
    url = f"http://127.0.0.1:{server_factory('drip-body')}/"
    deadline = time.monotonic() + 0.5
    with guarded(deadline) as guard:
        response = http_pool().request("GET", url, timeout=urllib3.Timeout(total=10), retries=False,
                                       preload_content=False)
        try:
            body = read_body(response, deadline, 1024 * 1024)
        except urllib3.exceptions.ProtocolError:  # the watchdog shut the socket mid-read
            assert guard.expired
            body = None
    assert body is None and response.status == 200
    assert time.monotonic() < deadline + SLACK
    assert guard.done


@pytest.mark.parametrize("limit", [1, 10, 1000])
def test_read_body_cuts_a_body_past_its_limit(http_url: str, limit: int) -> None:
    whole = len(http_pool().request("GET", f"{http_url}/healthz", retries=False).data)
    response = http_pool().request("GET", f"{http_url}/healthz", retries=False, preload_content=False)
    body = read_body(response, time.monotonic() + 5, limit)
    assert body is not None
    assert len(body) == whole if limit >= whole else len(body) > limit


def test_guarded_ends_headers_dripped_into_a_pooled_request(server_factory: Callable[[str], int]) -> None:
    url = f"http://127.0.0.1:{server_factory('drip-headers')}/"
    started = time.monotonic()
    with guarded(started + 0.5) as guard:
        try:  # http.client may raise, or hand back what arrived: either way the guard says it expired
            http_pool().request("GET", url, timeout=urllib3.Timeout(total=30), retries=False,
                                preload_content=False).close()
        except (urllib3.exceptions.HTTPError, OSError):
            pass
    assert guard.expired and time.monotonic() - started < 0.5 + SLACK


def test_watch_wakes_a_reader_blocked_on_a_raw_socket(server_factory: Callable[[str], int]) -> None:
    sock = socket.create_connection(("127.0.0.1", server_factory("hang")), timeout=30)
    started = time.monotonic()
    guard = watch(started + 0.4, sock)
    try:
        assert sock.recv(1) == b""  # shut down: end of stream, not a 30 s wait
    finally:
        sock.close()
    assert guard.finish() is True and time.monotonic() - started < 0.4 + SLACK


def test_a_guard_finished_in_time_never_fires(http_url: str) -> None:
    sock = socket.create_connection(("127.0.0.1", int(http_url.rsplit(":", 1)[1])), timeout=5)
    guard = watch(time.monotonic() + 0.2, sock)
    assert guard.finish() is False
    time.sleep(0.4)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert sock.recv(12).startswith(b"HTTP/1.1 200")
    sock.close()


def test_the_pool_is_one_per_tls_setting() -> None:
    assert http_pool() is http_pool(verify=True, ca=None)
    assert http_pool(verify=False) is not http_pool()


def test_tls_context_verifies_against_the_system_store_or_the_given_ca() -> None:
    import ssl

    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises((FileNotFoundError, ssl.SSLError)):
        tls_context("/nonexistent/ca.pem")


def test_connect_reason_drops_urllib3s_reprs() -> None:
    exc = urllib3.exceptions.NewConnectionError(
        None, "<HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused")
    assert connect_reason(exc) == "[Errno 111] Connection refused"


def test_an_answer_reports_its_figures_for_a_failed_check() -> None:
    answer = Answer("http://x/", status=200, error="stopped", kind="too_large", size=70000, elapsed=0.12345)
    assert answer.measured() == {"status": 200, "error": "too_large", "waited_s": 0.123, "body_bytes_read": 70000}
