"""The JSON Schema (2020-12) of a release plan.

A plan's sections are ``release``, ``targets``, ``strategy``, ``validation``, ``rollback``,
``monitoring``, ``analytics``, ``automation`` and ``notify``. Check parameters come from the
check kinds (built in and plugged in), so ``plan_schema(kinds)`` is the schema a plan is
validated against and the one ``python -m pytest_release schema`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .checks.base import CheckKind
from .notify import RECEIVER_SCHEMA
from .rollback.actions import ACTIONS, ActionKind
from .units import DURATION_SCHEMA, THRESHOLD_SCHEMA

__all__ = ["NAME_PATTERN", "gate_check_schema", "plan_schema"]

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"

duration = DURATION_SCHEMA
threshold = THRESHOLD_SCHEMA
name: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN,
                        "description": "a name: letters, digits, _ . - (not starting with a digit)"}
names: dict[str, Any] = {"type": "array", "items": name}


def _obj(properties: Mapping[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _list_of(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def check_schema(kinds: Mapping[str, CheckKind]) -> dict[str, Any]:
    """A check: a bare kind name, or a one-key mapping of kind to its parameters."""
    names_ = sorted(kinds)
    return {
        "description": "a check: a kind name (health) or a one-key mapping of kind to parameters",
        "if": {"type": "string"},
        "then": {"enum": names_, "description": "a check kind"},
        "else": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"enum": names_, "description": "a check kind"},
            "properties": {k: _nullable(kinds[k].params) for k in names_},
        },
    }


def gate_check_schema(kinds: Mapping[str, CheckKind]) -> dict[str, Any]:
    """A check of a validation gate: its kind's parameters, plus ``ready`` and ``after_rollback``."""
    schema = check_schema(kinds)
    properties = schema["else"]["properties"]
    for name, params in properties.items():
        overrides = {k: v for k, v in kinds[name].params.items() if k != "required"}
        overrides["type"] = "object"
        overrides["description"] = ("judge, skip, or a mapping of this check's parameters to use against the "
                                    "previous release")
        params["properties"] = {
            **params.get("properties", {}),
            "ready": {"type": "boolean"},
            "after_rollback": {
                "description": "what the verify after a rollback does with this check: judge, skip, or a "
                               "mapping of parameters to use against the previous release",
                "if": {"type": "string"},
                "then": {"enum": ["judge", "skip"], "description": "judge (as written) or skip"},
                "else": overrides,
            },
        }
    return schema


def _nullable(params: Mapping[str, Any]) -> dict[str, Any]:
    schema = dict(params)
    schema["type"] = ["object", "null"]
    return schema


def action_schema(actions: Mapping[str, ActionKind]) -> dict[str, Any]:
    """A rollback action: a one-key mapping of action kind to its parameters."""
    names_ = sorted(actions)
    return {"type": "object", "minProperties": 1, "maxProperties": 1,
            "propertyNames": {"enum": names_, "description": "a rollback action"},
            "properties": {a: actions[a].params for a in names_},
            "description": "an action: a one-key mapping of action kind to parameters"}


