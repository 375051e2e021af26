"""Units of the plan format: durations and thresholds (and byte counts, shown to people).

A duration is a bare number of seconds (``300``, ``0.5``) or a number with a unit suffix:
``ms``, ``s``, ``m``, ``h``, ``d`` (``250ms``, ``30s``, ``5m``, ``90d``), at most
``MAX_DURATION`` (366 days: the longest retention a plan may keep; a budget beyond it is a typo,
and one of ``.inf`` would overflow a timer). Thresholds are fractions from 0 to 1 and need no
parsing.

``DURATION_SCHEMA`` says all of it: ``minimum``/``maximum`` for numbers, a ``pattern`` for
strings, and ``format: FORMAT`` that :data:`FORMAT_CHECKER` checks with :func:`parse_duration`
(NaN, and a string within the pattern but beyond the maximum). A value the schema accepts parses.
"""

from __future__ import annotations

import math
import re

import jsonschema

__all__ = ["DURATION_FORMAT", "DURATION_PATTERN", "DURATION_SCHEMA", "ENV_SCHEMA", "FORMAT_CHECKER", "MAX_DURATION",
           "THRESHOLD_SCHEMA", "format_bytes", "format_duration", "parse_duration"]

#: The longest duration a plan may give, in seconds: 366 days.
MAX_DURATION = 366 * 86400.0
DURATION_FORMAT = "pytest-release-duration"

_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*$"
_DURATION_RE = re.compile(DURATION_PATTERN)

#: JSON Schema of a duration and of a threshold, for the plan's schema and check parameters.
DURATION_SCHEMA = {
    "type": ["number", "string"],
    "minimum": 0,
    "maximum": MAX_DURATION,
    "pattern": DURATION_PATTERN,
    "format": DURATION_FORMAT,
    "description": "a duration: seconds, or a number with a unit ms, s, m, h, d (250ms, 30s, 5m, 90d), "
                   "at most 366d",
}
#: JSON Schema of ``env`` (variables added to a program's environment): a name can be passed to
#: a program only when it is not empty and holds no ``=`` (NUL is refused in any plan string).
ENV_SCHEMA = {
    "type": "object",
    "propertyNames": {"pattern": "^[^=]+$", "description": "an environment variable name (not empty, no '=')"},
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "description": "environment variables added for the program: NAME: value",
}
THRESHOLD_SCHEMA = {
    "type": "number",
    "minimum": 0,
    "maximum": 1,
    "description": "a fraction from 0 to 1",
}


def parse_duration(value: object) -> float:
    """Seconds in ``value``; ``ValueError`` with a plain message when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    seconds = None
    if isinstance(value, (int, float)):
        seconds = float(value) if not isinstance(value, int) or abs(value) <= 10 * MAX_DURATION else math.inf
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(value.strip().rstrip("mshd").strip()) * _FACTORS[match.group(2) or "s"]
    if seconds is not None:
        if math.isnan(seconds):
            raise ValueError(f"{value!r} is not a number; a duration is a number of seconds")
        if seconds < 0:
            raise ValueError(f"{value!r} is negative; a duration is at least 0")
        if seconds > MAX_DURATION:
            raise ValueError(f"{value!r} is longer than the longest duration a plan may give, "
                             f"{format_duration(MAX_DURATION)}")
        return seconds
    raise ValueError(
        f"{value!r} is not a duration: write a number of seconds or a number with a unit "
        "(ms, s, m, h, d), e.g. 250ms, 30s, 5m, 90d"
    )


def _is_duration(value: object) -> bool:
    """The format check behind ``DURATION_SCHEMA``: what its other keywords cannot say (NaN; a
    string within the pattern beyond the maximum). Other values are left to those keywords."""
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{value!r} is not a number; a duration is a number of seconds")
    if isinstance(value, str) and _DURATION_RE.match(value):
        parse_duration(value)
    return True


#: The format checker plans are validated with: JSON Schema's own formats (``regex``) and durations.
FORMAT_CHECKER = jsonschema.FormatChecker()
FORMAT_CHECKER.checks(DURATION_FORMAT, raises=ValueError)(_is_duration)


def format_duration(seconds: float) -> str:
    """A short human form: ``250ms``, ``5s``, ``2.5s``, ``5m``, ``90d``."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds / factor:g}{unit}"
    return f"{seconds:g}s"


def format_bytes(count: int) -> str:
    """``1048576 bytes (1 MiB)``: exact, then readable."""
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if count >= size:
            return f"{count} bytes ({count / size:.3g} {unit})"
    return f"{count} bytes"
