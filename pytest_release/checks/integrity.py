"""``integrity``: are the bytes what they should be?

For an artifacts target, every file in its ``sha256sum``-format manifest is hashed (SHA-256,
64 KiB reads into one buffer, files hashed concurrently) and compared. For a SQLite data store,
``PRAGMA integrity_check`` (or ``quick_check`` with ``quick: true``) must answer ``ok``. For a
PostgreSQL store (``dsn``, through psycopg 3), the server must answer ``SELECT 1``, its catalog
must know the current database, and every user table must be readable (``SELECT count(*)``; the
counts are reported; ``quick: true`` skips them).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .base import CheckContext, CheckKind, CheckResult
from .stores import StoreError, open_store

__all__ = ["INTEGRITY", "parse_manifest", "sha256_file", "sqlite_problems"]

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "quick": {"type": "boolean", "description": "SQLite: PRAGMA quick_check instead of integrity_check; "
                                                     "PostgreSQL: skip the per-table row counts"},
        "name": {"type": "string", "description": "names the item (integrity-NAME[target])"},
    },
}

CHUNK = 64 * 1024
#: The most problems ``integrity_check`` lists before it stops (SQLite's own default is 100).
MAX_PROBLEMS = 1000
_GNU_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_BSD_LINE = re.compile(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$")


def sha256_file(path: Path, deadline: float | None = None) -> str:
    """Hex SHA-256 of a file, read in 64 KiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while True:
            count = fh.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(str(path))
    return digest.hexdigest()


def parse_manifest(text: str) -> tuple[list[tuple[str, str, int]], list[str]]:
    """``[(hex, relative path, line)]`` and the malformed lines, from sha256sum or BSD format."""
    entries: list[tuple[str, str, int]] = []
    bad: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        gnu = _GNU_LINE.match(line)
        bsd = _BSD_LINE.match(line) if not gnu else None
        if gnu:
            entries.append((gnu.group(1).lower(), gnu.group(2), number))
        elif bsd:
            entries.append((bsd.group(2).lower(), bsd.group(1), number))
        else:
            bad.append(f"line {number}: not a sha256sum line: {line[:80]!r}")
    return entries, bad


def _manifest(ctx: CheckContext, manifest_value: str) -> CheckResult:
    manifest = ctx.path(manifest_value)
    expected = {"mismatches": 0, "missing": 0}
    try:
        text = manifest.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return CheckResult(False, f"cannot read manifest {manifest_value}: {exc}", {}, expected)
    entries, bad = parse_manifest(text)
    if not entries and not bad:
        return CheckResult(False, f"manifest {manifest_value} lists no files", {"files": 0}, {"files": ">= 1"})
    root = manifest.parent

    def check(entry: tuple[str, str, int]) -> str | None:
        want, name, number = entry
        path = root / name
        try:
            got = sha256_file(path, ctx.deadline)
        except FileNotFoundError:
            return f"{name}: missing (manifest line {number})"
        except TimeoutError:
            return f"{name}: not hashed: {ctx.budget_text()} ran out"
        except OSError as exc:
            return f"{name}: cannot read: {exc.strerror or exc}"
        if got != want:
            return f"{name}: sha256 {got} does not match the manifest's {want} (line {number})"
        return None

    with ThreadPoolExecutor(max_workers=min(4, len(entries) or 1)) as pool:
        problems = bad + [p for p in pool.map(check, entries) if p]
    missing = sum(1 for p in problems if ": missing" in p)
    measured = {"files": len(entries), "mismatches": len(problems) - missing, "missing": missing}
    if problems:
        return CheckResult(False, f"{len(problems)} of {len(entries)} file(s) in {manifest_value} "
                                  f"do not match: {problems[0]}", measured, expected, problems)
    return CheckResult(True, f"{len(entries)} file(s) match {manifest_value}", measured, expected)


