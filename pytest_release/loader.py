"""Loading a release plan: read, validate against the schema, check references, build the model.

``load_plan`` either returns a :class:`~pytest_release.model.Plan` or raises :class:`PlanError`
carrying every problem found, each as ``FILE:LINE:COL: path.in.plan: message``. Nothing runs
before a plan loads. The steps: YAML (:mod:`.yamldoc`) -> the JSON Schema (:mod:`.schema`) ->
meaning (:class:`_Semantics`: unique names, references, units, the links :data:`CONVENTIONS`
infers from names) -> the model (:mod:`.model`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema

from .checks import CheckKind
from .compare import operator_hint
from .model import (
    MAX_INSTANCES,
    METRIC,
    TARGET_KINDS,
    Alert,
    AnalyticsMetric,
    Analysis,
    CheckSpec,
    Gate,
    Metric,
    MonitorMetric,
    Plan,
    Procedure,
    Stage,
    Step,
    Target,
    Task,
    Trigger,
    Workflow,
    count_urls,
    merge_params,
    target_kind,
)
from .notify import build_receivers, check_receivers
from .problems import PlanError, Problem, did_you_mean, format_path
from .schema import plan_schema
from .secrets import redact
from .units import FORMAT_CHECKER, parse_duration
from .yamldoc import Document, load_yaml_text, read_text

__all__ = ["CONVENTIONS", "DEFAULT_TIMEOUT", "Convention", "PlanError", "load_plan"]

#: The budget of a gate, procedure, trigger or workflow that gives none (and whose strategy gate
#: gives none either).
DEFAULT_TIMEOUT = 300.0


# -- naming conventions -------------------------------------------------------------------------


def _first_word(name: str) -> str:
    return name.split("_")[0]


def _last_word(name: str) -> str:
    return name.rpartition("_")[2]


@dataclass(frozen=True)
class Convention:
    """A link a plan may leave out, inferred from names: ``word(name)`` is what the name says;
    for a link between two entries, ``matches(word, other)`` says whether the other entry (by its
    name) is one it links to. ``explicit`` is how a plan says it instead (which always wins)."""

    what: str
    example: str
    explicit: str
    word: Callable[[str], str]
    matches: Callable[[str, str], bool] | None = None

    def linked(self, name: str, others: Iterable[str]) -> list[str]:
        """The entries among ``others`` that ``name`` links to, in their order."""
        assert self.matches is not None
        word = self.word(name)
        return [other for other in others if self.matches(word, other)]


CONVENTIONS: dict[str, Convention] = {
    "metric_gates": Convention(
        "the validation gates a validation metric samples", "service_metrics samples service_validation",
        "validation.metrics[].gates", _first_word, lambda word, gate: _first_word(gate) == word),
    "procedure_gates": Convention(
        "the validation gates a rollback procedure is for: a trigger without procedures runs the ones for "
        "the failed gates, and a verify step without gates re-judges them",
        "service_rollback is for service_validation",
        "rollback.triggers[].procedures, a verify step's gates", _first_word,
        lambda word, gate: _first_word(gate) == word),
    "alert_metric": Convention(
        "the monitoring metric an alert watches (the one whose name holds the alert's word)",
        "health_alert watches service_health", "monitoring.alerts[].metric",
        lambda name: name.removesuffix("_alert"), lambda word, metric: word in metric.split("_")),
    "monitoring_check": Convention(
        "the check kind a monitoring metric samples (its name's last word)", "service_health samples health",
        "monitoring.metrics[].source.check", _last_word),
    "task_check": Convention(
        "the check kind a task runs (KIND_check)", "health_check runs health", "automation.tasks[].check",
        lambda name: _last_word(name.removesuffix("_check"))),
    "analytics_source": Convention(
        "what an analytics metric records: system_metrics the run's own figures, KIND_metrics what checks "
        "of KIND measured", "performance_metrics records performance checks' numbers",
        "analytics.metrics[].source", lambda name: name.removesuffix("_metrics")),
    "analysis_metric": Convention(
        "the analytics metric an analysis reads", "system_analysis reads system_metrics",
        "analytics.analysis[].metric", lambda name: name.removesuffix("_analysis") + "_metrics"),
    "verify_step": Convention(
        "the action of a procedure step named verify that gives none", "steps: [verify] verifies",
        "steps: [{verify: {verify: {gates: [...]}}}]", lambda name: name if name == "verify" else ""),
}
"""Every link the loader infers from names, in one table (nothing else in the package reads
meaning into a name). The loader consults it while it checks a plan (a plan whose implicit link
finds nothing, or several, does not load) and when it builds the model, where each link is stored
as plain data: ``Metric.gates``, ``Procedure.gates``, ``Alert.metric``, the check of a
``MonitorMetric`` or ``Task``, ``AnalyticsMetric.source``, ``Analysis.metric``, a step's action."""


