"""The limits every check honours, in one place: how long one request may take, how much of a
body or of a program's output is read, and how much of a long list of problems is shown.

* ``request_timeout``: one HTTP request (connect, headers and body together) or TCP connect
  takes at most this long, and never longer than the gate's budget left. A check's
  ``request_timeout`` parameter wins over its target's, which wins over :data:`REQUEST_TIMEOUT`.
* ``max_body``: a check that reads a body reads at most this many bytes; a larger body fails the
  request ("body larger than N bytes"). The check's ``max_body`` parameter, else :data:`MAX_BODY`.
* ``max_output``: a program run by a ``command`` check or rollback step keeps at most this many
  bytes of its stdout and as many of its stderr (its first and last halves); the rest is read
  and dropped, so a program that writes without end cannot grow memory.
* :data:`SHOWN_LINES` problem lines of a failed check are shown in the terminal; the record keeps
  them all. A check's one-line summary is cut to :data:`SUMMARY_CHARS` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..units import DURATION_SCHEMA, format_duration, parse_duration

if TYPE_CHECKING:
    from .base import CheckContext

__all__ = ["MAX_BODY", "MAX_OUTPUT", "REQUEST_TIMEOUT", "SHOWN_LINES", "SUMMARY_CHARS", "HttpLimits",
           "MAX_BODY_PARAM", "MAX_OUTPUT_PARAM", "REQUEST_TIMEOUT_PARAM", "max_output"]

REQUEST_TIMEOUT = 10.0
MAX_BODY = 1024 * 1024
MAX_OUTPUT = 1024 * 1024
SHOWN_LINES = 10
SUMMARY_CHARS = 300
_MOST = 1024 ** 3  # no plan may raise a byte limit past 1 GiB

REQUEST_TIMEOUT_PARAM: dict[str, Any] = {
    **DURATION_SCHEMA, "description": "the longest one request may take, connect, headers and body together "
                                      f"(a duration; default: the target's, else {format_duration(REQUEST_TIMEOUT)})"}
MAX_BODY_PARAM: dict[str, Any] = {
    "type": "integer", "minimum": 1, "maximum": _MOST,
    "description": f"the most bytes of a body read; a larger body fails the request (default {MAX_BODY})"}
MAX_OUTPUT_PARAM: dict[str, Any] = {
    "type": "integer", "minimum": 1, "maximum": _MOST,
    "description": f"the most bytes kept of the program's stdout, and of its stderr (default {MAX_OUTPUT})"}


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP request of a check may take: ``request_timeout`` seconds, ``max_body`` bytes."""

    request_timeout: float = REQUEST_TIMEOUT
    max_body: int = MAX_BODY
    #: Where ``request_timeout`` comes from, for messages ("request_timeout 2s of the check").
    source: str = "default"

    @classmethod
    def of(cls, ctx: CheckContext) -> HttpLimits:
        params: Mapping[str, Any] = ctx.params
        spec: Mapping[str, Any] = ctx.target.spec if ctx.target is not None else {}
        if "request_timeout" in params:
            timeout, source = parse_duration(params["request_timeout"]), "the check's"
        elif "request_timeout" in spec:
            timeout, source = parse_duration(spec["request_timeout"]), "the target's"
        else:
            timeout, source = REQUEST_TIMEOUT, "the default"
        return cls(max(timeout, 0.001), int(params.get("max_body", MAX_BODY)), source)

    def timeout_text(self) -> str:
        return f"{self.source} request_timeout {format_duration(self.request_timeout)}"


def max_output(params: Mapping[str, Any]) -> int:
    return int(params.get("max_output", MAX_OUTPUT))
