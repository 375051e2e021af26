"""``compatibility``: will what depends on this release still work with it?

* **Config files** against the previous release's: ``previous`` is a glob or a directory
  (relative to the plan); files are matched by name. A key the previous release had that is gone,
  or whose type changed (integer and number count as one type), is breaking and fails the check,
  named by its dotted path; added keys are fine and listed. A previous file with no current
  counterpart is breaking too. With a ``schema`` (the check's, else the target's) every current
  file must also match it.
* **Services** (``url``): the version the service reports, ``field`` (dotted, default
  ``version``) of the JSON at ``path`` (default ``/version``), must be a PEP 440 version within
  ``version`` (a specifier such as ``>=1.0,<2``); without ``version``, any valid version passes.
  ``json`` judges further fields of the same answer with the comparison vocabulary of
  :mod:`pytest_release.compare` (``{api: {">=": 3}, "features": {length: {">=": 1}}}``), as
  ``health`` does.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import CheckContext, CheckKind, CheckResult
from ..compare import MISSING, fields_problems, fields_schema, judge, lookup
from .health import json_problems
from .http import get
from .limits import MAX_BODY_PARAM, REQUEST_TIMEOUT_PARAM
from .syntax import FORMATS, config_files, display_path, load_validator, parse_config

__all__ = ["COMPATIBILITY", "config_shape"]

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "previous": {"type": "string", "minLength": 1,
                     "description": "config: the previous release's config files, a glob or a directory "
                                    "relative to the plan; files are matched by name"},
        "schema": {"type": "string", "description": "config: a JSON Schema file every current file must match "
                                                    "(default: the target's schema)"},
        "path": {"type": "string", "pattern": "^/", "description": "services: where the version is reported "
                                                                   "(default /version)"},
        "field": {"type": "string", "minLength": 1,
                  "description": "services: the dotted JSON field holding the version (default version)"},
        "version": {"type": "string", "minLength": 1,
                    "description": "services: a PEP 440 specifier the reported version must satisfy (>=1.0,<2)"},
        "json": fields_schema("services: further fields of the version answer: field path -> a value it must "
                              "equal, or comparisons ({'>=': 3}, {matches: '^v'}, {version: '>=1.0'})"),
        "request_timeout": {**REQUEST_TIMEOUT_PARAM, "description": "services: " + REQUEST_TIMEOUT_PARAM["description"]},
        "max_body": {**MAX_BODY_PARAM, "description": "services: " + MAX_BODY_PARAM["description"]},
        "name": {"type": "string", "description": "names the item (compatibility-NAME[target])"},
    },
}


def _type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def config_shape(data: object, prefix: str = "") -> dict[str, str]:
    """``{dotted.path: type}`` for every key of a parsed config, nested mappings included."""
    shape: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            shape[path] = _type(value)
            if isinstance(value, dict):
                shape.update(config_shape(value, path))
    return shape


def _previous_files(ctx: CheckContext, value: str) -> list[Path]:
    base = ctx.path(value)
    if base.is_dir():
        return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    pattern = value if Path(value).is_absolute() else str(ctx.base_dir / value)
    return sorted(Path(p).resolve() for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def _config(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    previous_value = ctx.params.get("previous")
    schema_value = ctx.params.get("schema") or target.spec.get("schema")
    expected: dict[str, Any] = {}
    if previous_value:
        expected.update({"previous": previous_value, "breaking": 0})
    if schema_value:
        expected.update({"schema": schema_value, "schema_errors": 0})
    if not expected:
        return CheckResult(False, "nothing to compare with: give previous (the last release's config) or a schema "
                                  "(on the check or the target)", {}, {"previous or schema": "set"})
    files = config_files(ctx)
    if not files:
        return CheckResult(False, f"no config file matches {', '.join(target.spec['files'])}", {"files": 0},
                           {"files": ">= 1"})
    breaking: list[str] = []
    errors: list[str] = []
    added: list[str] = []
    parsed: dict[str, tuple[str, object]] = {}
    for path in files:
        display = display_path(ctx, path)
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            errors.append(f"{display}: unknown format (extension {path.suffix or 'none'})")
            continue
        data, _, problems = parse_config(path, display, fmt)
        if problems:
            errors.extend(problems)
            continue
        parsed[path.name] = (display, data)
    measured: dict[str, Any] = {"files": len(files)}
    if previous_value:
        previous = _previous_files(ctx, previous_value)
        measured["previous_files"] = len(previous)
        if not previous:
            breaking.append(f"previous config {previous_value}: no file found")
        compared = 0
        for old in previous:
            old_display = display_path(ctx, old)
            fmt = FORMATS.get(old.suffix.lower())
            if fmt is None:
                continue
            if old.name not in parsed:
                if old.name in {f.name for f in files}:
                    continue  # the current file does not parse: already an error
                breaking.append(f"{old.name}: removed (the previous release had {old_display})")
                continue
            old_data, _, problems = parse_config(old, old_display, fmt)
            if problems:
                errors.extend(f"previous {p}" for p in problems)
                continue
            compared += 1
            display, data = parsed[old.name]
            before, after = config_shape(old_data), config_shape(data)
            for key, kind in before.items():
                if key not in after:
                    if not any(key.startswith(k + ".") for k in before if k not in after and k != key):
                        breaking.append(f"{display}: {key}: removed (was {kind})")
                elif after[key] != kind:
                    breaking.append(f"{display}: {key}: type changed from {kind} to {after[key]}")
            added.extend(f"{display}: {key}: added ({kind})" for key, kind in after.items()
                         if key not in before and not any(key.startswith(k + ".") for k in after
                                                          if k not in before and k != key))
        measured.update({"compared": compared, "breaking": len(breaking), "added": len(added)})
    if schema_value:
        validator, problem = load_validator(ctx, schema_value)
        if problem:
            errors.append(problem)
        else:
            for _name, (display, data) in sorted(parsed.items()):
                for error in validator.iter_errors(data):
                    where = ".".join(map(str, error.absolute_path)) or "(root)"
                    errors.append(f"{display}: {where}: {error.message}")
        measured["schema_errors"] = sum(1 for e in errors if not e.startswith("previous"))
    problems = breaking + errors
    if problems:
        what = f"{len(breaking)} breaking change(s)" if breaking else f"{len(errors)} error(s)"
        if breaking and errors:
            what += f" and {len(errors)} error(s)"
        return CheckResult(False, f"{what} in {len(files)} config file(s): {problems[0]}", measured, expected,
                           problems + added)
    parts = []
    if previous_value:
        parts.append(f"compatible with {previous_value} ({measured['compared']} file(s) compared, "
                     f"{len(added)} key(s) added)")
    if schema_value:
        parts.append(f"match {schema_value}")
    return CheckResult(True, f"{len(files)} config file(s) {'; '.join(parts)}", measured, expected, added)


def _service(ctx: CheckContext) -> CheckResult:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    target = ctx.target
    assert target is not None
    path = ctx.params.get("path", "/version")
    field = ctx.params.get("field", "version")
    spec_text = ctx.params.get("version")
    url = target.spec["url"].rstrip("/") + path
    expected: dict[str, Any] = {"version": spec_text or "a PEP 440 version"}
    answer = get(ctx, url)
    if answer.kind == "budget":
        return CheckResult(False, f"GET {url} {answer.error}", {}, expected)
    if not answer.ok:
        return CheckResult(False, f"GET {url} {answer.error}", answer.measured(), expected)
    if answer.status != 200:
        return CheckResult(False, f"GET {url} answered {answer.status}, expected 200 with the version",
                           {"status": answer.status}, expected)
    try:
        document = json.loads(answer.body)
    except ValueError:
        document = MISSING
    reported = MISSING if document is MISSING else lookup(document, field)
    if reported is MISSING:
        return CheckResult(False, f"GET {url}: no JSON field {field!r} with the version", {"status": 200}, expected)
    measured: dict[str, Any] = {"version": reported}
    fields = ctx.params.get("json") or {}
    if fields:
        expected["json"] = fields
    problems = json_problems(document, fields, measured)
    try:
        version = Version(str(reported))
    except InvalidVersion:
        return CheckResult(False, f"{url} reports {field} {reported!r}, not a PEP 440 version", measured, expected,
                           problems)
    if spec_text:
        try:
            SpecifierSet(spec_text)
        except InvalidSpecifier:
            return CheckResult(False, f"version {spec_text!r} is not a PEP 440 specifier", measured, expected)
        if judge(str(reported), {"version": spec_text}) is not None:
            problems.insert(0, f"{url} reports version {version}, outside {spec_text}")
    if problems:
        if not problems[0].startswith(url):
            problems[0] = f"{url} reports version {version}; {problems[0]}"
        return CheckResult(False, problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                           measured, expected, problems)
    within = f", within {spec_text}" if spec_text else ""
    also = f"; {len(fields)} JSON field(s) as expected" if fields else ""
    return CheckResult(True, f"{url} reports version {version}{within}{also}", measured, expected)


def run(ctx: CheckContext) -> CheckResult:
    assert ctx.target is not None
    return _config(ctx) if "files" in ctx.target.spec else _service(ctx)


def param_problem(params: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """A version specifier that is not PEP 440 is a plan error, and so is a broken comparison."""
    problem = fields_problems(params.get("json"), "json")
    if problem:
        return problem
    if isinstance(params.get("version"), str):
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(params["version"])
        except InvalidSpecifier:
            return f"version: {params['version']!r} is not a PEP 440 version specifier (e.g. '>=1.0,<2')"
    return None


COMPATIBILITY = CheckKind(
    name="compatibility",
    judges=frozenset({"config", "service"}),
    judges_target=lambda target: "tcp" not in target.spec,
    params=PARAMS,
    run=run,
    param_problem=param_problem,
    description="config keys and types against the previous release and a JSON Schema; "
                "the service's reported version against a PEP 440 specifier",
)
