"""The rollback journal: one JSON line per event, appended and fsynced before the next step.

A rollback writes ``rollback_start`` (its trigger and the steps it will take, in order), then for
each step ``step_start`` and ``step_end`` (with the verdict), then ``rollback_end``. A run killed
at any point leaves a journal without ``rollback_end``; the next run finds it and resumes from
the first step that has no passing ``step_end``, so no finished step runs twice.

A step that starts a program (``command``) also writes ``step_process`` as soon as the program
has started: its process group (the program runs in a session of its own), the leader's start
time and the machine's boot id. A run killed during that step leaves the program running; the
run that resumes ends that process group (SIGTERM, then SIGKILL) before it runs the step again,
so two copies of a step never run side by side (:func:`end_process_group`).

Appends go through the evidence tree's guarded write when a tree is given: a journal that cannot
be written is recorded as incomplete evidence and never stops the rollback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import append
from ..secrets import scrub_text

if TYPE_CHECKING:
    from ..evidence import EvidenceTree

__all__ = ["Journal", "Unfinished", "end_process_group", "find_unfinished", "process_identity"]

NAME = "journal.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Journal:
    """An append-only JSON-lines file; every append reaches the disk before it returns."""

    def __init__(self, path: Path, tree: EvidenceTree | None = None) -> None:
        self.path = path
        #: The evidence tree whose guarded write records a failed append (then nothing is raised).
        self.tree = tree

    def append(self, event: str, **fields: Any) -> bool:
        """Append one event (the run's secrets masked); False when it could not be written
        (recorded in the tree)."""
        line = scrub_text(json.dumps({"event": event, "time": _now(), **fields}, sort_keys=True, default=str)) + "\n"

        def write() -> None:
            append(self.path, line.encode("utf-8"), sync=True)

        if self.tree is None:
            write()
            return True
        return self.tree.attempt(self.path, write)

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
    #: The runs that worked on it: the one that started it, then each that resumed it.
    runs: list[str] = field(default_factory=list)
    #: ``step_process`` events of steps that never completed: programs that may still run.
    processes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> list[str]:
        return list(self.start["steps"])

    def left_running(self, step: str) -> list[dict[str, Any]]:
        """The programs ``step`` started in the runs that were killed, oldest first."""
        return [p for p in self.processes if p.get("step") == step]


def find_unfinished(folder: Path) -> Unfinished | None:
    """The latest rollback under ``folder`` (``rollback/procedures``) that never ended, if any."""
    for path in sorted(folder.glob(f"*/{NAME}"), reverse=True):
        journal = Journal(path)
        events = journal.events()
        starts = [e for e in events if e["event"] == "rollback_start"]
        if not starts or any(e["event"] == "rollback_end" for e in events):
            continue
        completed = {e["step"] for e in events if e["event"] == "step_end" and e.get("verdict") == "passed"}
        runs = [path.parent.name] + [e["run_id"] for e in events
                                     if e["event"] == "rollback_resume" and e.get("run_id")]
        processes = [e for e in events if e["event"] == "step_process" and e.get("step") not in completed]
        return Unfinished(journal, path.parent.name, starts[0], completed, list(dict.fromkeys(runs)), processes)
    return None


# -- programs an interrupted step left running ----------------------------------------------------

PROC = Path("/proc")
#: How long a process group has to end after SIGTERM, and then after SIGKILL.
TERM_WAIT = 3.0
KILL_WAIT = 2.0


def _boot_id() -> str | None:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: str | int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) of a process, from /proc."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0], int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None


def process_identity(pid: int) -> dict[str, Any]:
    """What identifies a program started in a session of its own (its pid is its group's id): the
    group, the leader's start time and the boot id, so that a later run never ends a stranger that
    got the same number."""
    stat = _stat(pid)
    return {"pid": pid, "pgid": pid, "starttime": stat[2] if stat else None, "boot_id": _boot_id()}


def _members(pgid: int, starttime: int | None) -> list[int] | None:
    """The live (not zombie) processes of group ``pgid`` that are the recorded program's; ``None``
    when /proc cannot tell."""
    if not PROC.is_dir():
        return None
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None or stat[1] != pgid or stat[0] in ("Z", "X"):
            continue
        if int(entry.name) == pgid and starttime is not None and stat[2] != starttime:
            return []  # the number was reused: another program leads a group of that id now
        if starttime is not None and stat[2] < starttime:
            return []  # older than the recorded program: not its group
        members.append(int(entry.name))
    return members


def _wait_gone(pgid: int, starttime: int | None, seconds: float) -> bool:
    until = time.monotonic() + seconds
    while True:
        if not _members(pgid, starttime):
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.02)


def end_process_group(process: dict[str, Any]) -> tuple[bool, str]:
    """End the process group a killed run's step left running (SIGTERM, then SIGKILL after
    :data:`TERM_WAIT` seconds): (it is gone, one line saying what was done)."""
    pgid = int(process["pgid"])
    starttime = process.get("starttime")
    what = f"process group {pgid} ({process.get('program') or 'the program'}) of run {process.get('run_id', '?')}"
    boot = _boot_id()
    if process.get("boot_id") and boot and process["boot_id"] != boot:
        return True, f"{what}: the machine restarted since; nothing left to end"
    members = _members(pgid, starttime)
    if members is not None and not members:
        return True, f"{what} had already ended"
    for sig, wait in ((signal.SIGTERM, TERM_WAIT), (signal.SIGKILL, KILL_WAIT)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True, f"{what} had already ended"
        except PermissionError as exc:
            return False, f"{what} is still running and cannot be ended: {exc.strerror}"
        if members is None:  # no /proc: no way to watch it; the signal was sent
            time.sleep(0.1)
            if sig == signal.SIGKILL:
                return True, f"{what}: sent SIGTERM, then SIGKILL"
            continue
        if _wait_gone(pgid, starttime, wait):
            how = "SIGTERM" if sig == signal.SIGTERM else f"SIGKILL ({TERM_WAIT:g}s after SIGTERM)"
            return True, f"{what} was still running ({len(members)} process(es)): ended it with {how}"
    return False, f"{what} is still running after SIGKILL"