def load_plan(path: str | os.PathLike[str], kinds: Mapping[str, CheckKind], *,
              env: Mapping[str, str] | None = None, display: str | None = None, time_scale: float = 1.0,
              variables: Mapping[str, str] | None = None) -> Plan:
    """Read and validate the plan at ``path``; raise :class:`PlanError` listing every problem."""
    path = Path(path)
    display = display or str(path)
    text, problems = read_text(path, display)
    if text is None:
        raise PlanError(problems)
    doc = load_yaml_text(text, display, env=env, variables=variables)
    if doc.data is None and doc.problems:
        raise PlanError(_redact(doc.problems, doc.secrets))
    if not isinstance(doc.data, dict):
        doc.add((), "a plan is a mapping of sections (release, targets, strategy, rollback, "
                    "validation, monitoring, analytics, automation)")
        raise PlanError(_redact(doc.problems, doc.secrets))
    data: dict[str, Any] = doc.data
    _nul_problems(doc)
    rejected = _schema_problems(doc, data, kinds)
    # The meaning of the plan is read from what the schema accepted only: every value it rejected
    # is taken out first, so the semantic pass never meets a wrong type, and the problems it finds
    # elsewhere are still reported with the schema's, at once. A plan with problems is not built.
    _prune(data, rejected)
    checker = _Semantics(doc, data, kinds, time_scale)
    checker.run()
    if doc.problems:
        raise PlanError(_redact(doc.problems, doc.secrets))
    return checker.build(path, display, hashlib.sha256(text.encode("utf-8")).hexdigest())


def _redact(problems: Iterable[Problem], secrets: Iterable[str]) -> list[Problem]:
    secrets = list(secrets)
    return [Problem(p.file, p.line, p.col, p.path, redact(p.message, secrets)) for p in problems]


# -- schema -------------------------------------------------------------------------------------

