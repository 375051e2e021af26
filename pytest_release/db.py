"""SQL databases: a SQLite file or a PostgreSQL database behind one small interface.

Used by the checks' data stores (:mod:`pytest_release.checks.stores`, read-only, within a gate's
budget) and by the analytics history store (:mod:`pytest_release.analytics`, read-write).

- :func:`open_sqlite` opens a file: read-only (``file:...?mode=ro``, and the file must be a
  database) or read-write (its folder is made); with a ``deadline``, a progress handler stops a
  query once the deadline (monotonic) has passed.
- :func:`open_postgres` connects with psycopg 3 (the optional extra ``pytest-release[postgres]``),
  optionally in read-only transactions and with a ``statement_timeout``.
- :func:`is_postgres` tells a DSN (``postgresql://...``, ``postgres://...``, ``dbname=...``)
  from a file name.

One placeholder convention for both engines: ``?`` (SQLite's ``qmark``). For PostgreSQL a
statement with arguments is rewritten to psycopg's ``%s`` by :func:`to_pyformat` (a ``?`` inside
a quoted literal, a quoted name or a comment stays as it is, and a ``%`` is doubled); a statement
without arguments goes to the server as written.

Every driver error becomes a :class:`DatabaseError` whose message is safe to show: its first line,
with the DSN and its password masked (:func:`scrub`). A failed PostgreSQL statement is rolled back,
so the connection stays usable. A store is named by a label: the SQLite path as written, or
``postgres host:port/dbname`` (:func:`dsn_label`); a DSN never appears in a message.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["PSYCOPG_MISSING", "Database", "DatabaseError", "dsn_label", "is_postgres", "open_postgres",
           "open_sqlite", "scrub", "to_pyformat"]

PSYCOPG_MISSING = "psycopg is not installed: pip install 'pytest-release[postgres]'"


class DatabaseError(Exception):
    """A database cannot be opened or a statement failed; ``str()`` is safe to show.

    ``interrupted``: a SQLite statement stopped at its deadline; ``timed_out``: PostgreSQL's
    ``statement_timeout`` ended it.
    """

    def __init__(self, message: str, *, interrupted: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.interrupted = interrupted
        self.timed_out = timed_out


def is_postgres(location: str) -> bool:
    """Whether ``location`` is a PostgreSQL DSN (a URL or ``key=value`` pairs) rather than a file."""
    return location.startswith(("postgresql://", "postgres://")) or "dbname=" in location


def dsn_label(dsn: str) -> str:
    """``postgres host:port/dbname`` for a DSN, without user or password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(dsn)
    except Exception:
        match = re.match(r"^\w+://(?:[^@/]*@)?([^/?]*)/?([^?]*)", dsn)
        info = {"host": match.group(1), "dbname": match.group(2)} if match else {}
    host = str(info.get("host") or "localhost")
    port = info.get("port")
    where = f"{host}:{port}" if port else host
    return f"postgres {where}/{info.get('dbname') or ''}".rstrip("/")


def scrub(message: str, dsn: str) -> str:
    """A driver's message on one line, with ``dsn`` shown as ``<dsn>`` and its password as ``***``."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        password = None
    text = message.replace(dsn, "<dsn>") if dsn else message
    if password:
        text = text.replace(str(password), "***")
    return " ".join(text.split())


_TOKENS = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*.*?(?:\*/|\Z)|[?%]", re.DOTALL)


def to_pyformat(sql: str) -> str:
    """``sql`` written with ``?`` placeholders, for psycopg: each ``?`` outside quoted literals,
    quoted names and comments becomes ``%s``, and every ``%`` becomes ``%%`` (psycopg reads a
    ``%`` anywhere in a statement that has arguments)."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        return token.replace("%", "%%")

    return _TOKENS.sub(swap, sql)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_psycopg_error(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.Error)


