"""Real servers for the tests, each its own process on 127.0.0.1.

``python servers.py MODE`` binds a free port, prints it on the first line of stdout and serves
until killed. Modes:

* ``http``: ``/healthz`` answers 200 ``{"status": "ok", "version": "1.2.3"}``, ``/fail`` 503,
  ``/slow`` after 0.3 s, ``/delay?ms=N`` after N ms, ``/version`` ``{"version": "1.2.3"}``,
  ``/version?file=PATH`` the version written in the file PATH (the release deployed now),
  ``/unless?file=PATH`` 503 while the file PATH exists, ``/echo?json=DOC`` 200 with the
  URL-encoded JSON document DOC, anything else 404 (keep-alive, Nagle disabled). Every answer carries
  ``X-Content-Type-Options: nosniff``.
* ``https CERT KEY``: the same over TLS with the given certificate chain and key (PEM files), plus
  ``Strict-Transport-Security``.
* ``insecure``: like ``http`` but without security headers, with ``/.git/config`` and ``/.env``
  served (200) and ``/version`` reporting ``0.9.1``.
* ``late FILE SECONDS``: like ``http``, but it starts listening only ``SECONDS`` after ``FILE``
  exists (a deploy that returns before its service answers): until then a connection is refused.
* ``hang``: accepts connections and never answers.
* ``trickle``: answers with headers, then one byte of body every 0.2 s, forever.
* ``slow-headers``: answers with a status line, then one byte of a header every 0.2 s, forever
  (no socket timeout and no body deadline can end it: only the gate's budget can).
* ``drip-headers``: a status line, then one byte of a header every second, forever.
* ``drip-body``: headers (``Content-Length: 100000``), then one byte of body every second.
* ``endless``: a chunked body of 64 KiB chunks, as fast as it can, forever.
* ``huge``: a 1 GiB body (``Content-Length: 1073741824``), sent as fast as it can.

* ``receiver LOG [STATUS ...]``: a webhook receiver: every POST is appended to the file LOG as a
  JSON line (path, headers, body as text, when), and answered with the next STATUS of the list
  (the last one repeats; default 200).

Every hostile mode answers any path the same way, and serves each connection on its own thread.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import urllib.parse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    security_headers: tuple[tuple[str, str], ...] = (("X-Content-Type-Options", "nosniff"),)
    exposed = False
    version = "1.2.3"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in self.security_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok", "version": "1.2.3", "checks": {"db": "up"}})
        elif self.path == "/fail":
            self._send(503, {"status": "failing", "reason": "database unreachable"})
        elif self.path.endswith("/slow"):  # /slow, and /nodeN/slow for instances of a service
            time.sleep(0.3)
            self._send(200, {"status": "ok"})
        elif self.path.startswith("/delay?ms="):
            time.sleep(int(self.path.partition("=")[2]) / 1000)
            self._send(200, {"status": "ok"})
        elif self.path.startswith("/unless?file="):  # a fault switch: 503 while the file exists
            fault = os.path.exists(urllib.parse.unquote(self.path.partition("=")[2]))
            self._send(503 if fault else 200, {"status": "fault" if fault else "ok"})
        elif self.path.startswith("/version?file="):  # the version of the release deployed now
            with open(urllib.parse.unquote(self.path.partition("=")[2])) as current:
                version = current.read().strip()
            self._send(200, {"version": version, "build": {"version": version}})
        elif self.path.startswith("/echo?json="):  # the document a test asks for
            self._send(200, json.loads(urllib.parse.unquote(self.path.partition("=")[2])))
        elif self.path == "/version":
            self._send(200, {"version": self.version, "build": {"version": self.version}})
        elif self.exposed and self.path in ("/.git/config", "/.env"):
            self._send(200, {"leak": "[core] repositoryformatversion = 0"})
        else:
            self._send(404, {"error": "not found"})


def hang(sock: socket.socket) -> None:
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)


def trickle(sock: socket.socket, head: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
            interval: float = 0.2) -> None:
    def serve(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(head)
        try:
            while True:
                conn.sendall(b"a")
                time.sleep(interval)
        except OSError:
            pass

    _serve_each(sock, serve)


def flood(sock: socket.socket, head: bytes, chunk: bytes, count: int | None) -> None:
    """``head``, then ``chunk`` ``count`` times (forever when ``None``) as fast as the reader reads."""
    def serve(conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                conn.sendall(head)
                sent = 0
                while count is None or sent < count:
                    conn.sendall(chunk)
                    sent += 1
        except OSError:
            pass
        finally:
            conn.close()

    _serve_each(sock, serve)


def _serve_each(sock: socket.socket, serve: object) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


BLOCK = 64 * 1024
HOSTILE = {
    "hang": lambda sock: hang(sock),
    "trickle": lambda sock: trickle(sock),
    "slow-headers": lambda sock: trickle(sock, b"HTTP/1.1 200 OK\r\nX-Slow: "),
    "drip-headers": lambda sock: trickle(sock, b"HTTP/1.1 200 OK\r\nX-Drip: ", 1.0),
    "drip-body": lambda sock: trickle(sock, interval=1.0),
    "endless": lambda sock: flood(sock, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                  b"%x\r\n" % BLOCK + b"a" * BLOCK + b"\r\n", None),
    "huge": lambda sock: flood(sock, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1024 ** 3),
                               b"a" * BLOCK, 1024 ** 3 // BLOCK),
}


def late(go: str, seconds: str) -> None:
    with socket.socket() as sock:  # a free port, closed again: nothing listens there yet
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    print(port, flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    time.sleep(float(seconds))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def receiver(log: str, *statuses: str) -> None:
    answers = [int(s) for s in statuses] or [200]
    lock = threading.Lock()
    count = [0]

    class Receiver(Handler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                status = answers[min(count[0], len(answers) - 1)]
                count[0] += 1
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"path": self.path, "headers": dict(self.headers.items()),
                                         "body": body.decode("utf-8"), "status": status, "at": time.time()}) + "\n")
            self._send(status, {"received": status < 300})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def main(mode: str, *tls: str) -> None:
    if mode == "receiver":
        receiver(*tls)
        return
    if mode == "late":
        late(*tls)
        return
    if mode in ("http", "https", "insecure"):
        handler: type[Handler] = Handler
        if mode == "https":
            handler = type("SecureHandler", (Handler,), {"security_headers": Handler.security_headers + (
                ("Strict-Transport-Security", "max-age=31536000"),)})
        elif mode == "insecure":
            handler = type("InsecureHandler", (Handler,), {"security_headers": (), "exposed": True,
                                                           "version": "0.9.1"})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        if mode == "https":
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls[0], tls[1])
            server.socket = context.wrap_socket(server.socket, server_side=True)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    HOSTILE[mode](sock)


if __name__ == "__main__":
    main(*sys.argv[1:])
