"""What a rollback step can do: the built-in actions.

A procedure's step names an action: ``{command: {argv: [...]}}``, ``{symlink: {...}}``, ... Each
action kind has a parameter schema, ``run`` (do it, during a rollback) and ``ready`` (the
rollback_gate's readiness check: can it be done? a backup action takes its backup then).

Backups: at readiness a backup action writes the restore point (``to``); during a rollback it
keeps a copy of the state it is about to replace at ``to + ".before-rollback"`` and never touches
the restore point, which the restore action then puts back.
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from ..checks.command import run_program
from ..checks.integrity import parse_manifest, sha256_file
from ..checks.limits import MAX_OUTPUT_PARAM
from ..fsutil import atomic_copy, atomic_symlink, atomic_write, temp_path
from ..http import http_pool
from ..units import DURATION_SCHEMA, ENV_SCHEMA, parse_duration

__all__ = ["ACTIONS", "ActionKind", "StepContext", "StepResult"]

SNAPSHOT_SUFFIX = ".before-rollback"


@dataclass
class StepResult:
    """A step's outcome: passed or not, one line for people, the lines under it, the figures."""

    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    """What an action runs with: its parameters, the plan's directory, when its time is up.

    ``mode`` is ``"rollback"`` or ``"readiness"``; ``verify`` judges validation gates again
    (given by name; empty means the gates this rollback is about).
    """

    procedure: str
    step: str
    params: Mapping[str, Any]
    base_dir: Path
    deadline: float
    mode: str = "rollback"
    verify: Callable[[list[str]], StepResult] | None = None
    call_hook: Callable[[StepContext], StepResult | None] | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def path(self, value: str) -> Path:
        return (self.base_dir / value).absolute()


@dataclass(frozen=True)
class ActionKind:
    name: str
    params: Mapping[str, Any]
    run: Callable[[StepContext], StepResult]
    ready: Callable[[StepContext], StepResult]
    backup: bool = False
    description: str = ""


def _obj(properties: Mapping[str, Any], required: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required),
            "additionalProperties": False, "description": description}


def _backup(into: Callable[[StepContext, Path, bool], StepResult]) -> tuple[Callable[[StepContext], StepResult],
                                                                            Callable[[StepContext], StepResult]]:
    """A backup action's (run, ready) from ``into(ctx, where, forensic)``.

    Readiness writes the restore point at ``to`` and verifies it strictly. A rollback keeps the
    state it replaces at ``to.before-rollback``, never at ``to``: a forensic copy, best effort. The
    live state is broken then (that is why the rollback runs), so the copy keeps what it can and
    says what was wrong, and it never fails the step: nothing may stop the restore after it.
    """

    def run(ctx: StepContext) -> StepResult:
        target = ctx.path(ctx.params["to"])
        snapshot = target.with_name(target.name + SNAPSHOT_SUFFIX)
        try:
            return into(ctx, snapshot, True)
        except (OSError, ValueError, sqlite3.Error) as exc:
            return StepResult(True, f"forensic copy to {snapshot} failed ({exc}); the restore goes on",
                              measured={"forensic": True, "kept": False, "error": str(exc)})

    def ready(ctx: StepContext) -> StepResult:
        return into(ctx, ctx.path(ctx.params["to"]), False)

    return run, ready


# -- command ------------------------------------------------------------------------------------


def _command(ctx: StepContext) -> StepResult:
    timeout = ctx.remaining()
    if "timeout" in ctx.params:
        timeout = min(timeout, parse_duration(ctx.params["timeout"]))
    done = run_program(ctx.params, ctx.base_dir, timeout)
    want = int(ctx.params.get("exit_code", 0))
    measured = {"exit_code": done.returncode, "duration_s": done.duration}
    if done.returncode is None:
        return StepResult(False, f"{done.shown} {done.error}", done.output_lines(), measured)
    if done.returncode != want:
        return StepResult(False, f"{done.shown} exited {done.returncode}, expected {want}",
                          done.output_lines(), measured)
    return StepResult(True, f"{done.shown} exited {done.returncode}", done.output_lines(), measured)


def _command_ready(ctx: StepContext) -> StepResult:
    argv = ctx.params.get("argv") or ["/bin/sh"]
    program = argv[0]
    cwd = ctx.path(ctx.params.get("cwd", "."))
    found = shutil.which(program) or (os.access(cwd / program, os.X_OK) and str(cwd / program))
    if not found:
        return StepResult(False, f"program {program!r} is not found (PATH, or relative to {cwd})")
    return StepResult(True, f"{program} is runnable ({found})")


# -- files --------------------------------------------------------------------------------------

#: The globs a file backup was taken with, one a line, beside its SHA256SUMS: the restore finds
#: the files added since (they match the globs and are not in the backup).
GLOBS = "GLOBS"
#: Where an exact restore moves the files added since the backup, inside the forensic copy.
ADDED = "added-since-backup"