class Database:
    """An open database: ``engine`` is ``"sqlite"`` or ``"postgres"``, ``conn`` the driver's
    connection, ``label`` its name for people. Statements use ``?`` placeholders."""

    def __init__(self, engine: str, conn: Any, label: str, dsn: str = "") -> None:
        self.engine = engine
        self.conn = conn
        self.label = label
        self._dsn = dsn
        self._closed = False

    @property
    def postgres(self) -> bool:
        return self.engine == "postgres"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A driver's error as a :class:`DatabaseError` (a failed PostgreSQL statement rolled back)."""
        try:
            yield
        except sqlite3.Error as exc:
            message = str(exc)
            raise DatabaseError(message, interrupted=message == "interrupted") from None
        except Exception as exc:  # psycopg.Error: its module is optional
            if not self.postgres or not _is_psycopg_error(exc):
                raise
            self.rollback()
            message = scrub(_first_line(exc), self._dsn)
            raise DatabaseError(message, timed_out="statement timeout" in message) from None

    def _statement(self, sql: str, args: Sequence[object]) -> tuple[str, tuple[object, ...] | None]:
        if not self.postgres:
            return sql, tuple(args)
        return (to_pyformat(sql), tuple(args)) if args else (sql, None)

    def iterate(self, sql: str, args: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a statement as they are read (none for a statement that returns none)."""
        sql, params = self._statement(sql, args)
        with self._errors():
            if not self.postgres:
                yield from self.conn.execute(sql, params)
                return
            with self.conn.cursor() as cursor:
                cursor.execute(sql, params)
                if cursor.description is not None:
                    yield from cursor

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Every row of a statement (an empty list for a statement that returns none)."""
        return list(self.iterate(sql, args))

    def execute(self, sql: str, args: Sequence[object] = ()) -> int:
        """Run a statement that returns no rows (INSERT, UPDATE, DELETE); how many rows it touched."""
        sql, params = self._statement(sql, args)
        with self._errors():
            if not self.postgres:
                return int(self.conn.execute(sql, params).rowcount)
            with self.conn.cursor() as cursor:
                cursor.execute(sql, params)
                return int(cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run a statement once for each row of arguments."""
        batch = [tuple(row) for row in rows]
        if not batch:
            return
        with self._errors():
            if not self.postgres:
                self.conn.executemany(sql, batch)
                return
            with self.conn.cursor() as cursor:
                cursor.executemany(to_pyformat(sql), batch)

    def statement_timeout(self, seconds: float) -> None:
        """PostgreSQL: end each following statement after ``seconds`` (at least 1 ms). SQLite has
        no such setting (its statements stop at the deadline given to :func:`open_sqlite`)."""
        if self.postgres:
            with self._errors():
                self.conn.execute(f"SET statement_timeout = {max(1, int(seconds * 1000))}")

    def commit(self) -> None:
        with self._errors():
            self.conn.commit()

    def rollback(self) -> None:
        """Roll the open transaction back; a connection that cannot is left as it is."""
        try:
            self.conn.rollback()
        except Exception:
            pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.conn.close()
            except Exception:
                pass

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sqlite(path: Path, *, timeout: float, read_only: bool = False, deadline: float | None = None,
                label: str | None = None) -> Database:
    """Open the SQLite file at ``path``; ``timeout`` is how long to wait for a lock.

    ``read_only``: opened with ``mode=ro`` and read once, so a file that is not a database fails
    here; else its folder is made and the file created if need be. ``deadline`` (monotonic): a
    statement still running then stops with an ``interrupted`` :class:`DatabaseError`. The
    error's message is the driver's (or the system's) words.
    """
    name = label if label is not None else str(path)
    try:
        if read_only:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=timeout)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error:
                conn.close()
                raise
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=timeout)
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseError(str(exc)) from None
    if deadline is not None:
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    return Database("sqlite", conn, name)


def open_postgres(dsn: str, *, connect_timeout: int, statement_timeout: float | None = None,
                  read_only: bool = False, autocommit: bool = False) -> Database:
    """Connect to the PostgreSQL database of ``dsn`` (psycopg 3), waiting at most
    ``connect_timeout`` seconds; ``statement_timeout`` (seconds) bounds each statement and
    ``read_only`` makes every transaction read-only. The error's message is scrubbed."""
    try:
        import psycopg
    except ImportError:
        raise DatabaseError(PSYCOPG_MISSING) from None
    options = []
    if read_only:
        options.append("-c default_transaction_read_only=on")
    if statement_timeout is not None:
        options.append(f"-c statement_timeout={max(1, int(statement_timeout * 1000))}")
    try:
        extra: dict[str, Any] = {"options": " ".join(options)} if options else {}
        conn = psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=autocommit, **extra)
    except psycopg.Error as exc:
        raise DatabaseError(scrub(str(exc).strip() or type(exc).__name__, dsn)) from None
    return Database("postgres", conn, dsn_label(dsn), dsn)
