"""``consistency``: does the data agree with itself and with its copy?

On a data store (SQLite or PostgreSQL), read-only:

* ``queries``: SQL assertions. ``{sql, expect: empty}`` must return no rows;
  ``{sql, compare: "<=", value: N}`` must return one value that compares so with ``N``.
* ``parity: OTHER``: row counts and per-table checksums against another data-store target of
  the plan (a backup, a replica; SQLite and PostgreSQL may be compared with each other), naming
  every table that differs.
* ``foreign_keys`` (SQLite, on by default): ``PRAGMA foreign_key_check`` must find nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from .base import CheckContext, CheckKind, CheckResult
from .stores import Store, StoreError, open_store

__all__ = ["CONSISTENCY"]

OPS = {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge,
       ">": operator.gt}

QUERY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sql"],
    "properties": {
        "sql": {"type": "string", "minLength": 1, "description": "a read-only SQL query"},
        "name": {"type": "string", "description": "what the query asserts, shown in messages"},
        "expect": {"enum": ["empty"], "description": "'empty': the query must return no rows"},
        "compare": {"enum": sorted(OPS), "description": "how the query's single value compares with value"},
        "value": {"type": "number", "description": "the threshold the query's single value is compared with"},
    },
    "oneOf": [{"required": ["expect"], "not": {"anyOf": [{"required": ["compare"]}, {"required": ["value"]}]}},
              {"required": ["compare", "value"], "not": {"required": ["expect"]}}],
    "description": "{sql, expect: empty} or {sql, compare: '<=', value: N}",
}

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "queries": {"type": "array", "items": QUERY, "minItems": 1,
                    "description": "SQL assertions: {sql, expect: empty} or {sql, compare: OP, value: N}"},
        "parity": {"type": "string", "description": "another data-store target that must hold the same rows "
                                                    "(row counts and checksums per table)"},
        "tables": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                   "description": "the tables parity compares (default: every user table of either store)"},
        "foreign_keys": {"type": "boolean", "description": "SQLite: run PRAGMA foreign_key_check (default true)"},
        "name": {"type": "string", "description": "names the item (consistency-NAME[target])"},
    },
}


def _short(sql: str, limit: int = 80) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _queries(store: Store, queries: list[Mapping[str, Any]], problems: list[str], details: list[str]) -> int:
    failed = 0
    for number, query in enumerate(queries, 1):
        label = f"query {number}" + (f" ({query['name']})" if query.get("name") else "")
        sql = query["sql"]
        try:
            rows = store.query(sql)
        except StoreError as exc:
            failed += 1
            problems.append(f"{label} failed: {exc}: {_short(sql)}")
            continue
        if query.get("expect") == "empty":
            if rows:
                failed += 1
                problems.append(f"{label} returned {len(rows)} row(s), expected none: {_short(sql)}")
                details.extend(f"  {label} row: {row!r}"[:200] for row in rows[:5])
            else:
                details.append(f"{label}: no rows, as expected")
            continue
        op, want = query["compare"], query["value"]
        if len(rows) != 1 or len(rows[0]) != 1:
            failed += 1
            problems.append(f"{label} returned {len(rows)} row(s) of {len(rows[0]) if rows else 0} column(s), "
                            f"expected one value to compare {op} {want}: {_short(sql)}")
            continue
        got = rows[0][0]
        try:
            ok = OPS[op](float(got), float(want))
        except (TypeError, ValueError):
            failed += 1
            problems.append(f"{label} returned {got!r}, not a number to compare {op} {want}: {_short(sql)}")
            continue
        if ok:
            details.append(f"{label}: {got} {op} {want}")
        else:
            failed += 1
            problems.append(f"{label}: {got} {op} {want} is false: {_short(sql)}")
    return failed


def _parity(store: Store, other: Store, tables: list[str] | None, problems: list[str],
            details: list[str]) -> tuple[int, int]:
    """(tables compared, tables differing)."""
    mine, theirs = store.tables(), other.tables()
    names = tables or sorted(set(mine) | set(theirs))
    differing = 0
    for table in names:
        if table not in mine or table not in theirs:
            differing += 1
            where = other.label if table not in mine else store.label
            problems.append(f"table {table}: only in {where}")
            continue
        a, b = store.checksum(table), other.checksum(table)
        if a.rows != b.rows:
            differing += 1
            problems.append(f"table {table}: {a.rows} row(s) in {store.label} vs {b.rows} in {other.label}")
        elif a.digest != b.digest:
            differing += 1
            problems.append(f"table {table}: same {a.rows} row(s) but checksums differ "
                            f"({a.digest[:12]} vs {b.digest[:12]})")
        else:
            details.append(f"table {table}: {a.rows} row(s), checksum {a.digest[:12]} in both")
    return len(names), differing


def run(ctx: CheckContext) -> CheckResult:
    target = ctx.target
    assert target is not None
    params = ctx.params
    queries = list(params.get("queries") or [])
    parity = params.get("parity")
    foreign_keys = "sqlite" in target.spec and params.get("foreign_keys", True)
    expected: dict[str, Any] = {}
    if queries:
        expected["failed_queries"] = 0
    if parity:
        expected["parity"] = parity
        expected["differing_tables"] = 0
    if foreign_keys:
        expected["foreign_key_violations"] = 0
    if not expected:
        return CheckResult(False, "nothing to check: give queries or parity (foreign_keys applies to SQLite only)",
                           {}, {"checks": ">= 1"})
    try:
        store = open_store(ctx, target.spec)
    except StoreError as exc:
        return CheckResult(False, str(exc), {"opened": False}, expected)
    measured: dict[str, Any] = {}
    problems: list[str] = []
    details: list[str] = []
    with store:
        try:
            if queries:
                measured["queries"] = len(queries)
                measured["failed_queries"] = _queries(store, queries, problems, details)
            if foreign_keys:
                rows = store.query("PRAGMA foreign_key_check")
                measured["foreign_key_violations"] = len(rows)
                for table, rowid, parent, _fkid in rows[:20]:
                    problems.append(f"foreign key violation: {table} rowid {rowid} references a missing row "
                                    f"of {parent}")
                if len(rows) > 20:
                    problems.append(f"... and {len(rows) - 20} more foreign key violation(s)")
            if parity:
                other_target = ctx.targets.get(parity)
                if other_target is None:
                    problems.append(f"parity: no target named {parity!r}")
                elif other_target.name == target.name:
                    details.append(f"parity: {parity} is this store itself; nothing to compare")
                    measured["differing_tables"] = 0
                else:
                    try:
                        other = open_store(ctx, other_target.spec)
                    except StoreError as exc:
                        problems.append(f"parity with {parity}: {exc}")
                    else:
                        with other:
                            compared, differing = _parity(store, other, params.get("tables"), problems, details)
                        measured.update({"tables": compared, "differing_tables": differing})
        except StoreError as exc:
            problems.append(f"{store.label}: {exc}")
    what = []
    if queries:
        what.append(f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'}")
    if foreign_keys:
        what.append("foreign keys")
    if parity:
        what.append(f"parity with {parity}")
    scope = ", ".join(what)
    if problems:
        return CheckResult(False, f"{store.label}: {len(problems)} problem(s) in {scope}: {problems[0]}",
                           measured, expected, problems + details)
    return CheckResult(True, f"{store.label}: {scope} consistent", measured, expected, details)


CONSISTENCY = CheckKind(
    name="consistency",
    judges=frozenset({"datastore"}),
    params=PARAMS,
    run=run,
    target_refs=("parity",),
    description="SQL assertions, SQLite foreign keys and parity (row counts, checksums) between data stores",
)
