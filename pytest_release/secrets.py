"""Secrets from ``${env:NAME}`` never reach any output: every text we emit passes through here."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MASK", "redact", "redact_value"]

MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first, so none leaks in part)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_value(value: object, secrets: Iterable[str]) -> object:
    """A plain JSON-like value with every string redacted (``value`` itself when there are no
    secrets: most plans have none, and this runs for every record)."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, secrets) for v in value]
    return value
