"""HTTP transport: one keep-alive pool per TLS setting, requests that end at a total deadline.

Every part of pytest-release that speaks HTTP goes through here: the checks (through
:func:`pytest_release.checks.http.get`, which adds a check's budget and limits), the Prometheus
client, a rollback step's health probe and the webhook notifier.

- :func:`http_pool`: a process-wide, thread-safe urllib3 pool for ``(verify, ca)``; no retries,
  no redirects followed.
- :func:`watch` and :func:`guarded`: a total deadline. urllib3's timeouts are per socket
  operation, so a server that drips one byte a second would never time out by them; a watchdog
  thread shuts the request's socket down when its deadline passes, wherever the request is
  (connecting, the TLS handshake, headers or body).
- :func:`read_body`: a body read in chunks, cut past a byte limit, given up at the deadline; the
  connection goes back to the pool only when the body was read whole.
- :func:`fetch`: one bounded GET whose whole answer (connect, headers, body) arrives within a
  timeout and a byte limit, or an :class:`Answer` saying what went wrong. It never raises for
  what the server or the network does.
- :func:`tls_context` and :func:`connect_reason`: CA handling for raw TLS connections, and the
  OS's words for a failed connection.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .units import format_bytes, format_duration

__all__ = ["CHUNK", "Answer", "Guard", "connect_reason", "fetch", "guarded", "http_pool", "read_body",
           "tls_context", "watch"]

CHUNK = 64 * 1024


class Guard:
    """Ends one request at its deadline: shuts down the socket it is attached to (the socket
    only, not the TLS layer above it, so a reader blocked in ``recv`` wakes with an error)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._conn: Any = None
        self.done = False
        self.expired = False

    def attach(self, conn: Any = None, sock: socket.socket | None = None) -> None:
        with self._lock:
            self._conn, self._sock = conn, sock
            if self.expired:
                self._shut()

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            self._shut()

    def finish(self) -> bool:
        """Stop guarding; ``True`` when the deadline had passed (the socket is shut: do not reuse it)."""
        with self._lock:
            self.done = True
            return self.expired

    def _shut(self) -> None:
        sock = self._sock if self._sock is not None else getattr(self._conn, "sock", None)
        if sock is None:
            return
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, TypeError, ValueError):
            pass


class _Watchdog:
    """One daemon thread that expires guards at their deadlines (earliest first)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Guard]] = []
        self._cond = threading.Condition()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, guard: Guard) -> None:
        with self._cond:
            # The thread is woken only when this deadline comes before every other: then its wait
            # must be shorter. Requests come by the thousand with the same timeout, each later than
            # the last; waking a thread for each would cost more than the request.
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._count), guard))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pytest-release-watchdog", daemon=True)
                self._thread.start()
            elif earliest is None or deadline < earliest:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, guard = self._heap[0]
                if guard.done:
                    heapq.heappop(self._heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            guard.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()


def watch(deadline: float, sock: socket.socket | None = None) -> Guard:
    """A guard that shuts ``sock`` (attach it later if need be) down at ``deadline``."""
    guard = Guard()
    if sock is not None:
        guard.attach(sock=sock)
    _WATCHDOG.arm(deadline, guard)
    return guard


class _Attach:
    """A connection that tells the request in flight on this thread which socket to guard."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        guard = getattr(_current, "guard", None)
        if guard is not None:
            guard.attach(conn=self)
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:  # the raw socket, before any TLS handshake on it
        sock = super()._new_conn()  # type: ignore[misc]
        guard = getattr(_current, "guard", None)
        if guard is not None:
            guard.attach(sock=sock)
        return sock


class _Connection(_Attach, HTTPConnection):
    pass


