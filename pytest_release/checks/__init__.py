"""The check library: every kind of check a validation gate can hold.

Built in: ``health``, ``performance``, ``security``, ``integrity``, ``consistency``, ``syntax``,
``compatibility`` and ``command``. Data-store checks read SQLite files and, with the optional
``pytest-release[postgres]`` extra (psycopg 3), PostgreSQL databases.
"""

from __future__ import annotations

from .base import TARGET_KINDS, CheckContext, CheckKind, CheckResult, NotBuilt
from .command import COMMAND
from .compatibility import COMPATIBILITY
from .consistency import CONSISTENCY
from .health import HEALTH
from .integrity import INTEGRITY
from .performance import PERFORMANCE
from .security import SECURITY
from .syntax import SYNTAX

__all__ = ["BUILTIN_KINDS", "TARGET_KINDS", "CheckContext", "CheckKind", "CheckResult", "NotBuilt"]

BUILTIN_KINDS: dict[str, CheckKind] = {
    kind.name: kind
    for kind in (HEALTH, PERFORMANCE, SECURITY, INTEGRITY, CONSISTENCY, SYNTAX, COMPATIBILITY, COMMAND)
}
