"""What a check is: a kind with a parameter schema, run against one target within a budget."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import TARGET_KINDS, Target
from ..units import format_duration

__all__ = ["CheckContext", "CheckKind", "CheckResult", "NotBuilt", "TARGET_KINDS"]


class NotBuilt(Exception):
    """Raised by a check for something this version of pytest-release does not check yet.

    The item is skipped with this message, and the run's summary lists it as not checked:
    a required gate never passes silently because of it.
    """


@dataclass
class CheckResult:
    """A check's verdict: what was measured, against what was expected.

    ``measured`` and ``expected`` are flat mappings of plain values (they become JUnit
    properties and evidence); ``summary`` is the one line a person reads first, and
    ``details`` the lines under it (each failing file, each mismatching hash, ...). The terminal
    shows ``excerpt`` when it is set (a program's last lines of output), else the first
    :data:`.limits.SHOWN_LINES` of ``details``; the record keeps every detail.
    """

    passed: bool
    summary: str
    measured: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    excerpt: list[str] | None = None


@dataclass
class CheckContext:
    """Everything a check needs: its target, its parameters and the time it has left.

    ``deadline`` is a ``time.monotonic()`` value: the gate's budget ends then. Checks set their
    own socket and subprocess timeouts from :meth:`remaining`.
    """

    kind: str
    params: Mapping[str, Any]
    target: Target | None
    base_dir: Path
    gate: str
    budget: float
    deadline: float
    #: Every target of the plan by name, for checks whose parameters name another target
    #: (``consistency``'s ``parity``); see :attr:`CheckKind.target_refs`.
    targets: Mapping[str, Target] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def budget_text(self) -> str:
        return f"the {format_duration(self.budget)} budget of gate {self.gate}"

    def path(self, value: str) -> Path:
        """A path from the plan, relative to the plan's directory."""
        return (self.base_dir / value).resolve()


@dataclass(frozen=True)
class CheckKind:
    """A kind of check.

    ``judges`` names the target kinds it can judge (``service``, ``datastore``, ``config``,
    ``artifacts``); an empty set means the check needs no target (``command``). ``params``
    is the JSON Schema of its parameter mapping. ``run`` is ``None`` for a kind that the plan
    format knows but this version does not run yet: its items are skipped and say so.
    """

    name: str
    judges: frozenset[str]
    params: Mapping[str, Any]
    run: Callable[[CheckContext], CheckResult] | None
    description: str = ""
    judges_target: Callable[[Target], bool] | None = None
    #: Given the check's parameters and a target's spec, what is wrong with using them together
    #: (``None`` when nothing is); reported when the plan loads.
    param_problem: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None] | None = None
    #: Parameters whose value names another target of the plan, one this kind can judge (the
    #: plan loader checks that it exists and fits; the check finds it in ``ctx.targets``).
    target_refs: tuple[str, ...] = ()
    #: For a kind that judges no target: what its item is named after, from its parameters
    #: (``command[migrate]``: the command's name, else its program). The plan loader asks it once
    #: per check; without it, a named check is labelled ``kind-name`` and its item ``kind-name``.
    label: Callable[[Mapping[str, Any]], str] | None = None

    def can_judge(self, target: Target) -> bool:
        if target.kind not in self.judges:
            return False
        return self.judges_target(target) if self.judges_target else True