class _TLSConnection(_Attach, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_pools: dict[tuple[bool, str | None], urllib3.PoolManager] = {}
_pools_lock = threading.Lock()


def http_pool(*, verify: bool = True, ca: str | None = None) -> urllib3.PoolManager:
    """A process-wide keep-alive pool for these TLS settings (thread-safe)."""
    key = (verify, ca)
    with _pools_lock:
        if key not in _pools:
            manager = urllib3.PoolManager(num_pools=64, maxsize=32, retries=False, ca_certs=ca,
                                          cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE")
            manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
            _pools[key] = manager
        return _pools[key]


_origins: dict[tuple[str, str, int | None, bool, str | None], HTTPConnectionPool] = {}


def _origin_pool(url: urllib3.util.Url, verify: bool, ca: str | None) -> HTTPConnectionPool:
    """The keep-alive pool of ``url``'s origin (the same pools :func:`http_pool` hands out),
    looked up by a plain key: a check asks for one per request. A pool closed since (whoever
    closed it: its manager, a caller of :func:`http_pool`) is asked for again."""
    key = (url.scheme or "http", url.host or "", url.port, verify, ca)
    pool = _origins.get(key)
    if pool is None or pool.pool is None:
        pool = _origins[key] = http_pool(verify=verify, ca=ca).connection_from_host(
            url.host, port=url.port, scheme=url.scheme or "http")
    return pool


def _urlopen(url: str, headers: Mapping[str, str] | None, timeout: float, verify: bool,
             ca: str | None) -> urllib3.BaseHTTPResponse:
    """One GET through the pool of ``url``'s origin, no retries, no redirects followed."""
    parsed = urllib3.util.parse_url(url)
    if parsed.scheme not in (None, "http", "https"):
        raise urllib3.exceptions.URLSchemeUnknown(parsed.scheme)

    def request() -> urllib3.BaseHTTPResponse:
        return _origin_pool(parsed, verify, ca).urlopen(
            "GET", parsed.request_uri, headers=dict(headers) if headers else None,
            timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False, redirect=False,
            preload_content=False, assert_same_host=False)

    try:
        return request()
    except urllib3.exceptions.ClosedPoolError:  # closed between the lookup and the request: once more
        return request()


def connect_reason(exc: BaseException) -> str:
    """The OS's words for a failed connection, without urllib3's object reprs."""
    text = str(getattr(exc, "reason", None) or exc)
    return text.rpartition("Failed to establish a new connection: ")[2] or text


@dataclass
class Answer:
    """What one bounded GET came to.

    ``error`` is empty when the whole answer arrived within the limits; else ``kind`` says what
    went wrong: ``budget`` (not tried), ``connect``, ``timeout``, ``too_large`` or ``protocol``.
    ``status`` and ``headers`` are set whenever the status line and headers arrived.
    """

    url: str
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    size: int = 0
    elapsed: float = 0.0
    error: str = ""
    kind: str = ""
    #: The timeout was the budget left, not ``request_timeout``: the budget ran out.
    by_budget: bool = False

    @property
    def ok(self) -> bool:
        return not self.error

    def measured(self) -> dict[str, Any]:
        """The figures of a failed answer for a check's ``measured``."""
        values: dict[str, Any] = {}
        if self.status is not None:
            values["status"] = self.status
        values["error"] = self.kind or "none"
        values["waited_s"] = round(self.elapsed, 3)
        if self.kind == "too_large":
            values["body_bytes_read"] = self.size
        return values


@contextlib.contextmanager
def guarded(deadline: float) -> Iterator[Guard]:
    """Every request made through :func:`http_pool` on this thread inside the block ends at
    ``deadline``, wherever it is (for callers that read the response themselves)."""
    guard = watch(deadline)
    previous = getattr(_current, "guard", None)
    _current.guard = guard
    try:
        yield guard
    finally:
        _current.guard = previous
        guard.finish()


def read_body(response: urllib3.BaseHTTPResponse, deadline: float, limit: int) -> bytes | None:
    """The body of ``response``, cut once more than ``limit`` bytes arrived (the caller sees a
    result longer than ``limit``), or ``None`` when it does not arrive before ``deadline``
    (monotonic): a socket timeout is per read, so a server that trickles bytes would otherwise
    never time out. The connection goes back to the pool only when the body was read whole."""
    chunks: list[bytes] = []
    size = 0
    complete = False
    try:
        while size <= limit and time.monotonic() <= deadline:
            chunk = response.read1(CHUNK)
            if not chunk:
                complete = True
                break
            chunks.append(chunk)
            size += len(chunk)
    except (TimeoutError, urllib3.exceptions.TimeoutError):
        pass
    finally:
        if complete:
            response.release_conn()
        else:
            response.close()  # never hand a half-read connection back to the pool
    if not complete and size <= limit:
        return None
    return b"".join(chunks)


def tls_context(ca: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the server: against ``ca`` (a PEM file) when given,
    else against the system's store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca:
        context.load_verify_locations(cafile=ca)
    return context


def fetch(url: str, *, timeout: float, max_body: int, verify: bool = True, ca: str | None = None,
          read_body: bool = True, keep_body: bool = True, headers: Mapping[str, str] | None = None,
          by_budget: bool = False, why_late: str = "") -> Answer:
    """GET ``url``; the whole answer (connect, headers, body) within ``timeout`` seconds and at
    most ``max_body`` bytes of body. ``read_body=False`` stops after the headers (the connection
    is closed, not reused); ``keep_body=False`` reads the body without keeping it. Never raises
    for what the server or network does: :class:`Answer` says."""
    started = time.monotonic()
    deadline = started + timeout
    answer = Answer(url, by_budget=by_budget)
    why_late = why_late or f"timeout {format_duration(timeout)}"

    def late() -> Answer:
        answer.elapsed = time.monotonic() - started
        where = "gave no answer" if answer.status is None else f"answered {answer.status} but its body did not arrive"
        answer.error, answer.kind = f"{where} within {format_duration(round(answer.elapsed, 2))} ({why_late})", "timeout"
        return answer

    def broken(exc: BaseException) -> Answer:
        answer.elapsed = time.monotonic() - started
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, (urllib3.exceptions.ProtocolError, http.client.HTTPException)) and reason.args:
            reason = reason.args[-1]
        answer.error, answer.kind = f"failed: {reason}", "protocol"
        return answer

    guard = watch(deadline)
    previous = getattr(_current, "guard", None)
    _current.guard = guard
    try:
        response = _urlopen(url, headers, timeout, verify, ca)
    except urllib3.exceptions.NewConnectionError as exc:  # a subclass of TimeoutError in urllib3 2
        if guard.finish():
            return late()
        answer.elapsed = time.monotonic() - started
        answer.error, answer.kind = f"failed: cannot connect: {connect_reason(exc)}", "connect"
        return answer
    except (TimeoutError, urllib3.exceptions.TimeoutError):
        guard.finish()
        return late()
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
        if guard.finish():
            return late()
        return broken(exc)
    finally:
        _current.guard = previous
    if guard.expired:  # shut down while the headers dripped in: what arrived is no answer
        response.close()
        guard.finish()
        return late()
    answer.status = response.status
    answer.headers = dict(response.headers)
    if not read_body:
        guard.finish()
        response.close()  # never hand a half-read connection back to the pool
        answer.elapsed = time.monotonic() - started
        return answer
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_body:
        guard.finish()
        response.close()
        answer.elapsed = time.monotonic() - started
        answer.error = (f"answered {answer.status} with a body larger than {format_bytes(max_body)} "
                        f"(Content-Length {length}): not read")
        answer.kind = "too_large"
        return answer
    chunks: list[bytes] = []
    complete = False
    try:
        while time.monotonic() < deadline:
            chunk = response.read1(CHUNK)
            if not chunk:
                complete = True
                break
            answer.size += len(chunk)
            if answer.size > max_body:
                break
            if keep_body:
                chunks.append(chunk)
    except (TimeoutError, urllib3.exceptions.TimeoutError):
        pass
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
        response.close()
        return late() if guard.finish() else broken(exc)
    expired = guard.finish()
    if complete and not expired:
        response.release_conn()
    else:
        response.close()
    if answer.size > max_body:
        answer.elapsed = time.monotonic() - started
        answer.error = f"answered {answer.status} with a body larger than {format_bytes(max_body)}: stopped reading"
        answer.kind = "too_large"
        return answer
    if not complete or expired:
        return late()
    answer.body = b"".join(chunks)
    answer.elapsed = time.monotonic() - started
    return answer
