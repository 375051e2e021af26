"""Units of the plan format: durations and thresholds.

A duration is a bare number of seconds (``300``, ``0.5``) or a number with a unit suffix:
``ms``, ``s``, ``m``, ``h``, ``d`` (``250ms``, ``30s``, ``5m``, ``90d``). Thresholds are fractions
from 0 to 1 and need no parsing.
"""

from __future__ import annotations

import re

__all__ = ["DURATION_PATTERN", "DURATION_SCHEMA", "THRESHOLD_SCHEMA", "format_duration", "parse_duration"]

_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*$"
_DURATION_RE = re.compile(DURATION_PATTERN)

#: JSON Schema of a duration and of a threshold, for the plan's schema and check parameters.
DURATION_SCHEMA = {
    "type": ["number", "string"],
    "minimum": 0,
    "pattern": DURATION_PATTERN,
    "description": "a duration: seconds, or a number with a unit ms, s, m, h, d (250ms, 30s, 5m, 90d)",
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
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is at least 0")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            number = float(value.strip().rstrip("mshd").strip())
            return number * _FACTORS[match.group(2) or "s"]
    raise ValueError(
        f"{value!r} is not a duration: write a number of seconds or a number with a unit "
        "(ms, s, m, h, d), e.g. 250ms, 30s, 5m, 90d"
    )


def format_duration(seconds: float) -> str:
    """A short human form: ``250ms``, ``5s``, ``2.5s``, ``5m``, ``90d``."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds / factor:g}{unit}"
    return f"{seconds:g}s"
