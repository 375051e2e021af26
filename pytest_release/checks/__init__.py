"""The check library: every kind of check a validation gate can hold.

Built in: ``health``, ``syntax``, ``integrity`` and ``command`` run for real. ``performance``,
``security``, ``consistency`` and ``compatibility`` are known to the plan format (the source
document names them) but are not run by this version: their items are skipped and listed as
not checked, so no gate passes on their account.
"""

from __future__ import annotations

from .base import TARGET_KINDS, CheckContext, CheckKind, CheckResult, NotBuilt
from .command import COMMAND
from .health import HEALTH
from .integrity import INTEGRITY
from .syntax import SYNTAX

__all__ = ["BUILTIN_KINDS", "TARGET_KINDS", "CheckContext", "CheckKind", "CheckResult", "NotBuilt"]

_ANY_PARAMS = {"type": "object"}


def _planned(name: str, judges: set[str], what: str) -> CheckKind:
    return CheckKind(name=name, judges=frozenset(judges), params=_ANY_PARAMS, run=None,
                     description=f"{what} (planned: not run by this version)")


BUILTIN_KINDS: dict[str, CheckKind] = {
    kind.name: kind
    for kind in (
        HEALTH,
        SYNTAX,
        INTEGRITY,
        COMMAND,
        _planned("performance", {"service"}, "latency percentiles, error rate and throughput of a service"),
        _planned("security", {"service", "config", "datastore"}, "TLS, headers, exposed paths, plaintext secrets"),
        _planned("consistency", {"datastore"}, "SQL assertions and parity between data stores"),
        _planned("compatibility", {"config", "service"}, "config and version compatibility with the last release"),
    )
}
