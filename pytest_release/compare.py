"""One comparison vocabulary: what a measured value is expected to be.

Used by JSON checks on HTTP answers (``health``'s ``json``, ``compatibility``'s ``json``) and by
``consistency``'s SQL assertions (``value``, ``rows``). An *expectation* is either

* a plain value (a string, number, boolean, null or list): the measured value must equal it
  (a boolean equals only a boolean: ``true`` is not ``1``); or
* a mapping of comparisons, every one of which must hold::

      {">=": 5000}                      {"<": 10, ">": 0}          {"!=": "failing"}
      {between: [1, 10]}                {in: [ok, degraded]}       {"==": {"a": 1}}
      {exists: true}                    {empty: false}             {length: {">=": 1}}
      {matches: "^shop-[0-9]+$"}        {version: ">=1.0,<2"}

  ``>= <= > < between`` compare numbers (a string, boolean or null fails, saying so);
  ``between`` includes both ends; ``in`` is equality with one of a list; ``exists: false`` holds
  when the field is missing; ``empty`` applies to strings, lists, objects and null (null is
  empty); ``length`` compares the length of a string, list or object with a number or a mapping
  of comparisons; ``matches`` is a Python regular expression searched in a string (anchor it with
  ``^`` and ``$``); ``version`` is a PEP 440 specifier the value, a version, must satisfy. An
  object is expected with ``==`` (a plain mapping is always read as comparisons).

Field paths (``json`` keys) are dotted: ``status``, ``checks.db``, ``rows.4.id`` (a part made of
digits, optionally with a leading ``-``, indexes a list: ``rows.-1`` is the last row), ``0.n``
(the first item of a list body). A key holding a dot is written with ``\\.``: ``a\\.b`` is the
key ``a.b`` (in a double-quoted YAML string the backslash is doubled). The empty path ``""`` is
the whole document.

:func:`judge` never raises on what a service answers: a value of the wrong type, an invalid
version or a broken regular expression is a failed comparison with a message, bounded in length.
"""

from __future__ import annotations

import decimal
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MISSING", "OPERATORS", "bounded", "describe", "expectation_problems", "expectation_schema",
           "fields_problems", "fields_schema", "judge", "lookup", "operator_hint", "parse_path", "shown"]

NUMERIC = (">=", "<=", ">", "<")
OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "between", "in", "exists", "empty", "length", "matches", "version")
#: How many characters of a value a message shows.
SHOWN_CHARS = 80


class _Missing:
    def __repr__(self) -> str:
        return "missing"


#: The value of a field that is not there.
MISSING: Any = _Missing()


# -- paths --------------------------------------------------------------------------------------


def parse_path(path: str) -> list[str]:
    """The parts of a dotted field path; ``\\.`` is a dot inside a part, ``\\\\`` a backslash."""
    if path == "":
        return []
    parts: list[str] = []
    current: list[str] = []
    chars = iter(path)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "\\")
            current.append(nxt if nxt in ".\\" else "\\" + nxt)
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


_INDEX = re.compile(r"-?[0-9]+")


def lookup(document: object, path: str) -> Any:
    """The value at ``path`` in ``document``, or :data:`MISSING`."""
    value = document
    for part in parse_path(path):
        if isinstance(value, Mapping):
            if part not in value:
                return MISSING
            value = value[part]
        elif isinstance(value, list) and _INDEX.fullmatch(part):
            index = int(part)
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


# -- showing values -----------------------------------------------------------------------------


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters: a string quoted (``'ok'``), anything
    else as JSON (``true``, ``null``, ``[1, 2]``)."""
    if value is MISSING:
        return "missing"
    if isinstance(value, decimal.Decimal):
        text = str(value)
    elif isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded(value: Any, *, chars: int = 200, items: int = 10, depth: int = 3) -> Any:
    """A measured value small enough for a record: strings cut to ``chars``, lists to ``items``
    (with a last entry saying how many more there were), objects to ``items`` keys, nesting to
    ``depth``; numbers, booleans and null as they are."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str):
        return value if len(value) <= chars else value[: chars - 3] + "..."
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bounded(bytes(value).hex(), chars=chars)
    if depth <= 0:
        return shown(value, chars)
    if isinstance(value, (list, tuple)):
        kept = [bounded(v, chars=chars, items=items, depth=depth - 1) for v in value[:items]]
        if len(value) > items:
            kept.append(f"... {len(value) - items} more")
        return kept
    if isinstance(value, Mapping):
        keys = list(value)[:items]
        kept_map = {str(k): bounded(value[k], chars=chars, items=items, depth=depth - 1) for k in keys}
        if len(value) > items:
            kept_map["..."] = f"{len(value) - items} more"
        return kept_map
    return shown(value, chars)