def _glob_files(root: Path, patterns: list[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(Path(os.path.normpath(os.path.abspath(p))) for p in glob.glob(str(root / pattern), recursive=True)
                     if Path(p).is_file())
    return sorted(found)


def _patterns(ctx: StepContext) -> list[str]:
    """The backup's globs relative to the plan's folder (as recorded in GLOBS)."""
    base = ctx.base_dir.absolute()
    patterns = []
    for pattern in ctx.params["files"]:
        full = Path(os.path.normpath(ctx.path(pattern)))
        try:
            patterns.append(full.relative_to(base).as_posix())
        except ValueError:
            raise ValueError(f"{pattern}: outside the plan's directory; back up files below it") from None
    return patterns


def _relative(ctx: StepContext, path: Path) -> str:
    try:
        return path.relative_to(ctx.base_dir.absolute()).as_posix()
    except ValueError:
        raise ValueError(f"{path} is outside the plan's directory; back up files below it") from None


def _manifest_of(directory: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of a backup folder's SHA256SUMS (empty when there is none)."""
    try:
        entries, _ = parse_manifest((directory / "SHA256SUMS").read_text("utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}
    return {rel: want for want, rel, _ in entries}


def _file_backup_into(ctx: StepContext, target: Path, forensic: bool) -> StepResult:
    patterns = _patterns(ctx)
    files = _glob_files(ctx.base_dir.absolute(), patterns)
    reserved = [p for p in files if _relative(ctx, p) in ("SHA256SUMS", GLOBS)]
    if reserved:
        raise ValueError(f"cannot back up {reserved[0]}: its name is the backup's own {reserved[0].name}")
    if not files and not forensic:
        return StepResult(False, f"no file matches {', '.join(ctx.params['files'])}")
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    lines = []
    unreadable = []
    for path in files:
        rel = _relative(ctx, path)
        copy = staging / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, copy)
        except OSError as exc:
            if not forensic:
                raise
            unreadable.append(f"{rel}: not copied: {exc.strerror or exc}")
            continue
        lines.append(f"{sha256_file(copy)}  {rel}")
    (staging / "SHA256SUMS").write_text("".join(line + "\n" for line in lines))
    (staging / GLOBS).write_text("".join(p + "\n" for p in patterns))
    problems = _check_sums(staging)
    if problems and not forensic:
        shutil.rmtree(staging, ignore_errors=True)
        return StepResult(False, f"backup of {len(files)} file(s) does not verify: {problems[0]}", problems)
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    copied = [line.split("  ", 1)[1] for line in lines]
    if not forensic:
        return StepResult(True, f"{len(files)} file(s) backed up to {target} and verified", copied,
                          {"files": len(files)})
    return _file_forensic_result(ctx, target, lines, unreadable + problems)


def _file_forensic_result(ctx: StepContext, target: Path, lines: list[str], problems: list[str]) -> StepResult:
    """Say what the forensic copy holds and how the live files differ from the restore point."""
    kept: dict[str, str] = {}  # path -> digest, from "digest  path" lines
    for line in lines:
        digest, rel = line.split("  ", 1)
        kept[rel] = digest
    restore_point = _manifest_of(ctx.path(ctx.params["to"]))
    changed = sorted(rel for rel, digest in kept.items() if rel in restore_point and restore_point[rel] != digest)
    added = sorted(rel for rel in kept if restore_point and rel not in restore_point)
    missing = sorted(rel for rel in restore_point if rel not in kept)
    wrong = [f"{len(items)} {what}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
             for what, items in (("changed since the restore point", changed), ("added since it", added),
                                 ("missing", missing)) if items]
    said = "; ".join(wrong) or "the same files and bytes as the restore point"
    details = ([f"changed: {rel}" for rel in changed] + [f"added: {rel}" for rel in added]
               + [f"missing: {rel}" for rel in missing] + problems)
    return StepResult(True, f"forensic copy of {len(kept)} file(s) as they were before the rollback at {target}: "
                            f"{said}{'; ' + problems[0] if problems else ''}; the restore goes on", details,
                      {"forensic": True, "kept": True, "files": len(kept), "changed": changed, "added": added,
                       "missing": missing, "not_copied": len(problems)})


def _check_sums(directory: Path) -> list[str]:
    try:
        entries, bad = parse_manifest((directory / "SHA256SUMS").read_text("utf-8"))
    except OSError as exc:
        return [f"{directory}/SHA256SUMS: {exc.strerror or exc}"]
    problems = list(bad)
    for want, rel, _ in entries:
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel}: missing from the backup")
        elif sha256_file(path) != want:
            problems.append(f"{rel}: changed since it was backed up")
    return problems


def _remove_added(source: Path, into: Path, added: list[str], keep: set[str]) -> tuple[str, list[str]]:
    """Move the files added since the backup into the forensic copy (or remove them); where to."""
    forensic = source.with_name(source.name + SNAPSHOT_SUFFIX)
    aside = forensic / ADDED if forensic.is_dir() else None
    for rel in added:
        path = into / rel
        if aside is not None:
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, aside / rel)
        else:
            path.unlink()
        parent = path.parent  # directories the removal left empty go too, unless the backup has them
        while parent != into and parent.is_relative_to(into) and not any(parent.iterdir()) \
                and not any(k.startswith(parent.relative_to(into).as_posix() + "/") for k in keep):
            parent.rmdir()
            parent = parent.parent
    return (f"moved to {aside}" if aside is not None else "removed"), added


def _file_restore(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    problems = _check_sums(source)
    if problems:
        return StepResult(False, f"backup {source} does not verify, nothing restored: {problems[0]}", problems)
    entries, _ = parse_manifest((source / "SHA256SUMS").read_text("utf-8"))
    into = Path(os.path.normpath(ctx.path(ctx.params.get("to", "."))))
    for _, rel, _ in entries:
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(source / rel, target)
    restored = [f"{rel}" for _, rel, _ in entries]
    mismatched = [rel for want, rel, _ in entries if sha256_file(into / rel) != want]
    if mismatched:
        return StepResult(False, f"{len(mismatched)} restored file(s) differ from the backup", mismatched)
    summary = f"{len(entries)} file(s) restored from {source} and verified"
    measured: dict[str, Any] = {"files": len(entries)}
    try:
        globs = [line for line in (source / GLOBS).read_text("utf-8").splitlines() if line]
    except FileNotFoundError:
        return StepResult(True, f"{summary}; files added since the backup could not be looked for (the backup "
                                f"records no globs: taken by an older version)", restored, measured)
    known = {rel for _, rel, _ in entries}
    added = sorted(rel for rel in (p.relative_to(into).as_posix() for p in _glob_files(into, globs)
                                   if p.is_relative_to(into)) if rel not in known)
    measured["added"] = added
    if not added:
        return StepResult(True, f"{summary}; no file was added since the backup ({', '.join(globs)})", restored,
                          measured)
    names = ", ".join(added[:10]) + (" ..." if len(added) > 10 else "")
    if ctx.params.get("exact", True) is False:
        return StepResult(True, f"{summary}; kept {len(added)} file(s) added since the backup (exact: false): "
                                f"{names}", restored + [f"kept (added since the backup): {rel}" for rel in added],
                          measured)
    try:
        where, removed = _remove_added(source, into, added, known)
    except OSError as exc:
        return StepResult(False, f"{summary}, but a file added since the backup could not be removed: {exc}",
                          restored + [f"added since the backup: {rel}" for rel in added], measured)
    measured["removed"] = len(removed)
    return StepResult(True, f"{summary}; {len(removed)} file(s) added since the backup {where}: {names}",
                      restored + [f"{where}: {rel}" for rel in removed], measured)


def _file_restore_ready(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    if not source.is_dir():
        return StepResult(False, f"no backup at {source} to restore from")
    problems = _check_sums(source)
    if problems:
        return StepResult(False, f"backup {source} does not verify: {problems[0]}", problems)
    return StepResult(True, f"backup {source} is there and verifies")


# -- SQLite -------------------------------------------------------------------------------------

#: How many integrity_check lines a step shows; the full list is in its ``measured``.
SHOWN_PROBLEMS = 20
CONTENT_SUFFIX = ".content-sha256"


def _integrity(path: Path, timeout: float) -> list[str]:
    """``PRAGMA integrity_check`` of ``path``: its problems, one per line (``[]`` when it says ok).

    A broken file lists problems and then stops with an error (``database disk image is
    malformed``): the problems found before the error are kept, and the error is the last line.
    """
    problems: list[str] = []
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=max(timeout, 0.1))
    except sqlite3.Error as exc:
        return [f"integrity_check could not run: {exc}"]
    try:
        cursor = conn.execute("PRAGMA integrity_check")
        for (row,) in iter(cursor.fetchone, None):
            problems.extend(line for line in str(row).splitlines()
                            if line.strip() and not line.startswith("*** in database"))
    except sqlite3.Error as exc:
        problems.append(f"integrity_check stopped: {exc}")
    finally:
        conn.close()
    return [] if problems == ["ok"] else problems


def _problems_shown(problems: list[str]) -> list[str]:
    shown = problems[:SHOWN_PROBLEMS]
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(f"... and {len(problems) - SHOWN_PROBLEMS} more (all {len(problems)} in the step's measured "
                     "integrity_check)")
    return shown


class _Text(bytes):
    """A TEXT value as its raw bytes (``text_factory``), so that it is not mistaken for a BLOB."""


def _encode(value: Any) -> bytes:
    if value is None:
        return b"N;"
    if isinstance(value, _Text):
        tag, raw = b"T", bytes(value)
    elif isinstance(value, bytes):
        tag, raw = b"B", value
    elif isinstance(value, int):
        tag, raw = b"I", str(value).encode()
    else:
        tag, raw = b"R", float(value).hex().encode()
    return tag + str(len(raw)).encode() + b":" + raw + b";"


def content_digest(path: Path, timeout: float) -> str:
    """SHA-256 of a SQLite database's content, equal exactly when the content is equal.

    It covers, in this order: ``PRAGMA user_version`` and ``application_id``; every
    ``sqlite_master`` row (type, name, table, SQL) ordered by type and name; then each table
    (virtual tables excepted: their shadow tables are covered) in name order, every row with each
    value written as its storage class (NULL, INTEGER, REAL in exact hex, TEXT as its bytes, BLOB)
    and its length: rowid tables as the rowid then every column, in rowid order; WITHOUT ROWID
    tables in primary-key order. File-level bytes (header counters, page layout, free pages) are
    not content: the backup API rewrites them, which is why the file's SHA-256 changes.
    """
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=max(timeout, 0.1))
    conn.text_factory = _Text
    digest = hashlib.sha256(b"pytest-release sqlite content 1\n")
    try:
        for pragma in ("user_version", "application_id"):
            digest.update(b"pragma" + _encode(_Text(pragma.encode())) + _encode(conn.execute(
                f"PRAGMA {pragma}").fetchone()[0]) + b"\n")
        schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        for row in schema:
            digest.update(b"schema" + b"".join(_encode(v) for v in row) + b"\n")
        for kind, raw_name, _, sql in schema:
            if bytes(kind) != b"table" or bytes(sql or b"").upper().startswith(b"CREATE VIRTUAL"):
                continue
            name = bytes(raw_name).decode("utf-8", "surrogateescape")
            quoted = '"' + name.replace('"', '""') + '"'
            columns = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
            names = {bytes(c[1]).lower() for c in columns}
            alias = next((a for a in ("rowid", "_rowid_", "oid") if a.encode() not in names), None)
            select = None
            if alias is not None:
                try:
                    conn.execute(f"SELECT {alias} FROM {quoted} LIMIT 0")
                    select = f"SELECT {alias}, * FROM {quoted} ORDER BY {alias}"
                except sqlite3.OperationalError:
                    select = None  # WITHOUT ROWID
            if select is None:
                keys = [c for c in sorted(columns, key=lambda c: c[5]) if c[5]] or columns
                order = ", ".join('"' + bytes(c[1]).decode("utf-8", "surrogateescape").replace('"', '""') + '"'
                                  for c in keys)
                select = f"SELECT * FROM {quoted} ORDER BY {order}"
            digest.update(b"table" + _encode(_Text(name.encode("utf-8", "surrogateescape"))) + b"\n")
            for row in conn.execute(select):
                digest.update(b"".join(_encode(v) for v in row) + b"\n")
    finally:
        conn.close()
    return digest.hexdigest()


def _sqlite_copy(source: Path, target: Path, timeout: float) -> None:
    """Copy a live database with the backup API: consistent while the service writes to it."""
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=max(timeout, 0.1))
    dst = sqlite3.connect(target, timeout=max(timeout, 0.1))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _companions(path: Path) -> list[Path]:
    """A database file's journal companions (``-wal``, ``-shm``, ``-journal``)."""
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _clear_companions(target: Path) -> None:
    """A stale ``-wal`` beside a copy would be replayed into it when opened: remove them."""
    for companion in _companions(target):
        companion.unlink(missing_ok=True)


def _raw_copy(db: Path, target: Path) -> list[str]:
    """Copy the bytes of ``db`` and its ``-wal``/``-shm``/``-journal`` beside ``target``; their names."""
    kept = []
    _clear_companions(target)
    atomic_copy(db, target, metadata=False)
    kept.append(db.name)
    for live, copy in zip(_companions(db), _companions(target), strict=True):
        try:
            shutil.copyfile(live, copy)
        except FileNotFoundError:
            continue
        kept.append(live.name)
    return kept


def _sqlite_backup_into(ctx: StepContext, target: Path, forensic: bool) -> StepResult:
    db = ctx.path(ctx.params["db"])
    if not db.is_file():
        if forensic:
            return StepResult(True, f"forensic copy skipped: no SQLite database at {db} (nothing to keep); "
                                    "the restore goes on", measured={"forensic": True, "kept": False})
        return StepResult(False, f"no SQLite database at {db}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    broken = ""
    problems: list[str] = []
    try:
        _sqlite_copy(db, temp, ctx.remaining())
        problems = _integrity(temp, ctx.remaining())
        content = "" if problems else content_digest(temp, ctx.remaining())
    except sqlite3.Error as exc:
        broken = f"the backup API could not copy or read it: {exc}"
    if not broken and problems:
        broken = f"integrity_check found {len(problems)} problem(s)"
    if broken:
        temp.unlink(missing_ok=True)
        if not forensic:
            return StepResult(False, f"backup of {db} failed: {broken}", _problems_shown(problems),
                              {"integrity_problems": len(problems), "integrity_check": problems})
        return _sqlite_forensic_raw(ctx, db, target, broken)
    digest = sha256_file(temp)
    _clear_companions(target)
    os.replace(temp, target)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    target.with_name(target.name + CONTENT_SUFFIX).write_text(f"{content}  {target.name}\n")
    measured = {"sha256": digest, "content_sha256": content, "bytes": target.stat().st_size}
    if forensic:
        return StepResult(True, f"forensic copy of {db.name} as it was before the rollback at {target} "
                                f"(integrity_check ok, content sha256 {content[:12]})",
                          measured={**measured, "forensic": True, "kept": True})
    return StepResult(True, f"{db.name} backed up to {target} (integrity_check ok, content sha256 {content[:12]}, "
                            f"file sha256 {digest[:12]})", measured=measured)


def _sqlite_forensic_raw(ctx: StepContext, db: Path, target: Path, broken: str) -> StepResult:
    """The live database is broken: keep its raw bytes, record what integrity_check says of them."""
    try:
        kept = _raw_copy(db, target)
    except OSError as exc:
        return StepResult(True, f"forensic copy of {db} failed ({exc.strerror or exc}); the live database is broken "
                                f"({broken}); the restore goes on", measured={"forensic": True, "kept": False})
    problems = _integrity(target, ctx.remaining())
    digest = sha256_file(target)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    target.with_name(target.name + CONTENT_SUFFIX).unlink(missing_ok=True)
    said = f"integrity_check found {len(problems)} problem(s)" if problems else "integrity_check of the copy: ok"
    return StepResult(True, f"forensic copy of {db.name} kept as raw bytes at {target} ({', '.join(kept)}): the live "
                            f"database is broken ({broken}; {said}); the restore goes on",
                      _problems_shown(problems),
                      {"forensic": True, "kept": True, "raw": True, "files": kept, "sha256": digest,
                       "bytes": target.stat().st_size, "integrity_problems": len(problems),
                       "integrity_check": problems})


def _recorded(path: Path, suffix: str) -> str | None:
    try:
        return path.with_name(path.name + suffix).read_text().split()[0]
    except (OSError, IndexError):
        return None


def _verified_backup(path: Path, timeout: float) -> str | None:
    """Why the backup at ``path`` cannot be restored, or ``None``."""
    if not path.is_file():
        return f"no backup at {path}"
    want = _recorded(path, ".sha256")
    if want is None:
        return f"no checksum {path.name}.sha256 beside the backup"
    if sha256_file(path) != want:
        return f"backup {path} changed since it was taken (sha256 differs from {path.name}.sha256)"
    problems = _integrity(path, timeout)
    return None if not problems else f"backup {path} fails integrity_check: {'; '.join(problems[:3])}"


def _restore_into(source: Path, db: Path, timeout: float) -> str:
    """Restore ``source`` into the live ``db`` with the backup API (the live file keeps its inode,
    so a service holding it open sees the restored content). A live file that SQLite cannot open
    at all (not a database, truncated) is emptied in place first; what was done."""
    try:
        _sqlite_copy(source, db, timeout)
        return "backup API"
    except sqlite3.DatabaseError as exc:
        if "malformed" not in str(exc) and "not a database" not in str(exc):
            raise
        first = str(exc)
    with open(db, "r+b") as fh:  # the same inode, emptied: an empty file is an empty database
        fh.truncate(0)
    _sqlite_copy(source, db, timeout)
    return f"backup API into the emptied file (it could not be written as a database: {first})"


def _sqlite_restore(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    db = ctx.path(ctx.params["db"])
    problem = _verified_backup(source, ctx.remaining())
    if problem:
        return StepResult(False, f"{problem}; nothing restored")
    details = []
    want = _recorded(source, CONTENT_SUFFIX)
    try:
        if want is None:
            want = content_digest(source, ctx.remaining())
            details.append(f"no {source.name}{CONTENT_SUFFIX} beside the backup (taken by an older version): the "
                           "restore point's content digest was computed from the verified backup now")
        how = _restore_into(source, db, ctx.remaining())
        problems = _integrity(db, ctx.remaining())
        got = content_digest(db, ctx.remaining()) if not problems else ""
    except (sqlite3.Error, OSError) as exc:
        return StepResult(False, f"restore of {db} from {source} failed: {exc}", details)
    measured = {"content_sha256": got or None, "restore_point_content_sha256": want, "sha256": sha256_file(db),
                "backup_sha256": _recorded(source, ".sha256")}
    details.append(f"restored with the {how}")
    if problems:
        return StepResult(False, f"restored {db} fails integrity_check: {len(problems)} problem(s)",
                          details + _problems_shown(problems),
                          {**measured, "integrity_problems": len(problems), "integrity_check": problems})
    if got != want:
        return StepResult(False, f"restored {db.name} does not equal the restore point: content sha256 {got[:12]} "
                                 f"!= {want[:12]} (another process may still write to it)", details, measured)
    return StepResult(True, f"{db.name} restored from {source} and equals it: content sha256 {got[:12]} "
                            "(integrity_check ok)", details, measured)


def _sqlite_restore_ready(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    problem = _verified_backup(source, ctx.remaining())
    return StepResult(False, problem) if problem else StepResult(True, f"backup {source} is there and verifies")


# -- releases -----------------------------------------------------------------------------------


def _symlink(ctx: StepContext) -> StepResult:
    link = ctx.path(ctx.params["link"])
    target = Path(os.path.realpath(ctx.path(ctx.params["to"])))
    if not target.exists():
        return StepResult(False, f"release to revert to does not exist: {target}")
    before = os.path.realpath(link) if link.is_symlink() else None
    # The link keeps its form: a relative link (current -> releases/0.64) stays relative, so it
    # survives a moved release root; ``relative`` says which form to write when there was no link.
    was = os.readlink(link) if link.is_symlink() else None
    relative = ctx.params.get("relative", was is not None and not os.path.isabs(was))
    written = os.path.relpath(target, os.path.realpath(link.parent)) if relative else str(target)
    atomic_symlink(link, written)
    return StepResult(True, f"{link.name} -> {written} (was {was or 'not a link'})",
                      measured={"from": before, "to": str(target), "link_was": was, "link": written,
                                "relative": bool(relative)})


def _symlink_backup_into(ctx: StepContext, target: Path, forensic: bool) -> StepResult:
    link = ctx.path(ctx.params["link"])
    if not link.exists():
        if not forensic:
            return StepResult(False, f"{link} does not exist: no release to remember")
        if not link.is_symlink():
            return StepResult(True, f"forensic copy: there is no {link} (nothing to remember); the restore goes on",
                              measured={"forensic": True, "kept": False, "link": None})
        dangling = os.readlink(link)  # remembered as it is: a link to a release that is not there
        _replace_link(target, Path(os.path.realpath(link)))
        return StepResult(True, f"forensic copy: {link.name} is dangling (-> {dangling}, which does not exist); "
                                f"remembered as {target}; the restore goes on",
                          measured={"forensic": True, "kept": True, "release": dangling, "dangling": True})
    live = Path(os.path.realpath(link))
    _replace_link(target, live)
    what = "forensic copy: " if forensic else ""
    return StepResult(True, f"{what}remembered {link.name} -> {live} as {target}",
                      measured={"release": str(live), **({"forensic": True, "kept": True} if forensic else {})})


def _replace_link(link: Path, to: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    atomic_symlink(link, to)


def _symlink_ready(ctx: StepContext) -> StepResult:
    target = Path(os.path.realpath(ctx.path(ctx.params["to"])))
    if not target.exists():
        return StepResult(False, f"release to revert to does not exist: {ctx.params['to']} ({target})")
    return StepResult(True, f"release to revert to is there: {target}")


# -- processes ----------------------------------------------------------------------------------

_started: list[subprocess.Popen[bytes]] = []  # kept so that they are not reaped as garbage


def _pid(ctx: StepContext) -> int | None:
    try:
        return int(ctx.path(ctx.params["pidfile"]).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # our own child, and it has ended
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_dead(pid: int, until: float) -> bool:
    while time.monotonic() < until:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _address(probe: Mapping[str, Any]) -> tuple[str, int] | None:
    """The host and port a health probe reaches, if it names one."""
    if "url" in probe:
        parts = urllib.parse.urlsplit(probe["url"])
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        return (parts.hostname or "127.0.0.1"), port
    if "tcp" in probe:
        host, _, port = probe["tcp"].rpartition(":")
        return host.strip("[]"), int(port)
    return None


def _accepts(address: tuple[str, int], timeout: float) -> bool:
    try:
        with socket.create_connection(address, timeout=max(timeout, 0.05)):
            return True
    except OSError:
        return False


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _owners(address: tuple[str, int]) -> list[int]:
    """The pids holding a socket that listens on the probe's port, from ``/proc`` (Linux): empty
    when the host is not this machine's loopback or ``/proc`` cannot tell."""
    if not _is_local(address[0]):
        return []
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == address[1]:
                inodes.add(f"socket:[{fields[9]}]")
    owners: list[int] = []
    if not inodes:
        return owners
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") in inodes:
                    owners.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(owners)


def _descends(pid: int, ancestor: int) -> bool:
    """Is ``pid`` the process ``ancestor`` or one of its descendants (a forking server's worker)?"""
    for _ in range(64):
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid <= 1:
            return False
    return False


def _described(pids: list[int]) -> str:
    shown = []
    for pid in pids[:3]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                command = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            command = ""
        shown.append(f"pid {pid}" + (f" ({command[:80]})" if command else ""))
    return ", ".join(shown) + (" ..." if len(pids) > 3 else "")


def _still_served(ctx: StepContext) -> str | None:
    """After a stop: what still answers at the ``healthy`` probe's address (within a second), or ``None``."""
    probe = ctx.params.get("healthy") or {}
    address = _address(probe)
    if address is None:
        return None
    until = time.monotonic() + min(1.0, max(ctx.remaining(), 0))
    while _accepts(address, 0.5):
        if time.monotonic() >= until:
            owners = _owners(address)
            what = f"{probe.get('url') or probe['tcp']} still answers"
            return what + (f" (served by {_described(owners)})" if owners else "")
        time.sleep(0.1)
    return None


def _process_stop(ctx: StepContext) -> StepResult:
    pid = _pid(ctx)
    if pid is None or not _alive(pid):
        state = f"pidfile {ctx.params['pidfile']}: {'no live process' if pid else 'absent'}"
        served = _still_served(ctx)
        if served:
            return StepResult(False, f"the service still answers: {served}, but {state}: it was not stopped "
                                     "(started without this pidfile, or by something else)", measured={"pid": pid})
        confirmed = " and its health probe no longer answers" if ctx.params.get("healthy") else ""
        return StepResult(True, f"not running ({state}){confirmed}")
    grace = parse_duration(ctx.params.get("grace", 5))
    os.kill(pid, signal.SIGTERM)
    if _wait_dead(pid, time.monotonic() + min(grace, max(ctx.remaining(), 0))):
        result = StepResult(True, f"pid {pid} stopped with SIGTERM", measured={"pid": pid, "signal": "SIGTERM"})
    else:
        os.kill(pid, signal.SIGKILL)
        if not _wait_dead(pid, time.monotonic() + 5):
            return StepResult(False, f"pid {pid} is still alive after SIGKILL")
        result = StepResult(True, f"pid {pid} ignored SIGTERM for {grace:g}s; killed with SIGKILL",
                            measured={"pid": pid, "signal": "SIGKILL"})
    served = _still_served(ctx)
    if served:
        return StepResult(False, f"{result.summary}, but the service still answers: {served}", result.details,
                          result.measured)
    return result


def _process_stop_ready(ctx: StepContext) -> StepResult:
    pid = _pid(ctx)
    state = f"pid {pid} running" if pid and _alive(pid) else "not running now"
    return StepResult(True, f"stops the process in {ctx.params['pidfile']} ({state})")


def _healthy(ctx: StepContext, timeout: float) -> str | None:
    """``None`` when the started service answers its health probe, else what it said."""
    probe = ctx.params.get("healthy") or {}
    if "url" in probe:
        try:
            response = http_pool().request("GET", probe["url"], timeout=urllib3.Timeout(total=max(timeout, 0.1)),
                                           retries=False, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            return f"GET {probe['url']} failed: {exc}"
        return None if 200 <= response.status < 300 else f"GET {probe['url']} answered {response.status}"
    if "tcp" in probe:
        host, _, port = probe["tcp"].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=max(timeout, 0.1)):
                return None
        except OSError as exc:
            return f"TCP connect to {probe['tcp']} failed: {exc.strerror or exc}"
    return None


def _not_serving(address: tuple[str, int] | None, pid: int) -> str | None:
    """Who serves the probe's port when that is provably not ``pid`` (nor its children), else ``None``."""
    if address is None:
        return None
    owners = _owners(address)
    if not owners or any(_descends(owner, pid) for owner in owners):
        return None
    return f"port {address[1]} is served by {_described(owners)}, not by pid {pid}"


def _already_running(ctx: StepContext, pid: int, address: tuple[str, int] | None,
                     wait: float) -> StepResult | None:
    """The pidfile's process is alive: wait (within ``wait``) until it is healthy; ``None`` when it
    exits meanwhile (then a new one is started)."""
    started = time.monotonic()
    last = "not probed yet"
    while True:
        if not _alive(pid):
            return None
        last = _healthy(ctx, 1.0) or ""
        if not last:
            other = _not_serving(address, pid)
            if other:
                return StepResult(False, f"pid {pid} from {ctx.params['pidfile']} is running, but {other}",
                                  measured={"pid": pid})
            took = round(time.monotonic() - started, 3)
            return StepResult(True, f"already running and healthy (pid {pid})" + (f" after {took}s" if took > 0.5
                                                                                    else ""),
                              measured={"pid": pid})
        if time.monotonic() - started >= wait:
            return StepResult(False, f"pid {pid} from {ctx.params['pidfile']} is running but not healthy within "
                                     f"{wait:g}s: {last}; not starting a second copy", measured={"pid": pid})
        time.sleep(0.1)


def _process_start(ctx: StepContext) -> StepResult:
    probe = ctx.params.get("healthy") or {}
    address = _address(probe)
    wait = min(parse_duration(ctx.params.get("wait", 10)), max(ctx.remaining(), 0))
    pidfile = ctx.path(ctx.params["pidfile"]) if "pidfile" in ctx.params else None
    pid = _pid(ctx) if pidfile else None
    if pid and _alive(pid):
        running = _already_running(ctx, pid, address, wait)
        if running is not None:
            return running
    if address and _accepts(address, 0.5):
        owners = _owners(address)
        why = f"{ctx.params['pidfile']} names no live process" if pidfile else "this step has no pidfile"
        by = f" ({_described(owners)})" if owners else ""
        return StepResult(False, f"port {address[0]}:{address[1]} already served by another process{by} and {why}: "
                                 "not starting a second copy (stop the running one first)",
                          measured={"port": address[1], "served_by": owners})
    log_path = ctx.path(ctx.params.get("log", os.devnull))
    env = dict(os.environ)
    env.update({k: str(v) for k, v in ctx.params.get("env", {}).items()})
    started = time.monotonic()
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(list(ctx.params["argv"]), cwd=ctx.path(ctx.params.get("cwd", ".")), env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            return StepResult(False, f"{ctx.params['argv'][0]} could not start: {exc.strerror or exc}")
    _started.append(proc)
    if pidfile is not None:  # always the process just started: a stale pid would make the next stop miss it
        atomic_write(pidfile, f"{proc.pid}\n".encode())
    last = "not probed yet"
    while time.monotonic() - started < wait:
        if proc.poll() is not None:
            return StepResult(False, f"exited with {proc.returncode} while starting", _log_tail(log_path),
                              {"pid": proc.pid, "exit_code": proc.returncode})
        last = _healthy(ctx, 1.0) or ""
        if not last:
            took = round(time.monotonic() - started, 3)
            if proc.poll() is not None:  # the probe was answered, but not by this process
                return StepResult(False, f"exited with {proc.returncode} while starting; the health probe was "
                                         "answered by another process", _log_tail(log_path),
                                  {"pid": proc.pid, "exit_code": proc.returncode})
            other = _not_serving(address, proc.pid)
            if other:
                return StepResult(False, f"started pid {proc.pid}, but the health probe was answered by another "
                                         f"process: {other}", _log_tail(log_path), {"pid": proc.pid})
            return StepResult(True, f"started pid {proc.pid}, healthy after {took}s and still running",
                              measured={"pid": proc.pid, "healthy_after_s": took})
        time.sleep(0.1)
    return StepResult(False, f"started pid {proc.pid} but it was not healthy within {wait:g}s: {last}",
                      _log_tail(log_path), {"pid": proc.pid})


def _log_tail(path: Path) -> list[str]:
    try:
        return path.read_text("utf-8", "replace").splitlines()[-20:]
    except OSError:
        return []


def _process_start_ready(ctx: StepContext) -> StepResult:
    program = ctx.params["argv"][0]
    cwd = ctx.path(ctx.params.get("cwd", "."))
    if not (shutil.which(program) or (cwd / program).is_file()):
        return StepResult(False, f"program {program!r} is not found")
    return StepResult(True, f"starts {program}")


# -- verify and hooks ---------------------------------------------------------------------------


def _verify(ctx: StepContext) -> StepResult:
    assert ctx.verify is not None
    return ctx.verify(list(ctx.params.get("gates", [])))


def _verify_ready(ctx: StepContext) -> StepResult:
    return StepResult(True, "judges the validation gates again after the rollback")


def _hook(ctx: StepContext) -> StepResult:
    assert ctx.call_hook is not None
    result = ctx.call_hook(ctx)
    if result is None:
        return StepResult(False, "no pytest_release_rollback_step hook implementation performed this step")
    return result


def _hook_ready(ctx: StepContext) -> StepResult:
    if ctx.call_hook is None:
        return StepResult(False, "no pytest_release_rollback_step hook is implemented (conftest.py or a plugin)")
    result = ctx.call_hook(ctx)
    if result is None:
        return StepResult(False, "no pytest_release_rollback_step implementation answered for this step")
    return result


_PROBE = {"type": "object", "additionalProperties": False, "maxProperties": 1,
          "properties": {"url": {"type": "string", "pattern": "^https?://"},
                         "tcp": {"type": "string", "pattern": r"^[^:\s]+:[0-9]{1,5}$"}},
          "description": "a health probe: {url: ...} (2xx) or {tcp: host:port}"}
_ARGV = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_ENV = ENV_SCHEMA

ACTIONS: dict[str, ActionKind] = {a.name: a for a in (
    ActionKind("command", {
        "type": "object", "additionalProperties": False,
        "properties": {"argv": _ARGV, "shell": {"type": "string", "minLength": 1}, "cwd": {"type": "string"},
                       "env": _ENV, "timeout": DURATION_SCHEMA, "exit_code": {"type": "integer"},
                       "max_output": MAX_OUTPUT_PARAM},
        "oneOf": [{"required": ["argv"]}, {"required": ["shell"]}],
        "description": "a command: argv (a list, no shell) or shell (a string for /bin/sh -c), not both"},
        _command, _command_ready, description="run a program; it must exit 0 (or exit_code)"),
    ActionKind("file_backup", _obj({"files": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                    "to": {"type": "string"}}, ("files", "to"), "files to back up, and where"),
               *_backup(_file_backup_into), backup=True,
               description="copy files (globs) with a SHA256SUMS into a backup folder"),
    ActionKind("file_restore", _obj({"from": {"type": "string"}, "to": {"type": "string"},
                                     "exact": {"type": "boolean"}}, ("from",),
                                    "a backup folder to restore from; exact (default true): remove the files "
                                    "added since the backup"),
               _file_restore, _file_restore_ready,
               description="verify a file backup, put its files back, remove the files added since"),
    ActionKind("sqlite_backup", _obj({"db": {"type": "string"}, "to": {"type": "string"}}, ("db", "to"),
                                     "a SQLite database and where its backup goes"),
               *_backup(_sqlite_backup_into), backup=True,
               description="SQLite backup API copy, integrity-checked, with its file and content SHA-256"),
    ActionKind("sqlite_restore", _obj({"db": {"type": "string"}, "from": {"type": "string"}}, ("db", "from"),
                                      "a SQLite database and the backup to restore into it"),
               _sqlite_restore, _sqlite_restore_ready,
               description="verify a SQLite backup, restore it into the live database, prove the content equal"),
    ActionKind("symlink", _obj({"link": {"type": "string"}, "to": {"type": "string"},
                                "relative": {"type": "boolean", "description": "write a relative link (default: "
                                             "the form the link had; absolute when there was none)"}},
                               ("link", "to"),
                               "a symlink and the release it should point to"),
               _symlink, _symlink_ready, description="switch a symlink to another release, atomically"),
    ActionKind("symlink_backup", _obj({"link": {"type": "string"}, "to": {"type": "string"}}, ("link", "to"),
                                      "a symlink whose release to remember, and where"),
               *_backup(_symlink_backup_into), backup=True,
               description="remember the release a symlink points to (the release to revert to)"),
    ActionKind("process_stop", _obj({"pidfile": {"type": "string"}, "grace": DURATION_SCHEMA, "healthy": _PROBE},
                                    ("pidfile",), "a pidfile, how long SIGTERM may take before SIGKILL, and the "
                                    "health probe that must no longer answer after the stop"),
               _process_stop, _process_stop_ready,
               description="SIGTERM, then SIGKILL after the grace period; then the service must no longer answer"),
    ActionKind("process_start", _obj({"argv": _ARGV, "cwd": {"type": "string"}, "env": _ENV,
                                      "pidfile": {"type": "string"}, "log": {"type": "string"},
                                      "healthy": _PROBE, "wait": DURATION_SCHEMA}, ("argv",),
                                     "a program to start in the background, and how to tell it is healthy"),
               _process_start, _process_start_ready,
               description="start a service and wait until it is healthy and its own process serves"),
    ActionKind("verify", _obj({"gates": {"type": "array", "items": {"type": "string"}}}, (),
                              "the validation gates to judge again"),
               _verify, _verify_ready, description="judge validation gates again against the restored system"),
    ActionKind("hook", {"type": "object", "description": "parameters passed to the hook"},
               _hook, _hook_ready, description="a pytest_release_rollback_step hook in conftest.py or a plugin"),
)}

