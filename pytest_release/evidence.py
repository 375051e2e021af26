"""The evidence tree: where evidence is written, sealed with a manifest, and verified.

The layout is the source document's "Evidence Collection" list. Every leaf folder holds one
sub-folder per run, so a later run adds to the tree and never touches an earlier run's files::

    EVIDENCE/
      LATEST                                   the id of the latest sealed run
      analytics/history.sqlite                 the history store (analytics), updated by every run
      runs/RUN_ID/manifest.json                SHA-256 of every file the run wrote, run metadata,
                                               and the hash of the previous run's manifest
      runs/RUN_ID/summary.json, junit.xml, report.html
      strategy/RUN_ID/stages.json              the stages in order, with their verdicts
      config/RUN_ID/plan.yaml, effective.json  the plan as written and as used
      gates/RUN_ID/STAGE.GATE.json             strategy gates (validation_gate, ...) per stage
      validation/gates/RUN_ID/STAGE/GATE.json  validation gates, and per check:
      validation/gates/RUN_ID/STAGE/GATE/CHECK.json
      validation/{metrics,config}/RUN_ID/...
      rollback/{procedures,triggers,config}/RUN_ID/...
      monitoring/{metrics,alerts,config}/RUN_ID/...
      analytics/{metrics,analysis,config}/RUN_ID/...
      automation/{tasks,workflows,config}/RUN_ID/...

Files are written atomically (a temporary file, then a link or rename) and never overwritten.
Every write goes through :meth:`EvidenceTree.attempt`: a file that cannot be written (disk full,
read-only, a file where a folder should be) is recorded in ``EvidenceTree.unwritten`` instead of
raising, because the run's rollback and verdict matter more than its records.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets as _random
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["FOLDERS", "EvidenceTree", "VerifyResult", "describe_os_error", "new_run_id", "sha256_path", "utc_iso",
           "verify_tree"]

FOLDERS = (
    "strategy", "config", "gates",
    "rollback/procedures", "rollback/triggers", "rollback/config",
    "validation/gates", "validation/metrics", "validation/config",
    "monitoring/metrics", "monitoring/alerts", "monitoring/config",
    "analytics/metrics", "analytics/analysis", "analytics/config",
    "automation/tasks", "automation/workflows", "automation/config",
)
RUNS = "runs"
LATEST = "LATEST"
#: The default history store (see analytics): a database every run updates and prunes, so no
#: manifest can list it; what each run added to it is sealed in that run's analytics records.
HISTORY = "analytics/history.sqlite"
MANIFEST = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\[\]#@=+-]")


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: ``20261126T200312Z-3f9a1c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{_random.token_hex(3)}"


def utc_iso(timestamp: float) -> str:
    """An epoch timestamp as UTC ISO-8601 with milliseconds."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def safe_name(name: str) -> str:
    """A file name from a node name: ``health[api]`` stays, ``/`` and spaces do not."""
    return _UNSAFE.sub("_", name) or "_"


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(64 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_os_error(exc: OSError, root: Path | None = None) -> str:
    """An ``OSError`` from writing a file, for people: what is in the way, or the system's words
    (a file name inside ``root`` is shown relative to it)."""
    name = str(exc.filename) if exc.filename is not None else ""
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and name:
        for candidate in (Path(name), *Path(name).parents):  # the file that stands where a folder should
            if candidate.exists() and not candidate.is_dir():
                name = str(candidate)
                break
    if root is not None and name.startswith(str(root) + os.sep):
        name = name[len(str(root)) + 1:]
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return f"{name} is a file where a folder should be" if name else "a file is where a folder should be"
    if exc.errno == errno.ENOSPC:
        return f"{name + ': ' if name else ''}no space left on the device"
    if exc.errno == errno.EROFS:
        return f"{name + ': ' if name else ''}the file system is read-only"
    return f"{name + ': ' if name else ''}{exc.strerror or exc}"


def _atomic_write(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write via a temporary file and a rename: a reader sees no file or the whole file.
    ``sync`` also forces it to disk (the manifest and LATEST; ``seal`` syncs the records first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, atomically and race-free: the data goes to a
    temporary file, which is then hard-linked to its name (``link`` fails if the name exists, so
    nothing is ever replaced, and a reader sees no file or the whole file)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: check, then rename
            if path.exists():
                raise FileExistsError(path) from None
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@dataclass
class EvidenceTree:
    """One run's view of the evidence directory: it adds files and remembers their hashes."""

    root: Path
    run_id: str
    written: dict[str, str] = field(default_factory=dict)
    #: Runs that never sealed whose files this run took into its manifest (a resumed rollback).
    adopted: dict[str, list[str]] = field(default_factory=dict)
    #: Evidence that could not be written: its path (relative to the root where it is inside the
    #: tree) and why. A run with any is EVIDENCE INCOMPLETE.
    unwritten: dict[str, str] = field(default_factory=dict)
    _folders: set[Path] = field(default_factory=set, repr=False)  # folders known to exist

    def create(self) -> None:
        """Make the tree's folders (an empty folder shows where evidence of a kind would go)."""
        self.attempt(self.run_dir, self._create)

    def _create(self) -> None:
        for folder in FOLDERS + (RUNS,):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def preflight(self) -> str | None:
        """Why evidence cannot be written here (``None``: it can): the tree's folders are made and
        a probe file is written to and removed from the run's folder. Run before any check."""
        probe = self.run_dir / f".probe.{os.getpid()}.tmp"
        try:
            self._create()
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            return describe_os_error(exc)
        return None

    def attempt(self, path: Path, write: Callable[[], object]) -> bool:
        """The one guarded path of every evidence write: ``write()``, and True; or, when it raises
        an ``OSError`` (other than writing a file twice, a bug), the failure recorded against
        ``path`` in :attr:`unwritten`, and False."""
        try:
            write()
        except FileExistsError as exc:
            if exc.filename is None:  # write_bytes: "evidence is never overwritten"
                raise
            self.record_failure(path, exc)
            return False
        except OSError as exc:
            self.record_failure(path, exc)
            return False
        return True

    def record_failure(self, path: Path, exc: OSError) -> None:
        """Note that ``path`` could not be written, and why (the first reason is kept)."""
        try:
            rel = self.relative(path)
        except ValueError:
            rel = str(path)
        why = describe_os_error(exc, self.root)
        named, sep, rest = why.partition(": ")
        if sep and (rel == named or rel.startswith(named + "/")):  # this file or its folder: say it once
            why = rest
        self.unwritten.setdefault(rel, why)

    @property
    def run_dir(self) -> Path:
        return self.root / RUNS / self.run_id

    def path(self, folder: str, *parts: str) -> Path:
        """Where a file of this run goes: ``FOLDER/RUN_ID/PARTS``."""
        return self.root.joinpath(folder, self.run_id, *(safe_name(p) for p in parts))

    def relative(self, path: Path) -> str:
        text, root = str(path), str(self.root) + os.sep
        if text.startswith(root):  # the common case, without pathlib's slower relative_to
            return text[len(root):].replace(os.sep, "/")
        return path.relative_to(self.root).as_posix()

    def write_bytes(self, path: Path, data: bytes) -> Path | None:
        """Write a new evidence file atomically; an existing file is never replaced. ``None`` when
        it could not be written (recorded in :attr:`unwritten`)."""
        rel = self.relative(path)
        problem = f"evidence file {rel} exists already; evidence is never overwritten"
        if rel in self.written:
            raise FileExistsError(problem)

        def write() -> None:
            if path.parent not in self._folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            try:
                _write_new(path, data)
            except FileExistsError:
                raise FileExistsError(problem) from None

        if not self.attempt(path, write):
            return None
        self.written[rel] = hashlib.sha256(data).hexdigest()
        return path

    def write_json(self, path: Path, record: Mapping[str, Any]) -> Path | None:
        text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        return self.write_bytes(path, text.encode("utf-8"))

    def add_file(self, source: Path, target: Path) -> Path | None:
        """Copy a file another tool wrote (a report) into the tree; ``None`` if it is not there."""
        try:
            data = source.read_bytes()
        except OSError:
            return None
        if source.resolve() == target.resolve():
            rel = self.relative(target)
            if rel in self.unwritten:  # its writer failed; what is there is not the whole file
                return None
            self.written[rel] = hashlib.sha256(data).hexdigest()
            return target
        return self.write_bytes(target, data)

    def adopt(self, run_id: str) -> None:
        """Take the files of ``run_id``, a run killed before it could seal its evidence, into this
        run's manifest as they are now (this run resumed its rollback), and say so."""
        if (self.root / RUNS / run_id / MANIFEST).exists():
            return
        taken = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() and run_id in p.relative_to(self.root).parts):
            rel = self.relative(path)
            if rel not in self.written and not path.name.endswith(".tmp"):
                self.written[rel] = sha256_path(path)
                taken.append(rel)
        self.adopted[run_id] = taken

    def seal(self, metadata: Mapping[str, Any]) -> tuple[Path, str] | None:
        """Write the run's manifest and point ``LATEST`` at it; (manifest path, its SHA-256), or
        ``None`` when the manifest could not be written (recorded in :attr:`unwritten`).

        The manifest names the previous sealed run and its manifest's hash, so the runs form a
        chain: changing an earlier manifest breaks the link from the one after it.
        """
        previous = _latest(self.root)
        manifest = {
            "run_id": self.run_id,
            "sealed_at": utc_iso(datetime.now(timezone.utc).timestamp()),
            "previous": previous,
            "metadata": dict(metadata),
            "files": dict(sorted(self.written.items())),
        }
        if self.unwritten:
            manifest["unwritten"] = dict(sorted(self.unwritten.items()))
        path = self.run_dir / MANIFEST
        data = (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
        os.sync()  # every record this run wrote reaches the disk before the manifest that seals it
        if not self.attempt(path, lambda: _atomic_write(path, data, sync=True)):
            return None
        self.attempt(self.root / LATEST, lambda: _atomic_write(self.root / LATEST, (self.run_id + "\n").encode(),
                                                               sync=True))
        return path, hashlib.sha256(data).hexdigest()


def _latest(root: Path) -> dict[str, str] | None:
    try:
        run_id = (root / LATEST).read_text("utf-8").strip()
        manifest = root / RUNS / run_id / MANIFEST
        return {"run_id": run_id, "manifest_sha256": sha256_path(manifest)}
    except OSError:
        return None


@dataclass
class VerifyResult:
    """What ``verify`` found: per problem kind, the files (relative to the evidence directory)."""

    runs: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    broken_chain: list[str] = field(default_factory=list)
    unsealed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.extra or self.broken_chain)

    def lines(self) -> Iterator[str]:
        for label, items in (("changed", self.changed), ("missing", self.missing), ("extra", self.extra),
                             ("broken chain", self.broken_chain)):
            for item in items:
                yield f"{label}: {item}"
        for run in self.unsealed:
            yield f"note: run {run} has no manifest (it was interrupted before it could seal its evidence)"


def verify_tree(root: Path, run_id: str | None = None) -> VerifyResult:
    """Check every sealed run's files against its manifest, the chain of manifests, and that no
    file is in the tree that no manifest lists (``run_id``: check that run only)."""
    result = VerifyResult()
    manifests: dict[str, dict[str, Any]] = {}
    for path in sorted((root / RUNS).glob(f"*/{MANIFEST}")):
        manifests[path.parent.name] = json.loads(path.read_text("utf-8"))
    if run_id is not None and run_id not in manifests:
        result.missing.append(f"{RUNS}/{run_id}/{MANIFEST}")
        return result
    listed: set[str] = set()
    for rid, manifest in manifests.items():
        listed.update(manifest["files"])
        listed.add(f"{RUNS}/{rid}/{MANIFEST}")
        if run_id is not None and rid != run_id:
            continue
        result.runs.append(rid)
        for rel, want in manifest["files"].items():
            path = root / rel
            if not path.is_file():
                result.missing.append(rel)
            elif sha256_path(path) != want:
                result.changed.append(rel)
        previous = manifest.get("previous")
        if previous:
            prev_path = root / RUNS / previous["run_id"] / MANIFEST
            if not prev_path.is_file():
                result.broken_chain.append(f"{rid}: previous manifest {previous['run_id']} is missing")
            elif sha256_path(prev_path) != previous["manifest_sha256"]:
                result.broken_chain.append(f"{rid}: previous manifest {previous['run_id']} was changed "
                                           f"(listed in {RUNS}/{rid}/{MANIFEST})")
                result.changed.append(f"{RUNS}/{previous['run_id']}/{MANIFEST}")
    if run_id is None:
        unsealed = set()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel in (LATEST, HISTORY, HISTORY + "-journal") or rel in listed or path.name.endswith(".tmp"):
                continue
            run = _run_of(rel)
            if run and run not in manifests:
                unsealed.add(run)
            result.extra.append(rel)
        result.unsealed = sorted(unsealed)
    result.changed = sorted(set(result.changed))
    return result


def _run_of(rel: str) -> str | None:
    for part in rel.split("/"):
        if re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", part):
            return part
    return None
