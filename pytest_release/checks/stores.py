"""Data stores, read-only: a SQLite file or a PostgreSQL database behind one small interface.

:func:`open_store` opens the target's store (through :mod:`pytest_release.db`) within the gate's
budget: SQLite read-only
(``file:...?mode=ro``) with a progress handler that stops a query at the deadline; PostgreSQL
through psycopg 3 (the optional extra ``pytest-release[postgres]``) with ``connect_timeout``
and ``statement_timeout`` from the budget left and read-only transactions. A store is named
by :attr:`Store.label`: the SQLite path as written, or ``postgres host:port/dbname``; a DSN
(which may hold a password) never appears in a message.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..db import PSYCOPG_MISSING, Database, DatabaseError, dsn_label, open_postgres, open_sqlite
from .base import CheckContext

__all__ = ["PSYCOPG_MISSING", "Store", "StoreError", "dsn_label", "open_store"]


class StoreError(Exception):
    """The store cannot be opened or a query failed; the message is safe to show."""


def _norm(value: object) -> object:
    """A value in one form across engines: 1 == 1.0 == Decimal('1') == True, bytes as hex."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (float, decimal.Decimal)):
        if value == value and value not in (float("inf"), float("-inf")) and value == int(value):
            return int(value)
        return repr(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


@dataclass
class TableSum:
    rows: int
    digest: str


@dataclass
class Store:
    """An open, read-only data store (a :class:`pytest_release.db.Database` within a check's budget)."""

    db: Database
    ctx: CheckContext

    @property
    def label(self) -> str:
        return self.db.label

    @property
    def engine(self) -> str:
        """``"sqlite"`` or ``"postgres"``."""
        return self.db.engine

    # -- queries ---------------------------------------------------------------------------------

    def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` (``?`` placeholders for ``args``)."""
        return list(self.iter_query(sql, args))

    def iter_query(self, sql: str, args: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        try:
            if self.engine == "postgres":
                remaining = self.ctx.remaining()
                if remaining <= 0:
                    raise StoreError(f"not run: {self.ctx.budget_text()} was used up")
                self.db.statement_timeout(remaining)
            yield from self.db.iterate(sql, args)
        except DatabaseError as exc:
            message = str(exc)
            if exc.interrupted:
                message = f"interrupted: {self.ctx.budget_text()} ran out"
            elif exc.timed_out:
                message = f"{message}: {self.ctx.budget_text()} ran out"
            raise StoreError(message) from None

    # -- tables ----------------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """The user tables, sorted: ``name`` (PostgreSQL: ``schema.name`` outside ``public``)."""
        if self.engine == "sqlite":
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            return sorted(r[0] for r in rows)
        # pg_class, not information_schema: that hides the tables this role may not read.
        rows = self.query("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                          "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
                          "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                          "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'")
        return sorted(name if schema == "public" else f"{schema}.{name}" for schema, name in rows)

    def quote(self, table: str) -> str:
        parts = table.split(".", 1) if self.engine == "postgres" else [table]
        return ".".join('"' + p.replace('"', '""') + '"' for p in parts)

    def columns(self, table: str) -> list[str]:
        if self.engine == "sqlite":
            return [r[1] for r in self.query(f"PRAGMA table_info({self.quote(table)})")]
        return [r[0] for r in self.query(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = ?::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", (self.quote(table),))]

    def primary_key(self, table: str) -> list[str]:
        if self.engine == "sqlite":
            rows = self.query(f"PRAGMA table_info({self.quote(table)})")
            return [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
        rows = self.query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = ?::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)", (self.quote(table),))
        return [r[0] for r in rows]

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {self.quote(table)}")[0][0])

    def checksum(self, table: str) -> TableSum:
        """Rows and a SHA-256 of the table's rows, read in primary-key (else rowid) order.

        Columns are taken by name in sorted order and values normalised (see :func:`_norm`), and
        the row hashes are summed, so a SQLite table and a PostgreSQL table holding the same
        rows give the same checksum whatever each engine's collation does to the order.
        """
        columns = sorted(self.columns(table))
        key = self.primary_key(table)
        if key:
            order = ", ".join(self.quote(c) for c in key)
        elif self.engine == "sqlite":
            order = "rowid"
        else:
            order = ", ".join(self.quote(c) for c in columns)
        select = ", ".join(self.quote(c) for c in columns)
        total = 0
        rows = 0
        for row in self.iter_query(f"SELECT {select} FROM {self.quote(table)} ORDER BY {order}"):
            encoded = json.dumps([_norm(v) for v in row], separators=(",", ":"), ensure_ascii=False)
            total = (total + int.from_bytes(hashlib.sha256(encoded.encode()).digest(), "big")) % (1 << 256)
            rows += 1
            if rows % 10_000 == 0 and self.ctx.remaining() <= 0:
                raise StoreError(f"checksum of {table} stopped: {self.ctx.budget_text()} ran out")
        header = json.dumps(columns).encode()
        return TableSum(rows, hashlib.sha256(header + total.to_bytes(32, "big")).hexdigest())

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(ctx: CheckContext, spec: Any) -> Store:
    """Open a target's data store read-only; :class:`StoreError` says why it cannot be."""
    remaining = ctx.remaining()
    if "sqlite" in spec:
        value = spec["sqlite"]
        path = ctx.path(value)
        if not path.is_file():
            raise StoreError(f"SQLite database {value} does not exist")
        if remaining <= 0:
            raise StoreError(f"{value} not opened: {ctx.budget_text()} was used up")
        try:
            db = open_sqlite(path, timeout=remaining, read_only=True, deadline=ctx.deadline, label=str(value))
        except DatabaseError as exc:
            raise StoreError(f"cannot open SQLite database {value}: {exc}") from None
        return Store(db, ctx)
    dsn = str(spec["dsn"])
    label = dsn_label(dsn)
    try:
        import psycopg  # noqa: F401  (said before the budget: a missing driver is no budget matter)
    except ImportError:
        raise StoreError(PSYCOPG_MISSING) from None
    if remaining <= 0:
        raise StoreError(f"{label} not connected: {ctx.budget_text()} was used up")
    try:
        db = open_postgres(dsn, connect_timeout=max(2, int(remaining + 0.999)), statement_timeout=remaining,
                           read_only=True, autocommit=True)
    except DatabaseError as exc:
        raise StoreError(f"cannot connect to {label}: {exc}") from None
    return Store(db, ctx)
