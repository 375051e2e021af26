"""What one run knows across processes: gate budgets, verdicts, and the order of stages.

Stages run in order and a failed required gate stops later stages. Under pytest-xdist the
checks of one stage run on several workers at once, so each finished check leaves a small
record file in a directory the controller creates and hands to every worker; a check of a
later stage first waits until every selected check of the earlier stages has a record, then
reads whether a required gate failed. Without xdist, the same records are written and read,
and nothing has to wait: items run in plan order.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from .fsutil import atomic_write, write_new

__all__ = ["Record", "RunState"]

POLL = 0.05
SLACK = 60.0


@dataclass(frozen=True)
class Record:
    """A finished check: where it ran and its verdict (passed, failed, warning, skipped)."""

    nodeid: str
    stage: str
    gate: str
    verdict: str
    summary: str


class RunState:
    """Gate clocks of this process and the record directory shared with the other processes."""

    def __init__(self, directory: Path, *, wait_for_others: bool) -> None:
        self.directory = directory
        self.wait_for_others = wait_for_others
        self._records: dict[str, Record] = {}
        self._gate_started: dict[tuple[str, str], float] = {}
        self._stage_verdicts: dict[str, tuple[Record | None, list[str]]] = {}
        self._claims: dict[str, bool] = {}

    # -- budgets --------------------------------------------------------------------------------

    def deadline(self, stage: str, gate: str, budget: float) -> float:
        """The monotonic time the gate's budget ends; its clock starts with its first check here."""
        started = self._gate_started.setdefault((stage, gate), time.monotonic())
        return started + budget

    # -- records --------------------------------------------------------------------------------

    def _file(self, nodeid: str) -> Path:
        return self.directory / (hashlib.sha1(nodeid.encode()).hexdigest() + ".json")

    def record(self, record: Record) -> None:
        """Keep ``record``; with other processes (xdist) also write it for them, atomically, so a
        reader never sees half of it."""
        self._records[record.nodeid] = record
        if self.wait_for_others:
            self._write(record)

    def share(self, record: Record) -> None:
        """Keep ``record`` and hand it to every process at once, also from the controller: a
        verdict the controller decides (a check whose worker crashed) that workers waiting for
        the earlier stages must see now rather than at the end of their wait."""
        self._records[record.nodeid] = record
        self._write(record)

    def _write(self, record: Record) -> None:
        atomic_write(self._file(record.nodeid), json.dumps(record.__dict__).encode("utf-8"))

    def _read(self, nodeid: str) -> Record | None:
        if nodeid not in self._records:
            try:
                data = json.loads(self._file(nodeid).read_text("utf-8"))
            except (OSError, ValueError):
                return None
            self._records[nodeid] = Record(**data)
        return self._records[nodeid]

    # -- work done once per run (a monitoring window) ------------------------------------------------

    def claim(self, key: str) -> bool:
        """True for the one process that first claims ``key`` (the others get False)."""
        if key in self._claims:
            return self._claims[key]
        if not self.wait_for_others:
            self._claims[key] = True
            return True
        try:
            write_new(self._file(f"claim:{key}"), b"")
            self._claims[key] = True
        except FileExistsError:
            self._claims[key] = False
        return self._claims[key]

    def publish(self, key: str, data: dict[str, Any]) -> None:
        """Hand ``data`` to the processes that wait for ``key`` (nothing to do without xdist)."""
        if self.wait_for_others:
            atomic_write(self._file(f"result:{key}"), json.dumps(data, default=str).encode("utf-8"))

    def wait_published(self, key: str, deadline: float) -> dict[str, Any] | None:
        """What another process published for ``key``, waiting until ``deadline`` (monotonic)."""
        path = self._file(f"result:{key}")
        while True:
            try:
                return json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                if time.monotonic() >= deadline:
                    return None
            time.sleep(POLL)

    def failed_in(self, stage: str, but: str) -> Record | None:
        """A required check of ``stage``, outside gate ``but``, that failed in this process (so far)."""
        return next((r for r in self._records.values()
                     if r.stage == stage and r.gate != but and r.verdict == "failed"), None)

    def earlier_failure(self, stage: str, earlier: Sequence[str],
                        max_wait: float) -> tuple[Record | None, list[str]]:
        """The first failed required check among ``earlier`` (the checks of the stages before
        ``stage``), and those of them that never finished; worked out once per stage.

        Under xdist this waits (up to ``max_wait`` seconds) for the other workers to finish them,
        and no longer than until one of them has failed (then the stage is skipped anyway; the
        controller writes a failed record for a check whose worker crashed as soon as it knows).
        """
        if stage not in self._stage_verdicts:
            self._stage_verdicts[stage] = self._earlier_failure(earlier, max_wait)
        return self._stage_verdicts[stage]

    def _earlier_failure(self, earlier: Sequence[str], max_wait: float) -> tuple[Record | None, list[str]]:
        pending = list(earlier)
        give_up = time.monotonic() + (max_wait + SLACK if self.wait_for_others else 0)
        while True:
            pending = [n for n in pending if self._read(n) is None]
            if not pending or time.monotonic() >= give_up:
                break
            if any(r.verdict == "failed" for n in earlier if (r := self._records.get(n)) is not None):
                break  # a required gate failed (or lost its verdict): this stage is skipped, whatever else comes
            time.sleep(POLL)
        for nodeid in earlier:
            record = self._records.get(nodeid)
            if record is not None and record.verdict == "failed":
                return record, pending
        return None, pending
