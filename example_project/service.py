"""Tiny "shop" HTTP service used as the system under release test.

The service serves one release directory (``VERSION`` + ``config/``) against a
SQLite database::

    python example_project/service.py --release DIR --db PATH \
        [--host 127.0.0.1] [--port 18080] [--pidfile PATH]

Endpoints: ``GET /healthz``, ``GET /version``, ``GET /api/items``; everything
else answers 404. All bodies are JSON, except ``GET /metrics``: the service's own
Prometheus metrics (``prometheus_client``, a registry private to the server),
``shop_http_requests_total{path, code}`` and
``shop_http_request_duration_seconds{path}``, where ``path`` is the route
(``/healthz``, ``/version``, ``/api/items``, ``/metrics``) or ``other``, so that
unknown paths cannot create new series. The release is read once at start-up;
configuration problems do not stop the service, they make ``/healthz`` fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("shop")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ROUTES = frozenset({"/healthz", "/version", "/api/items", "/metrics"})


@dataclass
class Release:
    """What was loaded from a release directory; ``error`` is set if it is unusable."""

    path: Path
    version: str | None = None
    table: str | None = None
    db_timeout: float = 2.0
    features: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def load_release(path: Path, config_dir: Path | None = None) -> Release:
    """Read ``VERSION`` from *path*, and ``app.yaml`` and ``features.json`` from *config_dir*
    (default: the release's own ``config/``; an operator's live copy of it when given).

    Never raises for a broken release: the first problem found goes into
    ``Release.error`` so that ``/healthz`` can report it.
    """
    release = Release(path=path)
    config_dir = config_dir or path / "config"
    try:
        release.version = (path / "VERSION").read_text(encoding="utf-8").strip() or None
        if release.version is None:
            raise ValueError("VERSION is empty")
        config = yaml.safe_load((config_dir / "app.yaml").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("config/app.yaml is not a mapping")
        database = config.get("database") or {}
        table = database.get("table")
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"config/app.yaml: invalid database.table {table!r}")
        release.table = table
        release.db_timeout = float(database.get("timeout_seconds", release.db_timeout))
        features = json.loads((config_dir / "features.json").read_text(encoding="utf-8"))
        if not isinstance(features, dict):
            raise ValueError("config/features.json is not an object")
        release.features = features
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        release.error = f"release {path}: {' '.join(str(exc).split())}"
    return release


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (not the global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("shop_http_requests_total", "HTTP requests answered, by route and status.",
                                ["path", "code"], registry=self.registry)
        self.duration = Histogram("shop_http_request_duration_seconds", "Time to answer an HTTP request.",
                                  ["path"], registry=self.registry)

    def observe(self, path: str, code: int, seconds: float) -> None:
        """Count one answered request on *path* (a route or ``other``)."""
        self.requests.labels(path=path, code=str(code)).inc()
        self.duration.labels(path=path).observe(seconds)


class ShopServer(ThreadingHTTPServer):
    """HTTP server that carries the loaded release, the database path and the metrics."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], release: Release, db_path: Path) -> None:
        self.release = release
        self.db_path = db_path
        self.metrics = Metrics()
        super().__init__(address, ShopHandler)

    def connect(self) -> sqlite3.Connection:
        """Open the database read-write without ever creating it."""
        uri = self.db_path.resolve().as_uri() + "?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=self.release.db_timeout)


class ShopHandler(BaseHTTPRequestHandler):
    """Request handler: JSON in, JSON out, HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: ShopServer

    _started: float
    _route: str
    _counted: bool

    def do_GET(self) -> None:
        """Dispatch a GET request by path (the query string is ignored), and count it."""
        self._started = time.perf_counter()
        route = urlsplit(self.path).path
        self._route = route if route in ROUTES else "other"
        self._counted = False
        try:
            self._dispatch(route)
        finally:
            if not self._counted:  # a handler raised: http.server closes the connection unanswered
                self._count(HTTPStatus.INTERNAL_SERVER_ERROR)

    def _count(self, status: int) -> None:
        self._counted = True
        self.server.metrics.observe(self._route, status, time.perf_counter() - self._started)

    def _dispatch(self, route: str) -> None:
        if route == "/healthz":
            self._healthz()
        elif route == "/version":
            self._send(HTTPStatus.OK, {"version": self.server.release.version})
        elif route == "/api/items":
            self._items()
        elif route == "/metrics":
            self._metrics()
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found", "path": route})

    def _healthz(self) -> None:
        release = self.server.release
        if release.error is not None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failing", "reason": release.error})
            return
        try:
            with closing(self.server.connect()) as conn:
                conn.execute(f'SELECT count(*) FROM "{release.table}"').fetchone()
        except sqlite3.Error as exc:
            reason = f"database check failed: {exc}"
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failing", "reason": reason})
            return
        self._send(HTTPStatus.OK, {"status": "ok", "version": release.version})

    def _items(self) -> None:
        release = self.server.release
        if release.error is not None:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": release.error})
            return
        try:
            with closing(self.server.connect()) as conn:
                rows = conn.execute(
                    f'SELECT id, name, price_cents FROM "{release.table}" ORDER BY id'
                ).fetchall()
        except sqlite3.Error as exc:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"query failed: {exc}"})
            return
        items = [{"id": i, "name": n, "price_cents": p} for i, n, p in rows]
        self._send(HTTPStatus.OK, items)

    def _metrics(self) -> None:
        # The text format Prometheus asks for in Accept (OpenMetrics or the classic one).
        encode, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send_bytes(HTTPStatus.OK, encode(self.server.metrics.registry), content_type)

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send_bytes(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        # Counted before the answer leaves: a client that has its answer sees it in /metrics.
        self._count(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silence the per-request access log."""

    def log_message(self, format: str, *args: Any) -> None:
        """Route errors reported by http.server to the logger instead of raw stderr."""
        log.warning("%s %s", self.address_string(), format % args)


def _write_pidfile(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(tmp, path)


def _remove_pidfile(path: Path) -> None:
    """Remove *path* only if it still names this process."""
    try:
        if path.read_text(encoding="ascii").strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; return the process exit code."""
    parser = argparse.ArgumentParser(description="Tiny shop HTTP service.")
    parser.add_argument("--release", required=True, type=Path, help="release directory")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file")
    parser.add_argument("--config", type=Path, help="config directory (default: RELEASE/config)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=18080, help="port (default: %(default)s)")
    parser.add_argument("--pidfile", type=Path, help="write the pid here while running")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    release = load_release(args.release, args.config)
    if release.error:
        log.error("%s (serving anyway, /healthz will fail)", release.error)
    if not args.db.is_file():
        log.error("database %s does not exist (serving anyway, /healthz will fail)", args.db)
    try:
        server = ShopServer((args.host, args.port), release, args.db)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1

    def request_shutdown(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() blocks until serve_forever() returns, so it must not run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)
    if args.pidfile:
        _write_pidfile(args.pidfile)
    log.info("serving release %s (version %s) on http://%s:%d",
             args.release, release.version, args.host, args.port)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        if args.pidfile:
            _remove_pidfile(args.pidfile)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