def _sqlite(ctx: CheckContext, db_value: str) -> CheckResult:
    path = ctx.path(db_value)
    pragma = "quick_check" if ctx.params.get("quick") else "integrity_check"
    expected = {pragma: "ok"}
    if not path.is_file():
        return CheckResult(False, f"SQLite database {db_value} does not exist", {"exists": False}, expected)
    remaining = ctx.remaining()
    if remaining <= 0:
        return CheckResult(False, f"{pragma} of {db_value} not run: {ctx.budget_text()} was used up", {}, expected)
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=remaining)
    except sqlite3.Error as exc:
        return CheckResult(False, f"cannot open SQLite database {db_value}: {exc}", {}, expected)
    conn.set_progress_handler(lambda: int(time.monotonic() > ctx.deadline), 10_000)
    try:
        rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})")]
    except sqlite3.Error as exc:
        message = str(exc)
        if message == "interrupted":
            message = f"interrupted: {ctx.budget_text()} ran out"
        return CheckResult(False, f"{pragma} of {db_value} failed: {message}", {"error": message}, expected)
    finally:
        conn.close()
    if rows == ["ok"]:
        return CheckResult(True, f"{pragma} of {db_value}: ok", {pragma: "ok"}, expected)
    problems = sqlite_problems(rows)
    count = len(problems)
    at_least = "at least " if count >= MAX_PROBLEMS else ""
    noun = "problem" if count == 1 else "problems"
    measured = {pragma: f"{at_least}{count} {noun}", "problems": count}
    return CheckResult(False, f"{pragma} of {db_value} found {at_least}{count} {noun}; first: {problems[0]}",
                       measured, expected, problems)


def sqlite_problems(rows: list[object]) -> list[str]:
    """One line per problem ``PRAGMA integrity_check`` reported: a row can hold many lines
    (``*** in database main ***`` and a problem a line), and that header is not a problem."""
    lines = [line.strip() for row in rows for line in str(row).splitlines()]
    return [line for line in lines if line and not (line.startswith("*** in database ") and line.endswith("***"))] \
        or [str(rows[0])]


def run(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    if "manifest" in target.spec:
        return _manifest(ctx, target.spec["manifest"])
    if "sqlite" in target.spec:
        return _sqlite(ctx, target.spec["sqlite"])
    return _postgres(ctx, target.spec)


def _postgres(ctx: CheckContext, spec: Any) -> CheckResult:
    quick = bool(ctx.params.get("quick"))
    expected: dict[str, Any] = {"select_1": 1}
    if not quick:
        expected["unreadable_tables"] = 0
    try:
        store = open_store(ctx, spec)
    except StoreError as exc:
        return CheckResult(False, str(exc), {"connected": False}, expected)
    with store:
        measured: dict[str, Any] = {"connected": True}
        try:
            measured["select_1"] = store.query("SELECT 1")[0][0]
            database, version = store.query("SELECT current_database(), current_setting('server_version')")[0]
            known = store.query("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = current_database()")
            tables = store.tables()
        except StoreError as exc:
            return CheckResult(False, f"{store.label}: {exc}", measured, expected)
        measured.update({"server_version": version, "tables": len(tables)})
        if known[0][0] != 1:
            return CheckResult(False, f"{store.label}: pg_catalog.pg_database does not list {database!r}",
                               measured, expected)
        if quick:
            return CheckResult(True, f"{store.label} answers SELECT 1 (PostgreSQL {version}, {len(tables)} "
                                     "table(s); row counts skipped: quick)", measured, expected)
        details: list[str] = []
        bad: list[str] = []
        rows = 0
        for table in tables:
            try:
                count = store.count(table)
            except StoreError as exc:
                bad.append(f"{table}: not readable: {exc}")
                continue
            rows += count
            details.append(f"{table}: {count} row(s)")
        measured.update({"rows": rows, "unreadable_tables": len(bad)})
        if bad:
            return CheckResult(False, f"{len(bad)} of {len(tables)} table(s) of {store.label} are not readable: "
                                      f"{bad[0]}", measured, expected, bad + details)
        return CheckResult(True, f"{store.label}: SELECT 1 ok, {len(tables)} table(s) readable, {rows} row(s) "
                                 f"(PostgreSQL {version})", measured, expected, details)


INTEGRITY = CheckKind(
    name="integrity",
    judges=frozenset({"artifacts", "datastore"}),
    params=PARAMS,
    run=run,
    description="SHA-256 manifest of artifacts; SQLite PRAGMA integrity_check; PostgreSQL: every table readable",
)