def plan_schema(kinds: Mapping[str, CheckKind], actions: Mapping[str, ActionKind] | None = None) -> dict[str, Any]:
    """The whole plan's schema, with the parameters of the check ``kinds`` and rollback ``actions``."""
    actions = ACTIONS if actions is None else actions
    target = _obj(
        {
            "url": {"type": ["string", "array"], "pattern": r"^https?://", "minItems": 1,
                    "items": {"type": "string", "pattern": r"^https?://"},
                    "description": "a service's base URL (http:// or https://), a list of them (instances), "
                                   "or a pattern with a range: http://10.0.0.1:{8001..8004}"},
            "health": {"type": "string", "pattern": "^/", "description": "the service's health path, e.g. /healthz"},
            "tcp": {"type": "string", "pattern": r"^[^:\s]+:[0-9]{1,5}$", "description": "host:port"},
            "verify_tls": {"type": "boolean"},
            "ca": {"type": "string", "description": "a CA bundle (PEM) to verify the service's certificate"},
            "request_timeout": {**duration, "description": "the longest one request to the service may take "
                                                           "(default 10s; a check's request_timeout wins)"},
            "sqlite": {"type": "string", "description": "the path of a SQLite database"},
            "dsn": {"type": "string", "description": "a PostgreSQL connection string"},
            "files": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                      "description": "glob patterns of config files"},
            "schema": {"type": "string", "description": "a JSON Schema file the config files must match"},
            "manifest": {"type": "string", "description": "a checksum manifest in sha256sum format"},
            "description": {"type": "string"},
        },
        description="a target: exactly one of url, tcp, sqlite, dsn, files, manifest",
    )
    stage = _obj({"name": name, "validation": {"type": "boolean"}, "rollback": {"type": "boolean"},
                  "monitoring": {"type": "boolean"}, "deployed": {"type": "boolean"}}, ("name",))
    strategy_gate = _obj({"name": {"enum": ["validation_gate", "rollback_gate", "monitoring_gate"],
                                   "description": "a strategy gate"},
                          "required": {"type": "boolean"}, "timeout": duration,
                          "window": {**duration, "description": "monitoring_gate only: how long each stage's "
                                     "monitoring window lasts (default: the largest alert window)"}},
                         ("name",))
    trigger = _obj({"name": {"enum": ["validation_failure", "monitoring_failure", "manual_trigger"],
                             "description": "a trigger"},
                    "action": {"enum": ["rollback", "notify"], "description": "a trigger action"},
                    "timeout": duration, "procedures": names,
                    "verify": {**names, "description": "the validation gates its final verify re-judges"}},
                   ("name",))
    action = action_schema(actions)
    step = {"if": {"type": "string"}, "then": name,
            "else": {"type": "object", "minProperties": 1, "maxProperties": 1,
                     "propertyNames": name, "additionalProperties": action},
            "description": "a step: a name, or a one-key mapping of name to its action"}
    procedure = _obj({"name": name,
                      "steps": {"type": "array", "minItems": 1, "items": step},
                      "actions": {"type": "object", "propertyNames": name, "additionalProperties": action},
                      "timeout": duration}, ("name", "steps"))
    gate = _obj(
        {
            "name": name,
            "checks": {**_list_of(gate_check_schema(kinds)), "minItems": 1},
            "timeout": duration,
            "required": {"type": "boolean"},
            "targets": names,
            "stages": names,
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 256,
                            "description": "how many of the gate's checks run at once (default 16)"},
            "after_rollback": {"enum": ["judge", "skip"],
                               "description": "what the verify after a rollback does with the gate's checks"},
            "description": {"type": "string"},
        },
        ("name", "checks"),
    )
    validation_metric = _obj({"name": name, "threshold": threshold, "window": duration, "interval": duration,
                              "gates": names}, ("name",))
    prometheus = _obj({"url": {"type": "string", "pattern": r"^https?://",
                               "description": "the Prometheus server's base URL"},
                       "query": {"type": "string", "minLength": 1, "description": "a PromQL instant query "
                                 "that returns one number (aggregate it: sum(...), avg(...))"},
                       "compare": {"enum": [">=", "<=", ">", "<"],
                                   "description": "how a good value compares with the threshold"},
                       "verify_tls": {"type": "boolean"}, "ca": {"type": "string"}},
                      ("url", "query"))
    source = _obj({"check": {"description": "a check kind, or a one-key mapping of kind to parameters, "
                                            "run against the targets at each sample",
                             **check_schema(kinds)},
                   "targets": names,
                   "prometheus": prometheus},
                  description="where samples come from: check (+ targets) or prometheus")
    monitoring_metric = _obj({"name": name, "interval": duration, "threshold": threshold,
                              "window": duration, "source": source}, ("name",))
    alert = _obj({"name": name, "threshold": threshold, "window": duration, "metric": name}, ("name",))
    analytics_source = _obj({"checks": {"type": "string", "description": "a check kind: every number its "
                                                              "checks measured (p95_ms, rps, latency_ms)"},
                             "system": {"const": True, "description": "the run's own figures"},
                             "sql": {"type": "string", "minLength": 1,
                                     "description": "a query on a data store target that returns one number"},
                             "target": {**name, "description": "the data store target the sql runs on"}},
                            description="where the samples come from (default: from the name, "
                                        "system_metrics or KIND_metrics)")
    analytics_metric = _obj({"name": name, "interval": duration, "retention": duration, "source": analytics_source},
                            ("name",))
    analysis = _obj({"name": name, "interval": duration, "retention": duration, "metric": name,
                     "tolerance": {"type": "number", "minimum": 0,
                                   "description": "how much worse than the previous release a figure may be "
                                                  "before it is a regression (0.1: 10%)"}}, ("name",))
    task = _obj({"name": name, "interval": duration, "timeout": duration,
                 "check": {"description": "the check kind the task runs (default: from its name, "
                                          "health_check -> health), or a one-key mapping of kind to parameters",
                           **check_schema(kinds)},
                 "targets": names, "metric": name}, ("name",))
    workflow = _obj({"name": name, "steps": {"type": "array", "minItems": 1, "items": step},
                     "actions": {"type": "object", "propertyNames": name, "additionalProperties": action},
                     "timeout": duration}, ("name", "steps"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pytest-release.invalid/plan.schema.json",
        "title": "pytest-release plan",
        "type": "object",
        "additionalProperties": False,
        "required": ["strategy"],
        "properties": {
            "release": _obj({"name": {"type": "string"}, "version": {"type": ["string", "number"]},
                             "evidence": {"type": "string"}, "description": {"type": "string"}}),
            "targets": {"type": "object", "propertyNames": name, "additionalProperties": target},
            "strategy": _obj({"stages": {**_list_of(stage), "minItems": 1},
                              "gates": _list_of(strategy_gate)}, ("stages",)),
            "rollback": _obj({"triggers": _list_of(trigger), "procedures": _list_of(procedure)}),
            "validation": _obj({"gates": _list_of(gate), "metrics": _list_of(validation_metric)}),
            "monitoring": _obj({"metrics": _list_of(monitoring_metric), "alerts": _list_of(alert)}),
            "analytics": _obj({"metrics": _list_of(analytics_metric), "analysis": _list_of(analysis),
                               "store": {"type": "string", "minLength": 1,
                                         "description": "the history store: a SQLite file (relative to the plan) "
                                                        "or a PostgreSQL URL (postgresql://...); default "
                                                        "EVIDENCE/analytics/history.sqlite"}}),
            "automation": _obj({"tasks": _list_of(task), "workflows": _list_of(workflow)}),
            "notify": {**_list_of(RECEIVER_SCHEMA), "description": "webhook receivers: who hears of alerts, "
                       "triggers, rollbacks and the verdict"},
        },
    }
