"""JSON evidence records, and the JSON Schema they follow.

Every record has the same envelope (``record`` kind, ``schema_version``, ``run_id``,
``release``, ``plan``) and then what it is about. Records are built from plain values only (test
reports' user properties, the plan model), so they can be built on the xdist controller from the
reports alone. ``RECORD_SCHEMA`` ships in the package; ``python -m pytest_release schema --records``
prints it.

A check's record is one line of its gate's JSON Lines file (``.../STAGE/GATE/records.jsonl``);
every other record is a JSON file of its own. A reference to a check record (a gate's ``checks``,
the summary's ``attention``, an alert's ``metric_record``) is ``PATH#LN``: the file, relative to
the evidence directory, and the line, counted from 1. :func:`read_lines`, :func:`check_records`
and :func:`resolve` read them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["RECORDS", "RECORD_SCHEMA", "SCHEMA_VERSION", "VERDICTS", "check_records", "gate_verdict", "read_lines", "resolve"]

SCHEMA_VERSION = 1
#: The name of a gate's JSON Lines file of check records.
RECORDS = "records.jsonl"

#: A check's verdicts; a gate's add ``not_run`` (none of its checks ran).
VERDICTS = ("passed", "failed", "warning", "skipped")

_string = {"type": "string"}
_time = {"type": "string", "format": "date-time"}
_number = {"type": "number"}
_verdict = {"enum": [*VERDICTS, "not_run"]}
_maybe_time = {"type": ["string", "null"], "format": "date-time"}
_maybe_number = {"type": ["number", "null"]}
#: A rollback's timing: its steps through the final verify, and the time to restore (the first
#: failure after the deploy to the end of the verify; null for an operator's rollback).
_TIMING: dict[str, Any] = {
    "start": _maybe_time, "end": _maybe_time, "duration_s": _maybe_number, "time_to_restore_s": _maybe_number,
    "first_failure": {"type": ["object", "null"], "required": ["at", "what", "check"],
                      "properties": {"at": _time, "what": {"enum": ["failed gate", "fired alert", "failed deploy"]},
                                     "check": _string}},
}

_ENVELOPE: dict[str, Any] = {
    "record": {"enum": ["check", "gate", "strategy_gate", "stages", "run", "trigger", "procedure", "step",
                        "alert", "task", "workflow", "analytics_metric", "analysis", "delivery",
                        "notifications"]},
    "schema_version": {"const": SCHEMA_VERSION},
    "run_id": _string,
    "release": {"type": "object", "required": ["name", "version"],
                "properties": {"name": _string, "version": _string}},
    "plan": {"type": "object", "required": ["path", "sha256"],
             "properties": {"path": _string, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
    "time_scale": _number,
}


def _record(kind: str, properties: Mapping[str, Any], required: Iterable[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["record", "schema_version", "run_id", "release", "plan", *required],
        "properties": {**_ENVELOPE, "record": {"const": kind}, **properties},
    }


CHECK = _record("check", {
    "nodeid": _string, "stage": _string, "gate": _string, "check": _string, "kind": _string,
    "target": {"type": ["string", "null"]}, "required": {"type": "boolean"},
    "params": {"type": "object"}, "measured": {"type": "object"}, "expected": {"type": "object"},
    "verdict": {"enum": list(VERDICTS)}, "summary": _string, "message": _string,
    "start": _time, "end": _time, "duration_s": _number, "worker": _string,
}, ["nodeid", "stage", "gate", "kind", "verdict", "measured", "expected", "start", "end", "duration_s", "worker"])

GATE = _record("gate", {
    "stage": _string, "gate": _string, "required": {"type": "boolean"}, "budget_s": _number,
    "verdict": _verdict, "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    "checks": {"type": "array", "items": {"type": "object", "required": ["nodeid", "verdict"]}},
    "start": {"type": ["string", "null"]}, "end": {"type": ["string", "null"]}, "duration_s": _number,
}, ["stage", "gate", "verdict", "checks"])

STRATEGY_GATE = _record("strategy_gate", {
    "stage": _string, "gate": _string, "required": {"type": "boolean"}, "acted_on": {"type": "boolean"},
    "verdict": _verdict, "gates": {"type": "array"}, "note": _string,
}, ["stage", "gate", "acted_on", "verdict"])

STAGES = _record("stages", {
    "stages": {"type": "array", "items": {"type": "object", "required": ["name", "verdict"]}},
}, ["stages"])

RUN = _record("run", {
    "outcome": {"enum": ["released", "passed", "blocked", "rolled_back", "rollback_failed", "interrupted",
                         "error"]},
    "rollback": {"type": ["object", "null"], "properties": {
        "trigger": _string, "outcome": {"enum": ["rolled_back", "rollback_failed"]}, "manual": {"type": "boolean"},
        **_TIMING}},
    "banner": _string, "exit_status": {"type": "integer"}, "counts": {"type": "object"},
    "stages_run": {"type": "array", "items": _string},
    "stages_not_run": {"type": "array", "items": {"type": "object", "required": ["name", "verdict", "reason"]}},
    "start": _time, "end": _time, "duration_s": _number,
}, ["outcome", "banner", "exit_status"])

TRIGGER = _record("trigger", {
    "trigger": _string, "reason": _string, "procedures": {"type": "array", "items": _string},
    "outcome": {"enum": ["rolled_back", "rollback_failed"]}, "resumed_from": {"type": ["string", "null"]},
    "failed_step": {"type": ["string", "null"]}, "journal": _string, **_TIMING,
}, ["trigger", "reason", "procedures", "outcome", "journal", "start", "end", "duration_s", "time_to_restore_s"])

PROCEDURE = _record("procedure", {
    "procedure": _string, "trigger": _string, "verdict": {"enum": ["passed", "failed"]},
    "steps": {"type": "array", "items": {"type": "object", "required": ["step", "verdict"]}},
}, ["procedure", "trigger", "verdict", "steps"])

STEP = _record("step", {
    "trigger": _string, "procedure": _string, "step": _string, "action": {"type": ["string", "null"]},
    "verdict": {"enum": ["passed", "failed", "skipped"]}, "summary": _string,
    "details": {"type": "array", "items": _string}, "measured": {"type": "object"},
    "start": _time, "end": _time, "duration_s": _number,
}, ["trigger", "procedure", "step", "verdict", "summary", "start", "end", "duration_s"])

_samples = {"type": "array", "items": {"type": "object", "required": ["t_s", "source", "check", "good", "summary"]}}

ALERT = _record("alert", {
    "stage": _string, "alert": _string, "metric": _string, "fired": {"type": "boolean"}, "at_s": _number,
    "share": _number, "good": {"type": "integer"}, "samples": {"type": "integer"}, "threshold": _number,
    "window_s": _number, "samples_detail": _samples, "metric_record": {"type": ["string", "null"]},
}, ["stage", "alert", "metric", "fired", "threshold", "window_s"])

TASK = _record("task", {
    "stage": _string, "task": _string, "interval_s": _number, "failed_runs": {"type": "integer"},
    "verdict": _verdict,
    "runs": {"type": "array", "items": {"type": "object", "required": ["t_s", "check", "good", "summary"]}},
    "metric_record": {"type": ["string", "null"]},
}, ["stage", "task", "runs", "verdict"])

WORKFLOW = _record("workflow", {
    "workflow": _string, "timeout_s": _number, "rollback": {"type": "boolean"}, "outcome": _string,
    "steps": {"type": "array", "items": {"type": "object", "required": ["step", "does", "stages", "verdict"]}},
    "start": _time, "end": _time,
}, ["workflow", "steps", "outcome"])

_seconds = {"type": ["number", "null"]}

ANALYTICS_METRIC = _record("analytics_metric", {
    "metric": _string, "source": {"enum": ["system", "checks", "sql"]}, "kind": {"type": ["string", "null"]},
    "store": _string, "stored": {"type": "boolean"},
    "samples": {"type": "array", "items": {"type": "object", "required": ["series", "value"]}},
    "pruned": {"type": "integer"}, "retention_s": _seconds, "interval_s": _seconds,
    "error": {"type": ["string", "null"]},
}, ["metric", "source", "store", "stored", "samples"])

ANALYSIS = _record("analysis", {
    "analysis": _string, "metric": _string, "store": _string,
    "verdict": {"enum": ["steady", "regressed", "no_baseline", "error"]}, "summary": _string,
    "baseline": {"type": ["string", "null"]}, "runs": {"type": "integer"}, "tolerance": _number,
    "interval_s": _seconds, "retention_s": _seconds,
    "series": {"type": "array", "items": {"type": "object", "required": ["series", "current", "baseline",
                                                                          "change", "regression", "points"]}},
    "regressions": {"type": "array", "items": _string}, "regressed_checks": {"type": "array", "items": _string},
    "flaky_checks": {"type": "array", "items": _string}, "error": {"type": ["string", "null"]},
}, ["analysis", "metric", "verdict", "summary", "baseline", "series"])

_when = {"type": ["string", "null"], "format": "date-time"}

DELIVERY = _record("delivery", {
    "outcome": _string, "deployed": {"type": "boolean"},
    "stages": {"type": "array", "items": {"type": "object", "required": ["name", "verdict", "deployed"]}},
    "start": _time, "end": _time, "duration_s": _number, "trigger": {"type": ["string", "null"]},
    "manual": {"type": "boolean"}, "rollback": {"enum": ["rolled_back", "rollback_failed", None]},
    "rollback_reason": _string, "detected_at": _when, "detected_by": {"type": ["string", "null"]},
    "restored_at": _when, "time_to_restore_s": _seconds, "monitoring_s": _seconds,
}, ["outcome", "deployed", "stages", "start", "end", "detected_at", "restored_at", "time_to_restore_s"])

_attempt = {"type": "object", "required": ["attempt", "start", "duration_s", "status", "error", "ok"],
            "properties": {"attempt": {"type": "integer"}, "start": _time, "duration_s": _number,
                           "status": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
                           "ok": {"type": "boolean"}}}

NOTIFICATIONS = _record("notifications", {
    "receivers": {"type": "array", "items": {"type": "object", "required": ["name", "url", "format", "signed"]}},
    "deliveries": {"type": "array", "items": {
        "type": "object", "required": ["delivery", "event", "receiver", "url", "outcome", "attempts"],
        "properties": {"outcome": {"enum": ["delivered", "failed", "rejected", "abandoned", "pending"]},
                       "attempts": {"type": "array", "items": _attempt}}}},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}}, "dropped": {"type": "integer"},
    "waited_s": _number,
}, ["receivers", "deliveries", "counts"])

RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://pytest-release.invalid/record.schema.json",
    "title": "pytest-release evidence record",
    "oneOf": [CHECK, GATE, STRATEGY_GATE, STAGES, RUN, TRIGGER, PROCEDURE, STEP, ALERT, TASK, WORKFLOW,
              ANALYTICS_METRIC, ANALYSIS, DELIVERY, NOTIFICATIONS],
}


def gate_verdict(verdicts: Iterable[str], required: bool) -> str:
    """A gate's verdict from its checks': failed (required) or warning (not required) if any
    failed, passed if any passed, else not_run (all skipped, or none)."""
    seen = set(verdicts)
    if "failed" in seen or "warning" in seen:
        return "failed" if required else "warning"
    if "passed" in seen:
        return "passed"
    return "not_run"


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file, in order (``ValueError`` names a line that does not parse)."""
    records = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}: line {number} is not JSON: {exc}") from None
    return records


def check_records(root: Path, run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every check record of a run (``None``: of every run) under the evidence directory ``root``,
    file by file (sorted by path), line by line."""
    for path in sorted(root.glob(f"**/{run_id}/**/{RECORDS}" if run_id else f"**/{RECORDS}")):
        yield from read_lines(path)


def resolve(root: Path, reference: str) -> dict[str, Any]:
    """The record a reference (``PATH#LN``, or a plain ``PATH`` of a JSON file) points to."""
    rel, _, line = reference.partition("#")
    if not line:
        return dict(json.loads((root / rel).read_bytes()))
    return read_lines(root / rel)[int(line.removeprefix("L")) - 1]
