"""``syntax``: do the config files parse, and match their JSON Schema?

The target's ``files`` globs (relative to the plan) pick the files; the parser follows the
extension (``.yaml``/``.yml``, ``.json``, ``.toml``, ``.ini``/``.cfg``/``.conf``) unless the
``format`` parameter names one. A ``schema`` (on the target or as a parameter) is a JSON Schema
file, JSON or YAML, that every file must match. Every error names the file and line.
"""

from __future__ import annotations

import configparser
import glob
import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema

from ..problems import format_path
from ..yamldoc import Document, excerpt, load_yaml_text, read_text
from .base import CheckContext, CheckKind, CheckResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["FORMATS", "SYNTAX", "config_files", "display_path", "load_validator", "parse_config"]

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml",
           ".ini": "ini", ".cfg": "ini", ".conf": "ini"}

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "schema": {"type": "string"},
        "format": {"enum": sorted(set(FORMATS.values()))},
        "name": {"type": "string"},
    },
}


def config_files(ctx: CheckContext) -> list[Path]:
    """The files the target's globs match, sorted, without duplicates."""
    assert ctx.target is not None
    found: set[Path] = set()
    for pattern in ctx.target.spec["files"]:
        full = pattern if Path(pattern).is_absolute() else str(ctx.base_dir / pattern)
        found.update(Path(p).resolve() for p in glob.glob(full, recursive=True) if Path(p).is_file())
    return sorted(found)


def display_path(ctx: CheckContext, path: Path) -> str:
    """``path`` relative to the plan's directory when it is inside it, else as it is."""
    try:
        return str(path.relative_to(ctx.base_dir.resolve()))
    except ValueError:
        return str(path)


def parse_config(path: Path, display: str, fmt: str) -> tuple[object, Document | None, list[str]]:
    """(data, positions for YAML and JSON, errors as ``file:line:col: message``); a parse error
    shows a bounded excerpt of its line with secret-looking values redacted, never the file."""
    text, problems = read_text(path, display)
    if text is None:
        return None, None, [f"{p.file}:{p.line}:{p.col}: {p.message}" for p in problems]
    data, positions, errors = _parse_text(text, display, fmt)
    return data, positions, [_near(text, error) for error in errors]


def _near(text: str, error: str) -> str:
    match = re.match(r".*?:(\d+):(\d+): ", error)
    if match is None or int(match.group(1)) > text.count("\n") + 1:
        return error
    return f"{error} (near: {excerpt(text, int(match.group(1)), int(match.group(2)))!r})"


def _parse_text(text: str, display: str, fmt: str) -> tuple[object, Document | None, list[str]]:
    if fmt == "yaml":
        doc = load_yaml_text(text, display, substitute_env=False)
        errors = [f"{p.file}:{p.line}:{p.col}: {p.message}" for p in doc.problems
                  if p.message != "the file is empty"]
        return doc.data, doc, errors
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, None, [f"{display}:{exc.lineno}:{exc.colno}: {exc.msg}"]
        except RecursionError:
            return None, None, [f"{display}:1:1: nested too deeply to parse"]
        positions = load_yaml_text(text, display, substitute_env=False)
        return data, positions if not positions.problems else None, []
    if fmt == "toml":
        try:
            return tomllib.loads(text), None, []
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
            where = f"{match.group(1)}:{match.group(2)}" if match else "1:1"
            message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
            return None, None, [f"{display}:{where}: {message}"]
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=display)
    except configparser.MissingSectionHeaderError as exc:
        return None, None, [f"{display}:{exc.lineno}:1: no [section] header before this line"]
    except configparser.ParsingError as exc:
        return None, None, [f"{display}:{line}:1: cannot parse this line" for line, _ in exc.errors]
    except configparser.Error as exc:
        line = getattr(exc, "lineno", 1) or 1
        return None, None, [f"{display}:{line}:1: {exc.message}"]
    return {s: dict(parser[s]) for s in parser.sections()}, None, []


def load_validator(ctx: CheckContext, value: str) -> tuple[Any, str | None]:
    """A validator for the JSON Schema file ``value`` (JSON or YAML), or why there is none."""
    path = ctx.path(value)
    text, problems = read_text(path, value)
    if text is None:
        return None, f"schema {value}: {problems[0].message}"
    doc = load_yaml_text(text, value, substitute_env=False)
    if doc.problems or not isinstance(doc.data, dict):
        return None, f"schema {value} is not a JSON Schema document"
    try:
        validator_cls = jsonschema.validators.validator_for(doc.data)
        validator_cls.check_schema(doc.data)
    except jsonschema.SchemaError as exc:
        return None, f"schema {value} is not a valid JSON Schema: {exc.message}"
    return validator_cls(doc.data), None


def run(ctx: CheckContext) -> CheckResult:
    assert ctx.target is not None
    files = config_files(ctx)
    schema_path = ctx.params.get("schema") or ctx.target.spec.get("schema")
    expected: dict[str, Any] = {"errors": 0}
    if schema_path:
        expected["schema"] = schema_path
    if not files:
        patterns = ", ".join(ctx.target.spec["files"])
        return CheckResult(False, f"no config file matches {patterns}", {"files": 0}, {"files": ">= 1"})
    validator = None
    errors: list[str] = []
    if schema_path:
        validator, error = load_validator(ctx, schema_path)
        if error:
            errors.append(error)
    for path in files:
        if ctx.remaining() <= 0:
            errors.append(f"stopped before {display_path(ctx, path)}: {ctx.budget_text()} ran out")
            break
        display = display_path(ctx, path)
        fmt = ctx.params.get("format") or FORMATS.get(path.suffix.lower())
        if fmt is None:
            errors.append(f"{display}:1:1: unknown format (extension {path.suffix or 'none'}); "
                          "set the check's format parameter")
            continue
        data, positions, file_errors = parse_config(path, display, fmt)
        errors.extend(file_errors)
        if validator is not None and not file_errors:
            for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
                where = tuple(error.absolute_path)
                mark = positions.mark(where) if positions else None
                line_col = f"{mark.line}:{mark.col}" if mark else "1:1"
                errors.append(f"{display}:{line_col}: {format_path(where)}: {error.message}")
    measured = {"files": len(files), "errors": len(errors)}
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        return CheckResult(False, f"{len(errors)} {noun} in {len(files)} config file(s): {errors[0]}",
                           measured, expected, errors)
    checked = "parse and match the schema" if validator else "parse"
    return CheckResult(True, f"{len(files)} config file(s) {checked}", measured, expected)


SYNTAX = CheckKind(
    name="syntax",
    judges=frozenset({"config"}),
    params=PARAMS,
    run=run,
    description="config files parse (YAML, JSON, TOML, INI) and match an optional JSON Schema",
)
