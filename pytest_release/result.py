"""The typed result channel: what one check item came to, carried by its test reports.

Every report of a check item (setup, call, teardown; also those the controller makes for a check
whose verdict never arrived) carries one structured attribute, ``report.release_result``: a plain
dict (so pytest-xdist can send it from a worker to the controller, like any report attribute) of
the schema below. The plugin reads results only from it (:func:`result_of`); the two flat
``user_properties`` the reports also carry (``release_verdict`` and ``release``, a JSON object:
see :func:`pytest_release.items.check_properties`) are for JUnit XML and other
readers, and are never parsed back. The dicts under ``params``, ``measured`` and ``expected`` are
shared between the reports of one check (and ``params`` between the checks of one plan entry):
read them, do not change them.

Schema of ``report.release_result``: the first seven keys are always present; the others only
when they differ from their default (given in brackets), which keeps the dict small: pytest keeps
every report to the end of the run, thousands of them::

    stage      str          the stage the check ran in
    gate       str          its validation gate
    check      str          its check kind ("health", "command", ...)
    target     str | None   the target it judged (None for a check without one)
    required   bool         whether the gate is required
    params     dict         the check's parameters (secrets masked)
    verdict    str          a Verdict value: passed, failed, warning, skipped
    summary    str          one line: what was measured against which threshold [""]
    measured   dict         what the check measured (secrets masked) [{}]
    expected   dict         what it was held against (secrets masked) [{}]
    blocked    dict         {"cause": a Cause value, "reason": str} when the schedule did not run it [None]
    not_checked str         why the check was not run by this version [""]
    ran        [float, float]  when the check itself started and ended (time.time()), if it ran
                            before its item took the result (fan-out) [None]
    lost       str          why no verdict arrived (a crashed xdist worker) [""]

This module imports nothing of pytest: the schedule, the recorder and the summary share it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ATTRIBUTE", "Blocked", "Cause", "ItemResult", "Verdict", "json_safe", "result_of", "verdict_of"]

#: The name of the report attribute that carries an :class:`ItemResult` as a dict.
ATTRIBUTE = "release_result"


class Verdict(str, enum.Enum):
    """A check's verdict. ``warning`` is a failed check of a gate with ``required: false``: shown
    everywhere (status letter ``W``, word ``WARNED``), never in the exit code."""

    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


class Cause(str, enum.Enum):
    """Why the schedule did not run a check."""

    #: The run is a rollback (``--release-rollback``, or resuming an interrupted one): no check runs.
    NOT_ASKED = "not_asked"
    #: A required gate of an earlier stage failed.
    EARLIER_FAILED = "earlier_failed"
    #: Checks of earlier stages never finished (under xdist: their worker did not report in time).
    EARLIER_UNFINISHED = "earlier_unfinished"
    #: The timeout of the workflow this run performs was used up.
    OUT_OF_TIME = "out_of_time"
    #: A required gate of the stage failed, so its monitoring window was not opened (the rollback is due).
    WINDOW_NOT_OPENED = "window_not_opened"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Blocked:
    """A check the schedule does not run, and why (``reason`` is one line for people)."""

    cause: Cause
    reason: str

    @property
    def blocks_stage(self) -> bool:
        """Whether this says the whole stage was skipped (an earlier stage failed or never finished)."""
        return self.cause in (Cause.EARLIER_FAILED, Cause.EARLIER_UNFINISHED)

    def as_dict(self) -> dict[str, str]:
        return {"cause": self.cause.value, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Blocked | None:
        if not data:
            return None
        return cls(Cause(data["cause"]), str(data["reason"]))


@dataclass(slots=True)
class ItemResult:
    """One check item's result (see the module's schema); one per check item, hence slots."""

    stage: str
    gate: str
    check: str
    target: str | None
    required: bool
    params: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict = Verdict.PASSED
    summary: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    blocked: Blocked | None = None
    not_checked: str = ""
    ran: tuple[float, float] | None = None
    lost: str = ""

    @property
    def gate_id(self) -> str:
        return f"{self.stage}::{self.gate}"

    def warning_line(self, fallback: str = "") -> str:
        """One line for a warning: which gate (not required), and what failed."""
        return f"warning (gate {self.gate_id} is not required): {self.summary or fallback}"

    def as_dict(self) -> dict[str, Any]:
        """The dict a report carries. ``params``, ``measured`` and ``expected`` are this result's
        own dicts, not copies (a report is made per phase of every check: copying them would cost
        time and memory for nothing); readers treat them as read-only."""
        pairs: list[tuple[str, Any]] = [
            ("stage", self.stage), ("gate", self.gate), ("check", self.check), ("target", self.target),
            ("required", self.required), ("params", self.params), ("verdict", self.verdict.value)]
        if self.summary:
            pairs.append(("summary", self.summary))
        if self.measured:
            pairs.append(("measured", self.measured))
        if self.expected:
            pairs.append(("expected", self.expected))
        if self.blocked:
            pairs.append(("blocked", self.blocked.as_dict()))
        if self.not_checked:
            pairs.append(("not_checked", self.not_checked))
        if self.ran:
            pairs.append(("ran", list(self.ran)))
        if self.lost:
            pairs.append(("lost", self.lost))
        return dict(pairs)  # made at its size (a dict grown key by key is resized on the way)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemResult:
        ran = data.get("ran")
        return cls(stage=str(data["stage"]), gate=str(data["gate"]), check=str(data["check"]),
                   target=data.get("target"), required=bool(data["required"]),
                   params=_shared(data.get("params")), verdict=Verdict(data.get("verdict", "passed")),
                   summary=str(data.get("summary") or ""), measured=_shared(data.get("measured")),
                   expected=_shared(data.get("expected")), blocked=Blocked.from_dict(data.get("blocked")),
                   not_checked=str(data.get("not_checked") or ""),
                   ran=(float(ran[0]), float(ran[1])) if ran else None, lost=str(data.get("lost") or ""))


def _shared(value: Any) -> dict[str, Any]:
    """A report's dict as is (read-only, like the report's), any other mapping as a dict."""
    if type(value) is dict:
        return value
    return dict(value) if value else {}


def result_of(report: object) -> ItemResult | None:
    """The result a report carries (``None``: not a report of a release check)."""
    data = getattr(report, ATTRIBUTE, None)
    if not isinstance(data, Mapping):
        return None
    return ItemResult.from_dict(data)


def verdict_of(report: object) -> Verdict | None:
    """The verdict a report carries, without reading the rest (``None``: not a release check's)."""
    data = getattr(report, ATTRIBUTE, None)
    if not isinstance(data, Mapping):
        return None
    return Verdict(data.get("verdict", "passed"))


def json_safe(value: Any) -> Any:
    """``value`` as a JSON round trip gives it back (``json.loads(json.dumps(value, default=str))``:
    what a report may carry across processes and a record may hold), without the round trip for
    the plain values checks measure (dicts with string keys, lists, strings, numbers, booleans,
    ``None``), which are most of them."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict and all(type(key) is str for key in value):
        return {key: json_safe(item) for key, item in value.items()}
    if kind is list:
        return [json_safe(item) for item in value]
    return json.loads(json.dumps(value, default=str))
