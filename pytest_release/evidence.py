"""The evidence tree: where evidence is written, sealed with a manifest, and verified.

The layout follows the plan's sections (validation, rollback, monitoring, ...). Every leaf folder holds one
sub-folder per run, so a later run adds to the tree and never touches an earlier run's files::

    EVIDENCE/
      LATEST                                   the id of the latest sealed run
      LOCK                                     the advisory lock that serializes sealing
      analytics/history.sqlite                 the history store (analytics), updated by every run
      runs/RUN_ID/manifest.json                SHA-256 of every file the run wrote, run metadata,
                                               and the hash of the previous run's manifest
      runs/RUN_ID/attestation.intoto.jsonl     a signed run's DSSE envelope (see attest)
      runs/RUN_ID/summary.json, junit.xml, report.html
      strategy/RUN_ID/stages.json              the stages in order, with their verdicts
      config/RUN_ID/plan.yaml, effective.json  the plan as written and as used
      gates/RUN_ID/STAGE.GATE.json             strategy gates (validation_gate, ...) per stage
      validation/gates/RUN_ID/STAGE/GATE.json  validation gates, and their checks' records:
      validation/gates/RUN_ID/STAGE/GATE/records.jsonl   one JSON line per check (RECORDS)
      validation/{metrics,config}/RUN_ID/...
      rollback/{procedures,triggers,config}/RUN_ID/...
      monitoring/{metrics,alerts,config}/RUN_ID/...
      analytics/{metrics,analysis,config}/RUN_ID/...
      automation/{tasks,workflows,config}/RUN_ID/...

Files are written atomically (a temporary file, then a link or rename) and never overwritten,
except the check records: each gate's checks are lines appended to one JSON Lines file
(:meth:`EvidenceTree.append_record`), created new by the run and hashed as it grows, so a run
creates a number of files that does not grow with its number of checks. ``chain.verify_tree``
checks the tree whole (a line changed, removed or added changes its file's hash).
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
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fsutil import atomic_write, open_new_append, truncate_to, write_new
from .fsutil import write_all as append_all
from .records import RECORDS
from .secrets import scrub_bytes

if TYPE_CHECKING:
    from .attest import Signer

__all__ = ["FOLDERS", "MAX_FILE_NAME", "RECORDS", "EvidenceTree", "SealError", "describe_os_error", "new_run_id",
           "read_manifest", "safe_name", "seal_lock", "sha256_path", "utc_iso"]

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
#: The history page (see history_page): every run rewrites it, so no manifest lists it.
INDEX = "index.html"
#: The advisory lock (``flock``) that serializes sealing, so concurrent runs form one chain.
LOCK = "LOCK"
#: How long a run waits for another run's seal (seconds; PYTEST_RELEASE_LOCK_TIMEOUT overrides).
LOCK_TIMEOUT = 60.0
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\[\]#@=+-]")


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: ``20261126T200312Z-3f9a1c``."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{_random.token_hex(3)}"


def utc_iso(timestamp: float) -> str:
    """An epoch timestamp as UTC ISO-8601 with milliseconds."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The longest file name (in bytes) a name becomes: well below every file system's 255, with room
#: for the temporary name a file is written under first.
MAX_FILE_NAME = 120
_EXTENSION = re.compile(r"\.(json|jsonl|yaml|xml|html)$")