def describe(expected: object) -> str:
    """An expectation as words: ``>= 5000``, ``between 1 and 10``, ``matches '^shop'``, ``"ok"``."""
    if not isinstance(expected, Mapping):
        return shown(expected)
    parts = []
    for op, operand in expected.items():
        if op == "between" and isinstance(operand, Sequence) and len(operand) == 2:
            parts.append(f"between {shown(operand[0])} and {shown(operand[1])}")
        elif op == "in":
            parts.append(f"one of {shown(operand)}")
        elif op == "exists":
            parts.append("present" if operand else "missing")
        elif op == "empty":
            parts.append("empty" if operand else "not empty")
        elif op == "length":
            parts.append(f"of length {describe(operand)}")
        elif op == "matches":
            parts.append(f"matching {shown(operand)}")
        elif op == "version":
            parts.append(f"a version within {operand}")
        else:
            parts.append(f"{op} {shown(operand)}")
    return " and ".join(parts) or "anything"


# -- judging ------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def equal(a: object, b: object) -> bool:
    """JSON equality: a boolean equals only a boolean; lists and objects item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == b


def judge(value: Any, expected: object) -> str | None:
    """``None`` when ``value`` (:data:`MISSING` for a field not there) meets ``expected``, else
    why not: ``"is 12, expected >= 5000"``. Never raises on the value."""
    if not isinstance(expected, Mapping):
        if value is MISSING:
            return f"is missing, expected {describe(expected)}"
        return None if equal(value, expected) else f"is {shown(value)}, expected {describe(expected)}"
    if value is MISSING:
        if "exists" in expected and not expected["exists"]:
            return None
        return f"is missing, expected {describe(expected)}"
    for op, operand in expected.items():
        problem = _one(value, op, operand)
        if problem is not None:
            return problem if problem.startswith("cannot be") else f"{problem}, expected {describe(expected)}"
    return None


def _fails(value: object, _want: str, why: str = "") -> str:
    """What the value is (and why it cannot meet a comparison); :func:`judge` adds what was expected."""
    return f"is {shown(value)}{why}"


def _one(value: Any, op: str, operand: Any) -> str | None:
    want = ""
    if op == "exists":
        return None if operand else _fails(value, want)
    if op == "==":
        return None if equal(value, operand) else _fails(value, want)
    if op == "!=":
        return None if not equal(value, operand) else _fails(value, want)
    if op == "in":
        options = operand if isinstance(operand, (list, tuple)) else [operand]
        return None if any(equal(value, o) for o in options) else _fails(value, want)
    if op in NUMERIC or op == "between":
        if not _is_number(value):
            return _fails(value, want, f" ({type_name(value)}, not a number)")
        try:
            if op == "between":
                low, high = operand
                ok = low <= value <= high
            else:
                ok = {">=": value >= operand, "<=": value <= operand, ">": value > operand,
                      "<": value < operand}[op]
        except (TypeError, ValueError, decimal.InvalidOperation):
            return _fails(value, want, " (cannot be compared)")
        return None if ok else _fails(value, want)
    if op == "empty":
        if value is not None and not isinstance(value, (str, list, tuple, Mapping)):
            return _fails(value, want, f" ({type_name(value)}, which is neither empty nor not)")
        is_empty = value is None or len(value) == 0
        return None if is_empty == bool(operand) else _fails(value, want)
    if op == "length":
        if not isinstance(value, (str, list, tuple, Mapping)):
            return _fails(value, want, f" ({type_name(value)}, which has no length)")
        problem = judge(len(value), operand)
        return None if problem is None else f"has length {len(value)}"
    if op == "matches":
        if not isinstance(value, str):
            return _fails(value, want, f" ({type_name(value)}, not a string)")
        try:
            found = re.search(str(operand), value)
        except re.error as exc:
            return f"cannot be matched: {shown(operand)} is not a regular expression ({exc})"
        return None if found else _fails(value, want)
    if op == "version":
        return _version(value, operand, want)
    return f"cannot be compared: {op!r} is not a comparison ({', '.join(OPERATORS)})"


def _version(value: Any, operand: Any, want: str) -> str | None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return _fails(value, want, f" ({type_name(value)}, not a version)")
    try:
        version = Version(str(value))
    except InvalidVersion:
        return _fails(value, want, ", not a PEP 440 version")
    try:
        specifier = SpecifierSet(str(operand))
    except InvalidSpecifier:
        return f"cannot be compared: {shown(operand)} is not a PEP 440 specifier"
    return None if specifier.contains(version, prereleases=True) else _fails(value, want)


# -- the plan -----------------------------------------------------------------------------------

_NUMBER: dict[str, Any] = {"type": "number"}


def expectation_schema(*, numbers_only: bool = False) -> dict[str, Any]:
    """The JSON Schema of an expectation (``numbers_only``: what ``length`` takes)."""
    operators: dict[str, Any] = {
        "==": {"description": "equal to this value (an object too)"},
        "!=": {"description": "not equal to this value"},
        ">=": _NUMBER, "<=": _NUMBER, ">": _NUMBER, "<": _NUMBER,
        "between": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2,
                    "description": "[low, high], both included"},
        "in": {"type": "array", "minItems": 1, "description": "a list of values, one of which it equals"},
    }
    if numbers_only:
        return {"description": "a length: a number, or a mapping of comparisons (>=, <=, >, <, ==, !=, between, in)",
                "anyOf": [{"type": "integer", "minimum": 0},
                          {"type": "object", "minProperties": 1, "properties": operators,
                           "propertyNames": {"enum": list(operators),
                                             "description": "a comparison of a length"}}]}
    operators.update({
        "exists": {"type": "boolean", "description": "true: the field is there; false: it is not"},
        "empty": {"type": "boolean", "description": "true: an empty string, list, object or null; false: not"},
        "length": expectation_schema(numbers_only=True),
        "matches": {"type": "string", "minLength": 1, "description": "a regular expression searched in a string"},
        "version": {"type": "string", "minLength": 1, "description": "a PEP 440 specifier, e.g. >=1.0,<2"},
    })
    return {
        "description": "a value it must equal, or a mapping of comparisons: ==, !=, >=, <=, >, <, between, in, "
                       "exists, empty, length, matches, version",
        "if": {"type": "object"},
        "then": {"type": "object", "minProperties": 1, "properties": operators,
                 "propertyNames": {"enum": list(OPERATORS),
                                   "description": "a comparison (an object value is written {==: {...}})"}},
    }


def fields_schema(description: str) -> dict[str, Any]:
    """A mapping of field path to expectation (``json``)."""
    return {"type": "object", "additionalProperties": expectation_schema(), "description": description}


#: Words other tools use for the comparisons, for "did you mean" in a plan error.
SYNONYMS = {"gte": ">=", "ge": ">=", "min": ">=", "lte": "<=", "le": "<=", "max": "<=", "gt": ">", "lt": "<",
            "eq": "==", "equals": "==", "ne": "!=", "neq": "!=", "not": "!=", "range": "between",
            "one_of": "in", "oneof": "in", "enum": "in", "present": "exists", "regex": "matches", "match": "matches",
            "pattern": "matches", "len": "length", "size": "length", "count": "length", "not_empty": "empty",
            "non_empty": "empty", "nonempty": "empty", "specifier": "version", "=": "==", "=>": ">=", "=<": "<=",
            "<>": "!="}


def operator_hint(word: object) -> str:
    """`` (did you mean '>='?)`` for a word other tools use for a comparison, else ``""``."""
    known = SYNONYMS.get(str(word).strip().lower().replace("-", "_"))
    if known is None:
        return ""
    if known == "empty":
        return " (did you mean 'empty: false'?)" if "not" in str(word).lower() or "non" in str(word).lower() else ""
    return f" (did you mean {known!r}?)"


def expectation_problems(expected: object) -> list[str]:
    """What the schema cannot say about an expectation: a regular expression or a version
    specifier that does not compile, a range whose low end is above its high end."""
    if not isinstance(expected, Mapping):
        return []
    problems = []
    for op, operand in expected.items():
        if op == "matches" and isinstance(operand, str):
            try:
                re.compile(operand)
            except re.error as exc:
                problems.append(f"matches: {operand!r} is not a regular expression: {exc}")
        elif op == "version" and isinstance(operand, str):
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                SpecifierSet(operand)
            except InvalidSpecifier:
                problems.append(f"version: {operand!r} is not a PEP 440 version specifier (e.g. '>=1.0,<2')")
        elif (op == "between" and isinstance(operand, list) and len(operand) == 2
              and all(_is_number(v) for v in operand) and operand[0] > operand[1]):
            problems.append(f"between: [{operand[0]}, {operand[1]}] is empty: the low end is above the high end")
        elif op == "length":
            problems += [f"length: {p}" for p in expectation_problems(operand)]
    return problems


def fields_problems(fields: object, prefix: str) -> str | None:
    """The first problem of a ``json`` mapping's expectations, naming its field."""
    if not isinstance(fields, Mapping):
        return None
    for path, expected in fields.items():
        for problem in expectation_problems(expected):
            return f"{prefix}.{path}: {problem}"
    return None
