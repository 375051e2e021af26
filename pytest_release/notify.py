"""Notifications: webhooks that tell people when an alert fires, a rollback runs, the verdict is in.

The plan's top-level ``notify`` list names the receivers::

    notify:
      - name: oncall
        url: https://hooks.example.com/release          # http(s); a secret URL: ${env:HOOK_URL}
        secret: ${env:RELEASE_WEBHOOK_SECRET}            # signs the body: X-Release-Signature: sha256=HEX
        events: [alert_fired, trigger_fired, rollback_finished, verdict]   # default: all of them
        timeout: 3s                                      # one attempt, connect to answer (default 3s)
        retries: 2                                       # more attempts after a failed one (default 2)
      - name: team-channel
        url: ${env:SLACK_WEBHOOK_URL}
        format: slack                                    # {"text": "..."}: Slack's incoming webhooks

Events: ``alert_fired`` (a monitoring alert fired, as it fires), ``trigger_fired`` (a rollback
trigger fired, before its first step), ``rollback_finished`` (its outcome) and ``verdict`` (the
run's outcome, at the end of the session). The generic format is a JSON document
(:data:`NOTIFICATION_SCHEMA`, ``python -m pytest_release schema --notifications``); with a
``secret`` its body is signed with HMAC-SHA256 in the ``X-Release-Signature`` header.

Delivery never gets in the way of the release: each delivery runs on a daemon thread of its own
(a rollback never waits for it), each attempt is bounded by the receiver's ``timeout`` (connect,
request and answer together: a watchdog shuts the socket at the deadline), a failed attempt
(no answer, 5xx, 408, 429) is retried after 0.5 s, 1 s, 2 s ... while the run goes on, and no
outcome of a delivery changes a verdict or an exit code. At the end of the session the run waits
for deliveries still in flight at most the longest receiver ``timeout``; what has not finished by
then is recorded as abandoned. Every attempt (status, duration, error) is recorded in
``runs/RUN_ID/notifications.json``; URLs there have their user info and query string removed and
every ``${env:...}`` value masked, and the signing secret appears nowhere.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .model import Receiver
from .secrets import MASK, redact, redact_value
from .units import DURATION_SCHEMA, parse_duration

__all__ = ["EVENTS", "NOTIFICATION_SCHEMA", "RECEIVER_SCHEMA", "Notifier", "Receiver", "build_receivers",
           "check_receivers", "emit", "public_url", "sign", "verify_signature"]

EVENTS = ("alert_fired", "trigger_fired", "rollback_finished", "verdict")
FORMATS = ("json", "slack")
SIGNATURE_HEADER = "X-Release-Signature"
DEFAULT_TIMEOUT = 3.0
DEFAULT_RETRIES = 2
#: The first retry waits this long, each later one twice as long as the one before.
BACKOFF = 0.5
#: At most this many deliveries per run (a flapping alert cannot flood a channel or the evidence).
MAX_DELIVERIES = 100
#: The most of an answer's body read (the rest is not waited for).
MAX_ANSWER = 64 * 1024
PAYLOAD_SCHEMA_ID = "pytest-release/notification/v1"

_name = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$",
         "description": "a name: letters, digits, _ . - (not starting with a digit)"}

RECEIVER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "url"],
    "description": "a webhook receiver: name, url, and optionally format, secret, events, timeout, retries",
    "properties": {
        "name": _name,
        "url": {"type": "string", "pattern": r"^https?://",
                "description": "the webhook's URL (http:// or https://); a URL that holds a token: ${env:NAME}"},
        "format": {"enum": list(FORMATS), "description": "json (a signed JSON document) or slack ({\"text\": ...})"},
        "secret": {"type": "string", "minLength": 1,
                   "description": "the HMAC-SHA256 signing key, from the environment: ${env:NAME}"},
        "events": {"type": "array", "minItems": 1, "uniqueItems": True,
                   "items": {"enum": list(EVENTS), "description": "an event"},
                   "description": "the events this receiver gets (default: all)"},
        "timeout": {**DURATION_SCHEMA, "description": "the longest one attempt may take (default 3s)"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10,
                    "description": "attempts after a failed one (default 2)"},
        "description": {"type": "string"},
    },
}

_time = {"type": "string", "format": "date-time"}
NOTIFICATION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://pytest-release.invalid/notification.schema.json",
    "title": "pytest-release notification (format: json)",
    "type": "object",
    "required": ["schema", "event", "delivery", "sent_at", "release", "run_id", "plan", "summary", "data"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": PAYLOAD_SCHEMA_ID},
        "event": {"enum": list(EVENTS)},
        "delivery": {"type": "string", "description": "the same for every attempt of one delivery"},
        "sent_at": _time,
        "release": {"type": "object", "required": ["name", "version"],
                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
        "run_id": {"type": "string"},
        "plan": {"type": "object", "required": ["path", "sha256"]},
        "summary": {"type": "string", "description": "one line for people"},
        "data": {"type": "object"},
    },
    "allOf": [
        {"if": {"properties": {"event": {"const": "alert_fired"}}},
         "then": {"properties": {"data": {"required": ["stage", "alert", "metric", "at_s", "share", "threshold",
                                                       "window_s"]}}}},
        {"if": {"properties": {"event": {"const": "trigger_fired"}}},
         "then": {"properties": {"data": {"required": ["trigger", "reason", "procedures"]}}}},
        {"if": {"properties": {"event": {"const": "rollback_finished"}}},
         "then": {"properties": {"data": {"required": ["trigger", "outcome", "failed_step", "steps", "duration_s"],
                                          "properties": {"outcome": {"enum": ["rolled_back",
                                                                               "rollback_failed"]}}}}}},
        {"if": {"properties": {"event": {"const": "verdict"}}},
         "then": {"properties": {"data": {"required": ["outcome", "banner", "exit_status", "stages", "failed"]}}}},
    ],
}


# -- the plan -----------------------------------------------------------------------------------


def check_receivers(doc: Any) -> None:
    """What the schema cannot say about ``notify``: unique names, a signing secret that comes from
    the environment, a URL whose user info or query holds no literal secret. ``doc`` is the plan's
    :class:`yamldoc.Document`; problems are added to it."""
    entries = doc.data.get("notify") if isinstance(doc.data, dict) else None
    if not isinstance(entries, list):
        return
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        if isinstance(name, str):
            if name in seen:
                first = doc.mark(("notify", seen[name])).line
                doc.add(("notify", index, "name"), f"duplicate name {name!r} (first at line {first})")
            seen.setdefault(name, index)
        secret = entry.get("secret")
        if isinstance(secret, str) and secret not in doc.secrets:
            doc.add(("notify", index, "secret"), "a signing secret must come from the environment: write "
                                                 "${env:NAME}, never the key itself (the plan is copied into "
                                                 "the evidence)")
        url = entry.get("url")
        if isinstance(url, str):
            parts = urlsplit(redact(url, doc.secrets))
            if (parts.password and MASK not in parts.password) or (parts.query and MASK not in parts.query):
                doc.add(("notify", index, "url"), "the URL carries a password or query string written in the "
                                                  "plan: put the URL (or its secret part) in ${env:NAME}")


def build_receivers(data: Mapping[str, Any], doc: Any) -> list[Receiver]:
    """The plan's receivers (the plan is valid)."""
    found = []
    for index, entry in enumerate(data.get("notify") or []):
        found.append(Receiver(
            name=entry["name"], url=entry["url"], format=entry.get("format", "json"), secret=entry.get("secret"),
            events=tuple(entry.get("events") or EVENTS),
            timeout=parse_duration(entry["timeout"]) if "timeout" in entry else DEFAULT_TIMEOUT,
            retries=int(entry.get("retries", DEFAULT_RETRIES)), line=doc.mark(("notify", index)).line))
    return found


