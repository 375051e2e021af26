"""Real servers for the tests, each its own process on 127.0.0.1.

``python servers.py MODE`` binds a free port, prints it on the first line of stdout and serves
until killed. Modes:

* ``http``: ``/healthz`` answers 200 ``{"status": "ok", "version": "1.2.3"}``, ``/fail`` 503,
  ``/slow`` after 0.3 s, anything else 404 (keep-alive, Nagle disabled).
* ``https CERT KEY``: the same over TLS with the given certificate chain and key (PEM files).
* ``hang``: accepts connections and never answers.
* ``trickle``: answers with headers, then one byte of body every 0.2 s, forever.
* ``slow-headers``: answers with a status line, then one byte of a header every 0.2 s, forever
  (no socket timeout and no body deadline can end it: only the gate's budget can).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok", "version": "1.2.3", "checks": {"db": "up"}})
        elif self.path == "/fail":
            self._send(503, {"status": "failing", "reason": "database unreachable"})
        elif self.path == "/slow":
            time.sleep(0.3)
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})


def hang(sock: socket.socket) -> None:
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)


def trickle(sock: socket.socket, head: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n") -> None:
    def serve(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(head)
        try:
            while True:
                conn.sendall(b"a")
                time.sleep(0.2)
        except OSError:
            pass

    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def main(mode: str, *tls: str) -> None:
    if mode in ("http", "https"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
    if mode == "slow-headers":
        trickle(sock, b"HTTP/1.1 200 OK\r\nX-Slow: ")
    else:
        {"hang": hang, "trickle": trickle}[mode](sock)


if __name__ == "__main__":
    main(*sys.argv[1:])
