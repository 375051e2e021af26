"""The example's webhook receiver: it checks each notification's signature and logs it.

    SHOP_WEBHOOK_SECRET=... python3 receiver.py PORT LOGFILE
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["SHOP_WEBHOOK_SECRET"].encode()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(signature, self.headers.get("X-Release-Signature", ""))
        note = json.loads(body)
        with open(sys.argv[2], "a", encoding="utf-8") as log:
            log.write(f"{note['sent_at']} {'signed' if signed else 'BAD SIGNATURE'} {note['event']}: {note['summary']}\n")
        self.send_response(204 if signed else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