_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "empty"}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _nul_problems(doc: Document) -> None:
    """No key or string in a plan may hold NUL (U+0000): no program, path or environment takes one."""
    pending: list[tuple[tuple[object, ...], object]] = [((), doc.data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "\0" in key:
                    doc.add(path + (key,), "a key cannot hold the character NUL (U+0000)", key=True)
                pending.append((path + (key,), item))
        elif isinstance(value, list):
            pending.extend((path + (i,), item) for i, item in enumerate(value))
        elif isinstance(value, str) and "\0" in value:
            doc.add(path, "a value cannot hold the character NUL (U+0000): no program, path or environment "
                          "takes one")


_VALIDATORS: dict[tuple[int, ...], tuple[Mapping[str, CheckKind], jsonschema.protocols.Validator]] = {}


def _validator(kinds: Mapping[str, CheckKind]) -> jsonschema.protocols.Validator:
    """The plan schema's validator for these check kinds (built once per set of kinds)."""
    key = tuple(sorted(id(k) for k in kinds.values()))
    cached = _VALIDATORS.get(key)
    if cached is None or dict(cached[0]) != dict(kinds):
        validator = jsonschema.Draft202012Validator(plan_schema(kinds), format_checker=FORMAT_CHECKER)
        cached = _VALIDATORS[key] = (dict(kinds), validator)
    return cached[1]


def _schema_problems(doc: Document, data: Mapping[str, Any],
                     kinds: Mapping[str, CheckKind]) -> list[jsonschema.ValidationError]:
    errors = list(_validator(kinds).iter_errors(data))
    for error in errors:
        _translate(doc, error)
    return errors


def _prune(data: dict[str, Any], errors: Iterable[jsonschema.ValidationError]) -> None:
    """Take out of ``data`` every value the schema rejected: an unknown key, a value of the wrong
    type, shape or range (a mapping's key is deleted; a list's item becomes ``None``, so the
    other items keep their indices). A missing key takes nothing out: the semantic pass reads
    every key as optional."""
    doomed: list[tuple[object, ...]] = []
    for error in errors:
        path: tuple[object, ...] = tuple(error.absolute_path)
        if error.validator == "required":
            continue
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = (error.schema or {}).get("properties", {}) if isinstance(error.schema, dict) else {}
            doomed += [path + (key,) for key in error.instance if key not in allowed]
        elif "propertyNames" in error.schema_path:
            doomed.append(path + (error.instance,))
        else:
            doomed.append(path)
    for path in sorted(doomed, key=len, reverse=True):
        if not path:
            continue
        parent: Any = data
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
            parent[path[-1]] = None


def _values(value: object) -> list[Any]:
    """A schema keyword's value as a list (``type: string`` is ``[string]``)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _hint(what: str | None) -> str:
    if what != "a check kind":
        return ""
    return (" (a custom check kind comes from a pytest_release_check_kinds hook in a conftest.py that pytest "
            "loads at start-up, i.e. where pytest runs or in the rootdir, or from an installed plugin)")


def _translate(doc: Document, error: jsonschema.ValidationError) -> None:
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    what = schema.get("description")
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed) or (f"; allowed: {', '.join(allowed)}" if allowed else "")
                doc.add(path + (key,), f"unknown key {key!r}{hint}", key=True)
        return
    if "propertyNames" in error.schema_path:
        key_path = path + (instance,)
        choices = schema.get("enum")
        if choices is not None:
            hint = did_you_mean(str(instance), choices) or (
                operator_hint(instance) if str(what).startswith("a comparison") else "")
            doc.add(key_path, f"{instance!r} is not {what or 'allowed here'}{hint};"
                              f" known: {', '.join(map(str, choices))}{_hint(what)}", key=True)
        else:
            doc.add(key_path, f"{instance!r} is not {what or 'a valid key'}", key=True)
        return
    if error.validator == "enum":
        choices = [str(c) for c in _values(error.validator_value)]
        doc.add(path, f"{instance!r} is not {what or 'allowed here'}{did_you_mean(str(instance), choices)};"
                      f" choose from: {', '.join(choices)}{_hint(what)}")
    elif error.validator == "required":
        missing = [k for k in _values(error.validator_value) if k not in _mapping(instance)]
        doc.add(path, f"missing required key {', '.join(map(repr, missing))}")
    elif error.validator == "type":
        wanted = what or " or ".join(f"a {t}" if t not in ("object", "array") else
                                     {"object": "a mapping", "array": "a list"}[t]
                                     for t in _values(error.validator_value))
        doc.add(path, f"{instance!r} is {_type_name(instance)}, expected {wanted}")
    elif error.validator == "format" and error.cause is not None:
        doc.add(path, str(error.cause))
    elif error.validator == "format":
        doc.add(path, f"{instance!r} is not a valid {error.validator_value}")
    elif error.validator in ("pattern", "oneOf", "anyOf") and what:
        doc.add(path, f"{instance!r} is not {what}")
    elif error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        doc.add(path, f"{instance!r} is out of range: {what or error.message}")
    elif error.validator in ("minItems", "maxItems", "minProperties", "maxProperties") and what:
        doc.add(path, f"expected {what}: {error.message}")
    else:
        doc.add(path, error.message)


# -- references and meaning ---------------------------------------------------------------------


def _items(value: object) -> list[tuple[int, dict[str, Any]]]:
    """The mapping entries of a list, with their indices; tolerant of earlier schema problems."""
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]


def _mapping(value: object) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one (what the schema rejected is taken out
    before the semantic pass, but a section may still be missing or empty)."""
    return value if isinstance(value, dict) else {}


def _section(data: Mapping[str, Any], *keys: str) -> Any:
    value: Any = data
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class _Semantics:
    """What a schema cannot say: unique names, references, units, what runs and what not yet."""

    def __init__(self, doc: Document, data: dict[str, Any], kinds: Mapping[str, CheckKind],
                 time_scale: float = 1.0) -> None:
        self.doc = doc
        self.data = data
        self.kinds = kinds
        self.time_scale = time_scale

    def seconds(self, value: object) -> float:
        """A budget, window or interval of the plan, in seconds, times the time scale."""
        return parse_duration(value) * self.time_scale

    def run(self) -> None:
        for keys in (("strategy", "stages"), ("strategy", "gates"), ("validation", "gates"),
                     ("validation", "metrics"), ("rollback", "triggers"), ("rollback", "procedures"),
                     ("monitoring", "metrics"), ("monitoring", "alerts"), ("analytics", "metrics"),
                     ("analytics", "analysis"), ("automation", "tasks"), ("automation", "workflows")):
            self._unique(keys)
        self._durations(self.data, ())
        self._targets()
        self._gates()
        self._references()
        self._after_rollback()
        self._monitoring()
        self._analytics()
        check_receivers(self.doc)

    def _unique(self, keys: tuple[str, ...]) -> None:
        seen: dict[str, int] = {}
        for i, entry in _items(_section(self.data, *keys)):
            name = entry.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                first = self.doc.mark(keys + (seen[name],)).line
                self.doc.add(keys + (i, "name"), f"duplicate name {name!r} (first at line {first})")
            else:
                seen[name] = i

    def _durations(self, value: object, path: tuple[object, ...]) -> None:
        """Every timeout, interval, window and retention must be a duration; budgets above zero."""
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("timeout", "interval", "window", "retention", "delay") and not isinstance(item, (dict, list)):
                    try:
                        seconds = parse_duration(item)
                    except ValueError:
                        continue  # the schema said so already
                    if key in ("timeout", "interval", "window") and seconds <= 0:
                        self.doc.add(path + (key,), f"{item!r} must be more than zero")
                else:
                    self._durations(item, path + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self._durations(item, path + (i,))

    def _targets(self) -> None:
        targets = self.data.get("targets")
        if not isinstance(targets, dict):
            return
        for name, spec in targets.items():
            if not isinstance(spec, dict):
                continue
            keys = [k for k in TARGET_KINDS if k in spec]
            path = ("targets", name)
            if len(keys) != 1:
                found = f"it has {', '.join(keys)}" if keys else "it has none"
                self.doc.add(path, f"a target needs exactly one of {', '.join(TARGET_KINDS)}; {found}")
                continue
            kind_key = keys[0]
            url = spec.get("url")
            if url is not None and count_urls(url) > MAX_INSTANCES:
                self.doc.add(path + ("url",), f"{count_urls(url)} instances: a target has at most {MAX_INSTANCES} "
                                              "(a list of URLs, or ranges such as {8001..8004})")
            only = {"health": ("url",), "verify_tls": ("url",), "ca": ("url",), "schema": ("files",),
                    "request_timeout": ("url", "tcp")}
            for option, owners in only.items():
                if option in spec and kind_key not in owners:
                    self.doc.add(path + (option,), f"{option!r} applies to {' or '.join(owners)} targets only",
                                 key=True)

    def _gates(self) -> None:
        targets = _mapping(self.data.get("targets"))
        stages = [s.get("name") for _, s in _items(_section(self.data, "strategy", "stages"))]
        for gi, gate in _items(_section(self.data, "validation", "gates")):
            gpath = ("validation", "gates", gi)
            named = gate.get("targets")
            if isinstance(named, list):
                for ti, tname in enumerate(named):
                    if isinstance(tname, str) and tname not in targets:
                        self.doc.add(gpath + ("targets", ti), f"no target named {tname!r}"
                                     f"{did_you_mean(tname, targets)}; targets: {', '.join(targets) or 'none'}")
            gate_stages = gate.get("stages")
            if isinstance(gate_stages, list):
                for si, sname in enumerate(gate_stages):
                    if isinstance(sname, str) and sname not in stages:
                        self.doc.add(gpath + ("stages", si), f"no stage named {sname!r}"
                                     f"{did_you_mean(sname, stages)}; stages: {', '.join(map(str, stages))}")
            candidates = [targets[n] for n in (named if isinstance(named, list) else targets)
                          if isinstance(n, str) and n in targets and isinstance(targets[n], dict)]
            for ci, check in enumerate(gate.get("checks") or []):
                kind_name = check if isinstance(check, str) else (
                    next(iter(check)) if isinstance(check, dict) and len(check) == 1 else None)
                kind = self.kinds.get(kind_name) if isinstance(kind_name, str) else None
                if kind is None or not kind.judges:
                    continue
                judged = [t for t in candidates if target_kind(t) in kind.judges]
                params = next(iter(check.values())) if isinstance(check, dict) else None
                if kind.param_problem and isinstance(params, dict):
                    for target in judged:
                        problem = kind.param_problem(params, target)
                        if problem:
                            self.doc.add(gpath + ("checks", ci), f"check {kind_name!r}: {problem}")
                            break
                for ref in kind.target_refs if isinstance(params, dict) else ():
                    value = _mapping(params).get(ref)
                    if not isinstance(value, str):
                        continue
                    where = gpath + ("checks", ci, kind_name, ref)
                    if value not in targets:
                        self.doc.add(where, f"no target named {value!r}{did_you_mean(value, targets)}; "
                                            f"targets: {', '.join(targets) or 'none'}")
                    elif not isinstance(targets[value], dict) or target_kind(targets[value]) not in kind.judges:
                        self.doc.add(where, f"target {value!r} is not a {' or '.join(sorted(kind.judges))} "
                                            f"target, which {ref} needs")
                if not judged:
                    scope = "the gate's targets" if isinstance(named, list) else "the plan's targets"
                    self.doc.add(gpath + ("checks", ci),
                                 f"check {kind_name!r} judges {' or '.join(sorted(kind.judges))} targets, "
                                 f"and none of {scope} is one")

    def _known(self, path: tuple[Any, ...], what: str, name: object, known: Iterable[Any]) -> None:
        """A plan error at ``path`` when ``name`` (a string: other types are the schema's to refuse)
        names no ``what`` among ``known``, with the nearest known name."""
        known = list(known)
        if isinstance(name, str) and name not in known:
            self.doc.add(path, f"no {what} named {name!r}{did_you_mean(name, known)}")

    def _references(self) -> None:
        procedures = [p.get("name") for _, p in _items(_section(self.data, "rollback", "procedures"))]
        for ti, trigger in _items(_section(self.data, "rollback", "triggers")):
            for pi, pname in enumerate(trigger.get("procedures") or []):
                self._known(("rollback", "triggers", ti, "procedures", pi), "rollback procedure", pname, procedures)
        gates = [g.get("name") for _, g in _items(_section(self.data, "validation", "gates"))]
        for pi, proc in _items(_section(self.data, "rollback", "procedures")):
            specs = [(("actions", k), v) for k, v in (proc.get("actions") or {}).items() if isinstance(v, dict)]
            specs += [(("steps", si), next(iter(s.values()))) for si, s in enumerate(proc.get("steps") or [])
                      if isinstance(s, dict) and len(s) == 1 and isinstance(next(iter(s.values())), dict)]
            for where, spec in specs:
                verify = spec.get("verify")
                for gi, gname in enumerate((verify or {}).get("gates") or [] if isinstance(verify, dict) else []):
                    self._known(("rollback", "procedures", pi) + where + ("verify", "gates", gi), "validation gate",
                                gname, gates)
        for mi, metric in _items(_section(self.data, "validation", "metrics")):
            for gi, gname in enumerate(metric.get("gates") or []):
                self._known(("validation", "metrics", mi, "gates", gi), "validation gate", gname, gates)
        metrics = [m.get("name") for _, m in _items(_section(self.data, "monitoring", "metrics"))]
        for ai, alert in _items(_section(self.data, "monitoring", "alerts")):
            self._known(("monitoring", "alerts", ai, "metric"), "monitoring metric", alert.get("metric"), metrics)
        strategy_gates = [g.get("name") for _, g in _items(_section(self.data, "strategy", "gates"))]
        for mi, metric in _items(_section(self.data, "validation", "metrics")):
            name = metric.get("name")
            convention = CONVENTIONS["metric_gates"]
            if "gates" not in metric and isinstance(name, str) and not convention.linked(
                    name, [g for g in gates if isinstance(g, str)]):
                self.doc.add(("validation", "metrics", mi), f"metric {name!r} covers no gate: no gate is named like "
                             f"it ({convention.word(name)}_...); list them with gates: [...]")
        procedures_ = _section(self.data, "rollback", "procedures")
        if "rollback_gate" in strategy_gates and not procedures_:
            self.doc.add(("strategy", "gates"), "strategy.gates has a rollback_gate but rollback.procedures "
                                                "defines no procedure to be ready")
        if gates and "validation_gate" not in strategy_gates and isinstance(self.data.get("strategy"), dict):
            self.doc.add(("strategy", "gates"), "validation.gates are defined but strategy.gates has no "
                                                "validation_gate, so they would never run")

    def _after_rollback(self) -> None:
        """A trigger's ``verify`` names validation gates; a check's ``after_rollback`` overrides,
        merged into its parameters, must still be parameters of its kind."""
        gates = [g.get("name") for _, g in _items(_section(self.data, "validation", "gates"))]
        for ti, trigger in _items(_section(self.data, "rollback", "triggers")):
            for gi, gname in enumerate(trigger.get("verify") or []):
                self._known(("rollback", "triggers", ti, "verify", gi), "validation gate", gname, gates)
        targets = _mapping(self.data.get("targets"))
        for gi, gate in _items(_section(self.data, "validation", "gates")):
            for ci, check in enumerate(gate.get("checks") or []):
                if not (isinstance(check, dict) and len(check) == 1):
                    continue
                kind_name, params = next(iter(check.items()))
                kind = self.kinds.get(kind_name)
                if kind is None or not isinstance(params, dict) or not isinstance(params.get("after_rollback"), dict):
                    continue
                base = {k: v for k, v in params.items() if k not in ("after_rollback", "ready")}
                merged = merge_params(base, params["after_rollback"])
                where = ("validation", "gates", gi, "checks", ci, kind_name, "after_rollback")
                for error in jsonschema.Draft202012Validator(kind.params).iter_errors(merged):
                    self.doc.add(where, f"with these overrides the check's parameters are wrong: {error.message}")
                    break
                given = gate.get("targets")
                named: list[Any] = given if isinstance(given, list) else list(targets)
                for tname in named:
                    target = targets.get(tname) if isinstance(tname, str) else None
                    if kind.param_problem and isinstance(target, dict) and target_kind(target) in kind.judges:
                        problem = kind.param_problem(merged, target)
                        if problem:
                            self.doc.add(where, f"check {kind_name!r}: {problem}")
                            break

    def _probe(self, name: str, entry: object, convention: str) -> tuple[str | None, dict[str, Any]]:
        """The check kind and parameters a monitoring metric or task runs: ``entry`` (a check
        entry) when given, else the kind its name says by ``convention`` (service_health -> health)."""
        if isinstance(entry, str):
            return entry, {}
        if isinstance(entry, dict) and len(entry) == 1:
            kind, params = next(iter(entry.items()))
            return kind, dict(params) if isinstance(params, dict) else {}
        if entry is not None:  # the schema rejected it (and took it apart): no kind to read
            return None, {}
        word = CONVENTIONS[convention].word(name)
        kind = self.kinds.get(word)
        return (word, {}) if kind is not None and kind.judges and kind.run is not None else (None, {})

    def _monitoring(self) -> None:
        """Each monitoring metric has a source that can sample; alerts and tasks find their metric."""
        targets = _mapping(self.data.get("targets"))
        metrics = _items(_section(self.data, "monitoring", "metrics"))
        probes: dict[str, str | None] = {}
        for mi, metric in metrics:
            name = metric.get("name")
            if not isinstance(name, str):
                continue
            path = ("monitoring", "metrics", mi)
            source = _mapping(metric.get("source"))
            if "check" in source and "prometheus" in source:
                self.doc.add(path + ("source",), "a source is a check or a prometheus query, not both")
                continue
            if "prometheus" in source:
                probes[name] = None
                if "targets" in source:
                    self.doc.add(path + ("source", "targets"), "targets apply to a check source, not to prometheus",
                                 key=True)
                continue
            kind_name, _ = self._probe(name, source.get("check"), "monitoring_check")
            probes[name] = kind_name
            if kind_name is None and source.get("check") is not None:
                continue  # the schema said what is wrong with it
            if kind_name is None:
                self.doc.add(path, f"monitoring metric {name!r} has no source: its name does not end in a check "
                                   "kind (service_health samples health checks); give source: {check: KIND} or "
                                   "source: {prometheus: {url: ..., query: ...}}")
                continue
            self._probe_targets(path + ("source",), source.get("targets"), kind_name, targets, f"metric {name!r}")
        for ai, alert in _items(_section(self.data, "monitoring", "alerts")):
            if "metric" in alert or not isinstance(alert.get("name"), str):
                continue
            found = CONVENTIONS["alert_metric"].linked(alert["name"], probes)
            if len(found) != 1:
                why = f"several metrics match ({', '.join(found)})" if found else "no metric is named like it"
                self.doc.add(("monitoring", "alerts", ai), f"alert {alert['name']!r} covers no single monitoring "
                             f"metric: {why} (health_alert covers service_health); name it with metric: NAME")
        for ti, task in _items(_section(self.data, "automation", "tasks")):
            name = task.get("name")
            if not isinstance(name, str):
                continue
            path = ("automation", "tasks", ti)
            kind_name, _ = self._probe(name, task.get("check"), "task_check")
            if kind_name is None and task.get("check") is not None:
                continue  # the schema said what is wrong with it
            if kind_name is None:
                self.doc.add(path, f"task {name!r} runs no check: its name is not KIND_check (health_check) with a "
                                   "check kind; give check: KIND")
                continue
            self._probe_targets(path, task.get("targets"), kind_name, targets, f"task {name!r}")
            self._known(path + ("metric",), "monitoring metric", task.get("metric"), probes)

    def analytics_source(self, entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(source, check kind) of an analytics metric: given, or from its name (system_metrics,
        KIND_metrics); ``(None, None)`` when neither says."""
        source = _mapping(entry.get("source"))
        if source.get("system"):
            return "system", None
        if "sql" in source:
            return "sql", None
        if isinstance(source.get("checks"), str):
            return "checks", source["checks"]
        word = CONVENTIONS["analytics_source"].word(str(entry.get("name", "")))
        if word == "system":
            return "system", None
        if word in self.kinds:
            return "checks", word
        return None, None

    @staticmethod
    def analysis_metric(entry: Mapping[str, Any]) -> str:
        """The analytics metric an analysis reads: ``metric:``, else the one named like it
        (system_analysis reads system_metrics)."""
        return str(entry.get("metric") or CONVENTIONS["analysis_metric"].word(str(entry.get("name", ""))))

    def _analytics(self) -> None:
        """Each analytics source names one thing that exists; each analysis finds its metric."""
        targets = _mapping(self.data.get("targets"))
        names = []
        for mi, metric in _items(_section(self.data, "analytics", "metrics")):
            names.append(metric.get("name"))
            path = ("analytics", "metrics", mi, "source")
            source = _mapping(metric.get("source"))
            if len([k for k in ("checks", "system", "sql") if k in source]) > 1:
                self.doc.add(path, "a source is one of checks, system or sql")
                continue
            if "sql" in source:
                tname = source.get("target")
                if not isinstance(tname, str):
                    self.doc.add(path, "an sql source names the data store it runs on: target: NAME")
                elif tname not in targets:
                    self.doc.add(path + ("target",), f"no target named {tname!r}{did_you_mean(tname, targets)}")
                elif not isinstance(targets[tname], dict) or target_kind(targets[tname]) != "datastore":
                    self.doc.add(path + ("target",), f"target {tname!r} is not a data store (sqlite: or dsn:)")
            elif "target" in source:
                self.doc.add(path + ("target",), "target applies to an sql source", key=True)
            self._known(path + ("checks",), "check kind", source.get("checks"), self.kinds)
        for ai, analysis in _items(_section(self.data, "analytics", "analysis")):
            mname = self.analysis_metric(analysis)
            if mname in names:
                continue
            if isinstance(analysis.get("metric"), str):
                self.doc.add(("analytics", "analysis", ai, "metric"),
                             f"no analytics metric named {mname!r}{did_you_mean(mname, names)}")
            elif isinstance(analysis.get("name"), str):
                self.doc.add(("analytics", "analysis", ai),
                             f"analysis {analysis['name']!r} covers no analytics metric: none is named "
                             f"{mname}; name it with metric: NAME")

    def _probe_targets(self, path: tuple[object, ...], named: object, kind_name: str,
                       targets: Mapping[str, Any], who: str) -> None:
        kind = self.kinds.get(kind_name)
        if kind is None or not kind.judges:
            if kind is not None:
                self.doc.add(path, f"{who}: check {kind_name!r} judges no target; a probe needs one that does")
            return
        if isinstance(named, list):
            for i, tname in enumerate(named):
                self._known(path + ("targets", i), "target", tname, targets)
            names = [n for n in named if isinstance(n, str) and n in targets]
        else:
            names = list(targets)
        if not any(isinstance(targets[n], dict) and target_kind(targets[n]) in kind.judges for n in names):
            self.doc.add(path, f"{who} samples {kind_name!r} checks, which judge "
                               f"{' or '.join(sorted(kind.judges))} targets, and none of "
                               f"{'its' if isinstance(named, list) else 'the plan' + chr(39) + 's'} targets is one")

    # -- the model ------------------------------------------------------------------------------

    def build(self, path: Path, display: str, sha256: str) -> Plan:
        data = self.data
        release = data.get("release") or {}
        strategy_gates = {g["name"]: g for _, g in _items(_section(data, "strategy", "gates"))}
        vgate = strategy_gates.get("validation_gate", {})
        default_timeout = vgate.get("timeout", DEFAULT_TIMEOUT)
        default_required = vgate.get("required", True)
        stages = [
            Stage(s["name"], i, s.get("validation", True), s.get("rollback", True), s.get("monitoring", True),
                  self.doc.mark(("strategy", "stages", i)), s.get("deployed", i > 0))
            for i, s in _items(_section(data, "strategy", "stages"))
        ]
        targets = {
            name: Target(name, target_kind(spec), spec, self.doc.mark(("targets", name), key=True))
            for name, spec in (data.get("targets") or {}).items()
        }
        gates = []
        for gi, g in _items(_section(data, "validation", "gates")):
            gates.append(Gate(
                name=g["name"],
                checks=self._checks(g["checks"], ("validation", "gates", gi, "checks")),
                timeout=self.seconds(g.get("timeout", default_timeout)),
                required=g.get("required", default_required),
                targets=tuple(g["targets"]) if "targets" in g else None,
                stages=tuple(g["stages"]) if "stages" in g else None,
                mark=self.doc.mark(("validation", "gates", gi)),
                concurrency=g.get("concurrency", 16),
                after_rollback=g.get("after_rollback"),
            ))
        metrics = self._metrics([g.name for g in gates])
        for index, gate in enumerate(gates):
            covering = tuple(CheckSpec(METRIC, {"metric": m.name}, "metric", m.mark, subject=m.name)
                             for m in metrics.values() if gate.name in m.gates)
            if covering:
                gates[index] = replace(gate, checks=gate.checks + covering)
        plan = Plan(path=path.resolve(), display=display, sha256=sha256,
                    name=str(release.get("name") or path.stem), version=str(release.get("version", "")),
                    evidence=release.get("evidence"), stages=stages, targets=targets, gates=gates,
                    secrets=frozenset(self.doc.secrets), data=data, metrics=metrics, time_scale=self.time_scale)
        plan.strategy_gates = {name: (g.get("required", True), self.seconds(g.get("timeout", DEFAULT_TIMEOUT)))
                               for name, g in strategy_gates.items()}
        plan.procedures = [self._procedure(i, p, [g.name for g in gates])
                           for i, p in _items(_section(data, "rollback", "procedures"))]
        plan.triggers = {
            t["name"]: Trigger(t["name"], t.get("action", "rollback"), self.seconds(t.get("timeout", DEFAULT_TIMEOUT)),
                               tuple(t["procedures"]) if "procedures" in t else None,
                               self.doc.mark(("rollback", "triggers", i)),
                               tuple(t["verify"]) if "verify" in t else None)
            for i, t in _items(_section(data, "rollback", "triggers"))
        }
        self._build_monitoring(plan, strategy_gates.get("monitoring_gate", {}))
        plan.workflows = {w["name"]: self._workflow(i, w) for i, w in _items(_section(data, "automation", "workflows"))}
        self._build_analytics(plan)
        plan.not_acted_on = self._not_acted_on(stages, strategy_gates)
        plan.notify = build_receivers(data, self.doc)
        return plan

    def _build_analytics(self, plan: Plan) -> None:
        section = _mapping(self.data.get("analytics"))
        plan.history_store = section.get("store")
        for mi, entry in _items(section.get("metrics")):
            source, kind = self.analytics_source(entry)
            if source is None:
                continue  # listed under not acted on
            given = entry.get("source") or {}
            plan.analytics_metrics[entry["name"]] = AnalyticsMetric(
                entry["name"], source, kind, given.get("sql"), given.get("target"),
                parse_duration(entry["interval"]) if "interval" in entry else None,
                parse_duration(entry["retention"]) if "retention" in entry else None,
                self.doc.mark(("analytics", "metrics", mi)))
        for ai, entry in _items(section.get("analysis")):
            metric = plan.analytics_metrics.get(self.analysis_metric(entry))
            if metric is None:
                continue  # its metric has no source: listed under not acted on
            interval = entry.get("interval")
            plan.analyses.append(Analysis(
                entry["name"], metric.name, parse_duration(interval) if interval is not None else metric.interval,
                parse_duration(entry["retention"]) if "retention" in entry else metric.retention,
                float(entry.get("tolerance", 0.1)), metric.source == "system",
                self.doc.mark(("analytics", "analysis", ai))))

    def _spec(self, kind: str, params: dict[str, Any], path: tuple[object, ...]) -> CheckSpec:
        label = f"{kind}-{params['name']}" if params.get("name") else kind
        return CheckSpec(kind, params, label, self.doc.mark(path))

    def _build_monitoring(self, plan: Plan, gate: Mapping[str, Any]) -> None:
        for mi, m in _items(_section(self.data, "monitoring", "metrics")):
            path = ("monitoring", "metrics", mi)
            source = m.get("source") or {}
            check = None
            if "prometheus" not in source:
                kind, params = self._probe(m["name"], source.get("check"), "monitoring_check")
                check = self._spec(kind, params, path) if kind else None
            plan.monitors[m["name"]] = MonitorMetric(
                m["name"], self.seconds(m.get("interval", 60)), float(m.get("threshold", 1.0)),
                self.seconds(m["window"]) if "window" in m else None, check,
                tuple(source["targets"]) if "targets" in source else None, source.get("prometheus"),
                self.doc.mark(path))
        for ai, a in _items(_section(self.data, "monitoring", "alerts")):
            metric = a.get("metric") or CONVENTIONS["alert_metric"].linked(a["name"], plan.monitors)[0]
            plan.alerts.append(Alert(a["name"], metric, float(a.get("threshold", 1.0)),
                                     self.seconds(a.get("window", 300)), self.doc.mark(("monitoring", "alerts", ai))))
        for ti, t in _items(_section(self.data, "automation", "tasks")):
            path = ("automation", "tasks", ti)
            kind, params = self._probe(t["name"], t.get("check"), "task_check")
            assert kind is not None
            metric = t.get("metric") or next((m.name for m in plan.monitors.values()
                                              if m.check is not None and m.check.kind == kind), None)
            plan.tasks.append(Task(t["name"], self.seconds(t.get("interval", 60)),
                                   self.seconds(t.get("timeout", 30)), self._spec(kind, params, path),
                                   tuple(t["targets"]) if "targets" in t else None, metric, self.doc.mark(path)))
        if "window" in gate:
            plan.monitoring_window = self.seconds(gate["window"])
        elif plan.alerts:
            plan.monitoring_window = max(a.window for a in plan.alerts)
        else:
            plan.monitoring_window = 10 * max((m.interval for m in plan.monitors.values()), default=0.0)

    def _workflow(self, index: int, entry: Mapping[str, Any]) -> Workflow:
        path = ("automation", "workflows", index)
        return Workflow(entry["name"], self._steps(entry, path), self.seconds(entry.get("timeout", DEFAULT_TIMEOUT)),
                        self.doc.mark(path))

    def _checks(self, entries: Sequence[Any], path: tuple[object, ...]) -> tuple[CheckSpec, ...]:
        specs = []
        for ci, entry in enumerate(entries):
            kind, params = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            params = dict(params or {})
            after_rollback = params.pop("after_rollback", None)
            # A gate's first check with retries waits for the service: the others wait for it.
            ready = params.pop("ready", None)
            ready = bool(ready) if ready is not None else ci == 0 and bool(params.get("retries"))
            # A kind that names its items itself (command[migrate]: see CheckKind.label) is asked
            # here, once; any other check with a name is labelled kind-name (health-deep[api]).
            namer = self.kinds[kind].label
            subject = namer(params) if namer is not None else None
            label = f"{kind}-{params['name']}" if params.get("name") and namer is None else kind
            specs.append(CheckSpec(kind, params, label, self.doc.mark(path + (ci,)), after_rollback, ready, subject))
        # Readiness checks run first; the others keep the plan's order.
        return tuple(sorted(specs, key=lambda s: not s.ready))

    def _metrics(self, gate_names: list[str]) -> dict[str, Metric]:
        """Validation metrics, each covering its ``gates`` (default: the gates named like it:
        service_metrics -> service_validation: see CONVENTIONS). Ten samples per window unless an
        interval is given."""
        metrics = {}
        for i, m in _items(_section(self.data, "validation", "metrics")):
            gates = tuple(m["gates"]) if "gates" in m else tuple(CONVENTIONS["metric_gates"].linked(m["name"], gate_names))
            window = self.seconds(m.get("window", 300))
            interval = self.seconds(m["interval"]) if "interval" in m else window / 10
            metrics[m["name"]] = Metric(m["name"], float(m.get("threshold", 1.0)), window, interval, gates,
                                        self.doc.mark(("validation", "metrics", i)))
        return metrics

    def _procedure(self, index: int, entry: Mapping[str, Any], gate_names: list[str]) -> Procedure:
        path = ("rollback", "procedures", index)
        return Procedure(entry["name"], self._steps(entry, path, verify_default=True),
                         self.seconds(entry.get("timeout", DEFAULT_TIMEOUT)), self.doc.mark(path),
                         tuple(CONVENTIONS["procedure_gates"].linked(entry["name"], gate_names)))

    def _steps(self, entry: Mapping[str, Any], path: tuple[object, ...], verify_default: bool = False) -> tuple[Step, ...]:
        """A procedure's or workflow's steps, each with its action from ``actions`` or inline."""
        actions = entry.get("actions") or {}
        steps = []
        for si, item in enumerate(entry["steps"]):
            name, spec = (item, actions.get(item)) if isinstance(item, str) else next(iter(item.items()))
            if spec is None and verify_default and CONVENTIONS["verify_step"].word(name):
                spec = {"verify": {}}
            action, params = next(iter(spec.items())) if spec else (None, {})
            steps.append(Step(entry["name"], name, si, action, dict(params or {}), self.doc.mark(path + ("steps", si))))
        return tuple(steps)

    def _not_acted_on(self, stages: list[Stage], strategy_gates: Mapping[str, Any]) -> list[str]:
        notes = []
        monitored = [s.name for s in stages if s.monitoring]
        metrics = _section(self.data, "monitoring", "metrics")
        if "monitoring_gate" not in strategy_gates or not monitored:
            for keys in (("monitoring", "metrics"), ("monitoring", "alerts"), ("automation", "tasks")):
                if _section(self.data, *keys):
                    why = ("no stage has monitoring on" if "monitoring_gate" in strategy_gates
                           else "strategy.gates has no monitoring_gate")
                    notes.append(f"{format_path(keys)}: not sampled or run: {why}")
        elif not metrics:
            notes.append("strategy.gates monitoring_gate: monitoring.metrics defines no metric to sample")
        for _, entry in _items(_section(self.data, "analytics", "metrics")):
            if self.analytics_source(entry) == (None, None):
                notes.append(f"analytics.metrics {entry.get('name')}: not recorded: its name is neither "
                             "system_metrics nor KIND_metrics (performance_metrics); give source: {sql: ..., "
                             "target: ...}, {checks: KIND} or {system: true}")
        metrics = {e.get("name"): e for _, e in _items(_section(self.data, "analytics", "metrics"))}
        for _, entry in _items(_section(self.data, "analytics", "analysis")):
            mname = self.analysis_metric(entry)
            if mname in metrics and self.analytics_source(metrics[mname]) == (None, None):
                notes.append(f"analytics.analysis {entry.get('name')}: not analysed: its metric {mname} records "
                             "nothing")
        return notes

