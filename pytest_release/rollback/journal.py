"""The rollback journal: one JSON line per event, appended and fsynced before the next step.

A rollback writes ``rollback_start`` (its trigger and the steps it will take, in order), then for
each step ``step_start`` and ``step_end`` (with the verdict), then ``rollback_end``. A run killed
at any point leaves a journal without ``rollback_end``; the next run finds it and resumes from
the first step that has no passing ``step_end``, so no finished step runs twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..secrets import scrub_text

__all__ = ["Journal", "Unfinished", "find_unfinished"]

NAME = "journal.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Journal:
    """An append-only JSON-lines file; every append reaches the disk before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: str, **fields: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = scrub_text(json.dumps({"event": event, "time": _now(), **fields}, sort_keys=True, default=str)) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        """Every complete event; a line torn by a crash in the middle of a write is left out."""
        try:
            text = self.path.read_text("utf-8")
        except OSError:
            return []
        events = []
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


@dataclass
class Unfinished:
    """A rollback that started and did not end: where its journal is and what it had done."""

    journal: Journal
    run_id: str
    start: dict[str, Any]
    completed: set[str]

    @property
    def steps(self) -> list[str]:
        return list(self.start["steps"])


def find_unfinished(folder: Path) -> Unfinished | None:
    """The latest rollback under ``folder`` (``rollback/procedures``) that never ended, if any."""
    for path in sorted(folder.glob(f"*/{NAME}"), reverse=True):
        journal = Journal(path)
        events = journal.events()
        starts = [e for e in events if e["event"] == "rollback_start"]
        if not starts or any(e["event"] == "rollback_end" for e in events):
            continue
        completed = {e["step"] for e in events if e["event"] == "step_end" and e.get("verdict") == "passed"}
        return Unfinished(journal, path.parent.name, starts[0], completed)
    return None