def safe_name(name: str) -> str:
    """The one mapping from a name (a check, gate, stage, procedure, metric, alert, task or
    workflow, with its extension) to a file name: injective, and at most ``MAX_FILE_NAME`` bytes.

    A name of safe characters (letters, digits, ``_ . [ ] # @ = + -``), not starting with a dot,
    and short enough stays as it is (``health[api].json``). Any other has its unsafe characters
    replaced by ``_``, is cut to fit, and gets ``~`` and 12 hex digits of the SHA-256 of the whole
    name before its extension (``command[a_b]~1f0e3dad9908.json`` for ``command[a/b]``): ``~`` is
    never a safe character, so a name kept as it is cannot equal one that was changed, and two
    changed names differ by their hashes. The readable name stays inside the record.
    """
    match = _EXTENSION.search(name)
    stem, extension = (name[:match.start()], match.group()) if match else (name, "")
    safe = _UNSAFE.sub("_", stem)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe and safe == stem and len(name.encode("utf-8")) <= MAX_FILE_NAME:
        return name
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    room = MAX_FILE_NAME - len(extension) - len(digest) - 1
    return f"{safe[:room]}~{digest}{extension}"


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
    """Replace ``path``'s content atomically (mode 0600); ``sync`` also forces it to disk (the
    manifest and LATEST; ``seal`` syncs the records first). See :func:`.fsutil.atomic_write`."""
    atomic_write(path, data, sync=sync, mode=0o600)


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, atomically and race-free (``FileExistsError`` if it
    does; nothing is ever replaced). See :func:`.fsutil.write_new`."""
    write_new(path, data)


@dataclass
class _Lines:
    """A JSON Lines file this run appends to: its descriptor, the hash of what it holds, its size
    and lines (what could not be appended is counted in ``lost``)."""

    fd: int | None
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    lines: int = 0
    lost: int = 0


@dataclass
class EvidenceTree:
    """One run's view of the evidence directory: it adds files and remembers their hashes."""

    root: Path
    run_id: str
    written: dict[str, str] = field(default_factory=dict)
    #: The key that signs the run's seal (``None``: the run is sealed unsigned).
    signer: Signer | None = None
    #: Runs that never sealed whose files this run took into its manifest (a resumed rollback).
    adopted: dict[str, list[str]] = field(default_factory=dict)
    #: Evidence that could not be written: its path (relative to the root where it is inside the
    #: tree) and why. A run with any is EVIDENCE INCOMPLETE.
    unwritten: dict[str, str] = field(default_factory=dict)
    _folders: set[Path] = field(default_factory=set, repr=False)  # folders known to exist
    #: The JSON Lines files being appended to, by path relative to the root.
    _lines: dict[str, _Lines] = field(default_factory=dict, repr=False)
    #: How many lines each JSON Lines file holds (sealed in the manifest beside the hashes).
    line_counts: dict[str, int] = field(default_factory=dict)

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
        """Write a new evidence file atomically; an existing file is never replaced. The run's
        secrets are masked in it (every evidence file is written here). ``None`` when it could
        not be written (recorded in :attr:`unwritten`)."""
        data = scrub_bytes(data)
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

    def append_record(self, path: Path, record: Mapping[str, Any]) -> str | None:
        """Append ``record`` as one JSON line to the JSON Lines file ``path`` (created by this run
        on its first record; an existing file is never written to), the run's secrets masked.
        The record's reference, ``RELATIVE_PATH#LN`` (N counts from 1), or ``None`` when it could
        not be written (the file's name and the count of lost records are in :attr:`unwritten`;
        a line written in part is cut off, so the file holds whole lines only)."""
        line = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return self.append_line(path, scrub_bytes(line.encode("utf-8")) + b"\n")

    def append_line(self, path: Path, data: bytes) -> str | None:
        """Append one line (``data`` ends with its newline) to a JSON Lines file of this run."""
        rel = self.relative(path)
        lines = self._lines.get(rel)
        if lines is None:
            if rel in self.written:
                raise FileExistsError(f"evidence file {rel} exists already; evidence is never overwritten")
            lines = self._lines[rel] = _Lines(self._open_lines(path, rel))
            self.line_counts[rel] = 0
        if lines.fd is None:  # its file could not be created
            lines.lost += 1
            self._note_lost(rel, lines, None)
            return None
        try:
            append_all(lines.fd, data)
        except OSError as exc:
            truncate_to(lines.fd, lines.size)
            lines.lost += 1
            self._note_lost(rel, lines, exc)
            return None
        lines.digest.update(data)
        lines.size += len(data)
        lines.lines += 1
        self.line_counts[rel] = lines.lines
        return f"{rel}#L{lines.lines}"

    def _open_lines(self, path: Path, rel: str) -> int | None:
        fd: list[int] = []

        def create() -> None:
            if path.parent not in self._folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(path.parent)
            try:
                fd.append(open_new_append(path))
            except FileExistsError:
                raise FileExistsError(f"evidence file {rel} exists already; evidence is never overwritten") from None

        if not self.attempt(path, create):
            return None
        self.written[rel] = hashlib.sha256().hexdigest()  # listed from the start; finished at the seal
        return fd[0]

    def _note_lost(self, rel: str, lines: _Lines, exc: OSError | None) -> None:
        if exc is not None:
            self.record_failure(self.root / rel, exc)
        why = self.unwritten.get(rel, "").split(" (", 1)[0] or "it could not be written"
        self.unwritten[rel] = f"{why} ({lines.lost} record(s) lost)"

    def finish_lines(self) -> None:
        """Close the JSON Lines files and put their hashes among the written files (at the seal)."""
        for rel, lines in self._lines.items():
            if lines.fd is not None:
                os.close(lines.fd)
                lines.fd = None
                self.written[rel] = lines.digest.hexdigest()

    def add_file(self, source: Path, target: Path) -> Path | None:
        """Copy a file another tool wrote (a report) into the tree; ``None`` if it is not there."""
        try:
            data = source.read_bytes()
        except OSError:
            return None
        if source.resolve() == target.resolve():  # written by another tool (pytest, pytest-html) in place
            scrubbed = scrub_bytes(data)
            if scrubbed is not data:
                _atomic_write(target, data := scrubbed)
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
            if rel not in self.written:  # a .tmp it left too: verify knows every file
                self.written[rel] = sha256_path(path)
                taken.append(rel)
        self.adopted[run_id] = taken

    def seal(self, metadata: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> tuple[Path, str] | None:
        """Write the run's manifest (and, with a signer, its attestation: ``result`` holds the
        Test Result predicate's fields) and point ``LATEST`` at it; (manifest path, its SHA-256),
        or ``None`` when the manifest could not be written (recorded in :attr:`unwritten`).

        The manifest names the previous sealed run with its manifest's (and envelope's) hash, so
        the runs form a chain. Sealing holds the evidence directory's lock, so concurrent runs
        chain one after the other; the records are on disk before the lock is taken.
        """
        from .attest import ENVELOPE, statement

        self.finish_lines()
        os.sync()  # every record this run wrote reaches the disk before the manifest that seals it
        with ExitStack() as held:
            try:
                held.enter_context(seal_lock(self.root))
            except OSError as exc:  # no lock file on a full or read-only disk: no manifest either
                self.record_failure(self.run_dir / MANIFEST, exc)
                return None
            previous, latest_found = _previous(self.root)
            manifest: dict[str, Any] = {
                "run_id": self.run_id,
                "sealed_at": utc_iso(datetime.now(timezone.utc).timestamp()),
                "previous": previous,
                "metadata": dict(metadata),
                "files": dict(sorted(self.written.items())),
            }
            if self.line_counts:
                manifest["lines"] = dict(sorted(self.line_counts.items()))
            if self.unwritten:
                manifest["unwritten"] = dict(sorted(self.unwritten.items()))
            if latest_found is not None:
                manifest["latest_found"] = latest_found
            if self.signer is not None:
                manifest["signed_by"] = self.signer.keyid
            path = self.run_dir / MANIFEST
            data = scrub_bytes((json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))
            digest = hashlib.sha256(data).hexdigest()
            if not self.attempt(path, lambda: _atomic_write(path, data, sync=True)):
                return None
            if self.signer is not None:
                claim = statement(self.run_id, (self.relative(path), digest), manifest["files"], previous,
                                  result or {})
                payload = scrub_bytes(json.dumps(claim, sort_keys=True, separators=(",", ":")).encode("utf-8"))
                envelope = self.signer.envelope(payload)
                self.attempt(self.run_dir / ENVELOPE,
                             lambda: _atomic_write(self.run_dir / ENVELOPE, envelope, sync=True))
            self.attempt(self.root / LATEST,
                         lambda: _atomic_write(self.root / LATEST, (self.run_id + "\n").encode(), sync=True))
        return path, digest


class SealError(RuntimeError):
    """The run's evidence could not be sealed (its files are kept, unsealed)."""


@contextmanager
def seal_lock(root: Path, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold the evidence directory's advisory lock (``flock`` on ``LOCK``): exclusive to seal,
    shared to verify. Waits at most ``timeout`` seconds, then raises :class:`SealError`."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, sealing is not serialized
        yield
        return
    if timeout is None:
        try:
            timeout = float(os.environ.get("PYTEST_RELEASE_LOCK_TIMEOUT") or LOCK_TIMEOUT)
        except ValueError:
            timeout = LOCK_TIMEOUT
    path = root / LOCK
    try:
        fd = os.open(path, os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if shared:  # a read-only copy of the evidence (a CI artifact): nobody seals into it
            yield
            return
        raise
    try:
        deadline, pause = time.monotonic() + timeout, 0.005
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
                    raise SealError(f"{path} is still locked after {timeout:g} s (held by {holder}); set "
                                    "PYTEST_RELEASE_LOCK_TIMEOUT to wait longer") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        if not shared:
            try:  # who holds it, for a run that waits in vain; best effort (a full disk)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {_host()}\n".encode(), 0)
            except OSError:
                pass
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def _host() -> str:
    import socket

    return socket.gethostname()


def read_manifest(path: Path) -> tuple[dict[str, Any], bytes]:
    """A run's manifest and its bytes; ``ValueError`` says plainly what is wrong with it."""
    data = path.read_bytes()
    try:
        manifest = json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    if not isinstance(manifest, dict):
        raise ValueError("not a JSON object")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError("no 'files' object" if files is None else "'files' is not an object")
    bad = next((k for k, v in files.items() if not (isinstance(v, str) and _HEX64.fullmatch(v))), None)
    if bad is not None:
        raise ValueError(f"files[{bad[:120]!r}] is not a SHA-256")
    if manifest.get("run_id") != path.parent.name:
        raise ValueError(f"its run_id is {str(manifest.get('run_id'))[:80]!r}, not its folder's {path.parent.name!r}")
    previous = manifest.get("previous")
    if previous is not None and not (isinstance(previous, dict) and isinstance(previous.get("run_id"), str)
                                     and isinstance(previous.get("manifest_sha256"), str)):
        raise ValueError("'previous' is neither null nor {run_id, manifest_sha256}")
    return manifest, data


def _link(root: Path, run_id: str) -> dict[str, str]:
    """The chain link to a sealed run: its id, its manifest's and (when signed) envelope's hash."""
    from .attest import ENVELOPE

    link = {"run_id": run_id, "manifest_sha256": sha256_path(root / RUNS / run_id / MANIFEST)}
    envelope = root / RUNS / run_id / ENVELOPE
    if envelope.is_file():
        link["envelope_sha256"] = sha256_path(envelope)
    return link


def _previous(root: Path) -> tuple[dict[str, str] | None, str | None]:
    """The run a new seal chains to, and what ``LATEST`` held when that was not it.

    ``LATEST`` names the head when it names a sealed run (it is then trusted: were it moved back,
    the new run forks the chain, and verify says so). When it is missing, garbled or names a run
    without a manifest while sealed runs exist, the new run chains to the newest head of the chain
    the manifests form, and its manifest records what ``LATEST`` held (verify reports it).
    """
    try:
        raw = (root / LATEST).read_bytes()[:200]
    except FileNotFoundError:
        raw = None
    text = raw.decode("utf-8", "replace").strip() if raw is not None else None
    if text and RUN_ID.fullmatch(text) and (root / RUNS / text / MANIFEST).is_file():
        return _link(root, text), None
    heads: dict[str, str] = {}  # run id -> sealed_at, for runs that no run names as previous
    followed: set[str] = set()
    for path in (root / RUNS).glob(f"*/{MANIFEST}"):
        try:
            manifest, _ = read_manifest(path)
        except (OSError, ValueError):
            continue
        heads[path.parent.name] = str(manifest.get("sealed_at", ""))
        if manifest.get("previous"):
            followed.add(manifest["previous"]["run_id"])
    candidates = {run: at for run, at in heads.items() if run not in followed} or heads
    if not candidates:
        return None, (None if text is None else (text or "(empty)"))
    head = max(candidates, key=lambda run: (candidates[run], run))
    return _link(root, head), "(missing)" if text is None else (text or "(empty)")