# -- payloads -----------------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Release-Signature`` value of ``body``: ``sha256=`` and the HMAC-SHA256 in hex."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant time): what a receiver does."""
    return bool(header) and hmac.compare_digest(sign(secret, body), str(header))


def public_url(url: str, secrets: Sequence[str] | frozenset[str] = ()) -> str:
    """``url`` as it may be shown: ``${env:...}`` values masked, no user info, no query string."""
    parts = urlsplit(redact(url, secrets))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def slack_text(event: str, title: str, summary: str) -> str:
    icon = {"alert_fired": ":rotating_light:", "trigger_fired": ":leftwards_arrow_with_hook:",
            "rollback_finished": ":arrows_counterclockwise:", "verdict": ":clipboard:"}[event]
    return f"{icon} *{title}* ({event.replace('_', ' ')}): {summary}"


# -- delivery -----------------------------------------------------------------------------------


@dataclass
class Attempt:
    number: int
    start: float
    duration_s: float
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retry(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in (408, 429)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int | None, str | None]:
    """POST ``body``; (status, None) or (None, why). Connect, request and answer together end at
    ``timeout``: a watchdog shuts the socket down then, however slowly the other side answers."""
    from .http import tls_context, watch

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout
    guard = watch(deadline)
    conn: http.client.HTTPConnection | None = None
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
        guard.attach(sock=raw)
        sock: socket.socket = raw
        if parts.scheme == "https":
            sock = tls_context().wrap_socket(raw, server_hostname=host)
        conn = http.client.HTTPConnection(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        conn.sock = sock
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("POST", path, body=body, headers=dict(headers))
        response = conn.getresponse()
        response.read(MAX_ANSWER)
        return response.status, None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if guard.expired or isinstance(exc, (socket.timeout, TimeoutError)):
            return None, f"no answer within {timeout:g}s"
        reason = str(exc) or type(exc).__name__
        return None, f"{type(exc).__name__}: {reason}"[:300]
    finally:
        guard.finish()
        if conn is not None:
            conn.close()


class Notifier:
    """Sends a run's events to its receivers, each delivery on a daemon thread; keeps every attempt."""

    def __init__(self, receivers: Sequence[Receiver], *, release: Mapping[str, str], run_id: str,
                 plan: Mapping[str, str], secrets: Sequence[str] | frozenset[str] = (),
                 sender: Callable[[str, bytes, Mapping[str, str], float], tuple[int | None, str | None]] = post
                 ) -> None:
        self.receivers = list(receivers)
        self.release, self.run_id, self.plan = dict(release), run_id, dict(plan)
        self.secrets = frozenset(s for s in secrets if s)
        self.sender = sender
        self.deliveries: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._sent: set[str] = set()
        self._closing = threading.Event()
        self.dropped = 0

    @property
    def title(self) -> str:
        return f"{self.release.get('name', '')} {self.release.get('version', '')}".strip()

    def emit(self, event: str, summary: str, data: Mapping[str, Any], key: str | None = None) -> int:
        """Send ``event`` to every receiver that takes it; how many deliveries started. ``key``:
        an event with a key already sent is not sent again (an alert seen twice)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        with self._lock:
            if key is not None:
                if key in self._sent:
                    return 0
                self._sent.add(key)
        summary = redact(summary, self.secrets)
        data = redact_value(dict(data), self.secrets)  # type: ignore[assignment]
        started = 0
        for receiver in self.receivers:
            if event not in receiver.events:
                continue
            with self._lock:
                if len(self.deliveries) >= MAX_DELIVERIES:
                    self.dropped += 1
                    continue
                entry: dict[str, Any] = {
                    "delivery": uuid.uuid4().hex, "event": event, "receiver": receiver.name,
                    "url": public_url(receiver.url, tuple(self.secrets)), "format": receiver.format,
                    "signed": receiver.secret is not None, "summary": summary, "outcome": "pending",
                    "attempts": []}
                self.deliveries.append(entry)
            body, headers = self._body(receiver, event, summary, data, entry["delivery"])
            thread = threading.Thread(target=self._deliver, args=(receiver, entry, body, headers), daemon=True,
                                      name=f"pytest-release-notify-{receiver.name}")
            with self._lock:
                self._threads.append(thread)
            thread.start()
            started += 1
        return started

    def _body(self, receiver: Receiver, event: str, summary: str, data: Mapping[str, Any],
              delivery: str) -> tuple[bytes, dict[str, str]]:
        if receiver.format == "slack":
            document: dict[str, Any] = {"text": slack_text(event, self.title, summary)}
        else:
            document = {"schema": PAYLOAD_SCHEMA_ID, "event": event, "delivery": delivery, "sent_at": _now_iso(),
                        "release": self.release, "run_id": self.run_id, "plan": self.plan, "summary": summary,
                        "data": dict(data)}
        body = json.dumps(document, sort_keys=True, default=str).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "pytest-release",
                   "X-Release-Event": event, "X-Release-Delivery": delivery}
        if receiver.secret:
            headers[SIGNATURE_HEADER] = sign(receiver.secret, body)
        return body, headers

    def _deliver(self, receiver: Receiver, entry: dict[str, Any], body: bytes, headers: Mapping[str, str]) -> None:
        outcome = "failed"
        for number in range(1, receiver.retries + 2):
            start = time.time()
            began = time.monotonic()
            try:
                status, error = self.sender(receiver.url, body, headers, receiver.timeout)
            except Exception as exc:  # a delivery never breaks the run
                status, error = None, f"{type(exc).__name__}: {exc}"
            attempt = Attempt(number, start, round(time.monotonic() - began, 4), status,
                              redact(error, self.secrets).replace(receiver.url, public_url(receiver.url))
                              if error else None)
            with self._lock:
                entry["attempts"].append({"attempt": attempt.number, "start": _iso(attempt.start),
                                          "duration_s": attempt.duration_s, "status": attempt.status,
                                          "error": attempt.error, "ok": attempt.ok})
            if attempt.ok:
                outcome = "delivered"
                break
            if not attempt.retry:
                outcome = "rejected"
                break
            if number > receiver.retries:
                break
            if self._closing.wait(BACKOFF * 2 ** (number - 1)):
                outcome = "abandoned"  # the run ended before the next attempt was due
                break
        with self._lock:
            if entry["outcome"] == "pending":  # not given up on at the end of the session
                entry["outcome"] = outcome

    def finish(self, wait: float | None = None) -> float:
        """Wait for deliveries in flight, at most ``wait`` seconds (default: the longest receiver
        timeout); no retry starts after this; what is still in flight is recorded as abandoned.
        How long it waited."""
        wait = max((r.timeout for r in self.receivers), default=0.0) if wait is None else wait
        began = time.monotonic()
        deadline = began + wait
        with self._lock:
            threads = list(self._threads)
        # Retries still due may start within the wait; none starts after it.
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._closing.set()
        with self._lock:
            for entry in self.deliveries:
                if entry["outcome"] == "pending":
                    entry["outcome"] = "abandoned"
        return time.monotonic() - began

    def record(self) -> dict[str, Any]:
        """The deliveries and their attempts, for the evidence (no secret, no URL's secret part)."""
        with self._lock:
            deliveries = json.loads(json.dumps(self.deliveries))
        counts: dict[str, int] = {}
        for entry in deliveries:
            counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        return {"receivers": [{"name": r.name, "url": public_url(r.url, tuple(self.secrets)), "format": r.format,
                               "signed": r.secret is not None, "events": list(r.events), "timeout_s": r.timeout,
                               "retries": r.retries} for r in self.receivers],
                "deliveries": redact_value(deliveries, self.secrets), "counts": counts, "dropped": self.dropped}

    def line(self) -> str:
        """One line for the terminal."""
        record = self.record()
        counts = ", ".join(f"{n} {k}" for k, n in sorted(record["counts"].items())) or "none sent"
        failed = [f"{d['receiver']} ({d['event']}: {_last_error(d)})" for d in record["deliveries"]
                  if d["outcome"] != "delivered"]
        text = f"notify: {len(record['deliveries'])} notification(s): {counts}"
        if failed:
            text += "; not delivered: " + ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3
                                                                   else "")
        return text


def _last_error(entry: Mapping[str, Any]) -> str:
    attempts = entry.get("attempts") or []
    if not attempts:
        return "no attempt finished"
    last = attempts[-1]
    return last["error"] or f"answered {last['status']}"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the process's notifier ---------------------------------------------------------------------

_current: Notifier | None = None


def install(notifier: Notifier | None) -> None:
    """Make ``notifier`` the one this process's events go to (``None``: none)."""
    global _current
    _current = notifier


def current() -> Notifier | None:
    return _current


def emit(event: str, summary: str, data: Mapping[str, Any], key: str | None = None) -> None:
    """Send an event through this process's notifier, if it has one (the controller's; an xdist
    worker has none: the controller sends what it learns from the worker's reports). Never raises."""
    notifier = _current
    if notifier is None:
        return
    try:
        notifier.emit(event, summary, data, key)
    except Exception:
        pass


def alert_fired(gate_id: str, alert: Mapping[str, Any]) -> None:
    """An alert fired in a monitoring window (``gate_id``: ``STAGE::monitoring_gate``)."""
    stage = gate_id.partition("::")[0]
    share, threshold = float(alert.get("share", 0.0)), float(alert.get("threshold", 0.0))
    summary = (f"alert {alert.get('alert')} fired in {stage} at {alert.get('at_s')}s: {share:.1%} of "
               f"{alert.get('samples')} samples of {alert.get('metric')} good < {threshold:.1%} over "
               f"{alert.get('window_s')}s")
    data = {k: alert.get(k) for k in ("alert", "metric", "at_s", "share", "good", "samples", "threshold", "window_s")}
    emit("alert_fired", summary, {"stage": stage, **data}, key=f"alert:{stage}:{alert.get('alert')}")


def trigger_fired(trigger: str, reason: str, procedures: Sequence[str]) -> None:
    emit("trigger_fired", f"trigger {trigger} fired: {reason}; rollback procedures {', '.join(procedures)}",
         {"trigger": trigger, "reason": reason, "procedures": list(procedures)}, key=f"trigger:{trigger}")


def rollback_finished(result: Any) -> None:
    """A rollback ended (a :class:`rollback.runner.RollbackResult`)."""
    steps = list(result.steps)
    failed = result.failed_step
    duration = (max(s.end for s in steps) - min(s.start for s in steps)) if steps else 0.0
    verify = next((s for s in reversed(steps) if s.key == "verify"), None)
    if result.outcome == "rolled_back":
        summary = f"ROLLED BACK ({result.trigger}): every step and the verify passed in {duration:.1f}s"
    else:
        summary = (f"ROLLBACK FAILED ({result.trigger}): step {failed.key} failed: {failed.result.summary}"
                   if failed else f"ROLLBACK FAILED ({result.trigger})")
    emit("rollback_finished", summary + "; the system may be inconsistent" * (result.outcome != "rolled_back"),
         {"trigger": result.trigger, "outcome": result.outcome, "failed_step": failed.key if failed else None,
          "steps": [{"step": s.key, "verdict": s.verdict} for s in steps], "duration_s": round(duration, 3),
          "verify": verify.result.summary if verify else None, "resumed_from": result.resumed_from},
         key="rollback")
