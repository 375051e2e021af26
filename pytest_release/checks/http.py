"""One bounded HTTP request of a check: :func:`get` with the check's budget, limits and TLS settings.

The transport itself (the pool, the total-deadline watchdog, the bounded body reader) is
:mod:`pytest_release.http`; this module adds what a check brings to a request. A request gets
``min(request_timeout, budget left)`` seconds for everything: connecting, sending, the status
line and headers, and the body, which is read up to ``max_body`` bytes (see :mod:`.limits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..http import Answer, fetch
from .limits import HttpLimits

if TYPE_CHECKING:
    from .base import CheckContext

__all__ = ["get", "target_ca"]


def target_ca(ctx: CheckContext) -> str | None:
    """The CA file that the check's target names (``ca``, relative to the plan), else ``None``."""
    ca = ctx.target.spec.get("ca") if ctx.target is not None else None
    return str(ctx.path(ca)) if ca else None


def get(ctx: CheckContext, url: str, *, limits: HttpLimits | None = None, read_body: bool = True,
        keep_body: bool = True) -> Answer:
    """GET ``url`` for a check: within ``min(request_timeout, ctx.remaining())`` for the whole
    answer, with the check's (else its target's, else the default) limits and TLS settings."""
    limits = limits or HttpLimits.of(ctx)
    spec = ctx.target.spec if ctx.target is not None else {}
    remaining = ctx.remaining()
    if remaining <= 0:
        return Answer(url, error=f"not tried: {ctx.budget_text()} was used up", kind="budget", by_budget=True)
    by_budget = remaining <= limits.request_timeout
    return fetch(url, timeout=min(limits.request_timeout, remaining), max_body=limits.max_body,
                 verify=spec.get("verify_tls", True), ca=target_ca(ctx),
                 read_body=read_body, keep_body=keep_body, by_budget=by_budget,
                 why_late=f"{ctx.budget_text()} ran out" if by_budget else limits.timeout_text())
