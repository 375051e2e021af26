"""``consistency``: does the data agree with itself and with its copy?

On a data store (SQLite or PostgreSQL), read-only:

* ``queries``: SQL assertions, in the comparison vocabulary of :mod:`pytest_release.compare`
  (the one ``health``'s ``json`` uses). ``{sql, value: EXPECTATION}``: the query returns one
  value, which must meet it (``value: 0``, ``value: {">=": 5000}``, ``value: {between: [1, 9]}``);
  ``{sql, rows: EXPECTATION}``: the rows, a list of lists, must meet it (``rows: {empty: true}``,
  ``rows: {length: {"<=": 3}}``, ``rows: [[1, "a"]]``). The older forms keep working:
  ``{sql, expect: empty}`` is ``rows: {empty: true}``, and ``{sql, compare: "<=", value: N}`` is
  ``value: {"<=": N}``. What each query returned is kept in the record (``query.N``), also when
  it passes.
* ``parity: OTHER``: row counts and per-table checksums against another data-store target of
  the plan (a backup, a replica; SQLite and PostgreSQL may be compared with each other), naming
  every table that differs.
* ``foreign_keys`` (SQLite, on by default): ``PRAGMA foreign_key_check`` must find nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compare import NUMERIC, bounded, describe, expectation_problems, expectation_schema, judge
from .base import CheckContext, CheckKind, CheckResult
from .stores import Store, StoreError, open_store

__all__ = ["CONSISTENCY"]

#: The older form's operators: ``{sql, compare: OP, value: N}`` is ``{sql, value: {OP: N}}``.
OPS = (*NUMERIC, "==", "!=")

QUERY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sql"],
    "properties": {
        "sql": {"type": "string", "minLength": 1, "description": "a read-only SQL query"},
        "name": {"type": "string", "description": "what the query asserts, shown in messages"},
        "value": {**expectation_schema(),
                  "description": "the query's one value must meet this: a value it equals, or comparisons "
                                 "({'>=': 1}, {between: [0, 9]}, ...); with compare, the number it is compared with"},
        "rows": {**expectation_schema(),
                 "description": "the query's rows (a list of lists) must meet this: {empty: true}, "
                                "{length: {'<=': 3}}, [[1, 'a']], ..."},
        "expect": {"enum": ["empty"], "description": "'empty': the query must return no rows (rows: {empty: true})"},
        "compare": {"enum": sorted(OPS), "description": "the older form: how the query's one value compares "
                                                        "with value (value: {OP: N} says the same)"},
    },
    "dependentSchemas": {"compare": {"required": ["value"], "properties": {"value": {"type": "number"}}}},
    "oneOf": [{"required": ["value"], "not": {"anyOf": [{"required": ["rows"]}, {"required": ["expect"]}]}},
              {"required": ["rows"], "not": {"anyOf": [{"required": ["value"]}, {"required": ["expect"]},
                                                       {"required": ["compare"]}]}},
              {"required": ["expect"], "not": {"anyOf": [{"required": ["value"]}, {"required": ["rows"]},
                                                         {"required": ["compare"]}]}}],
    "description": "{sql, value: EXPECTATION}, {sql, rows: EXPECTATION}, {sql, expect: empty} or "
                   "{sql, compare: OP, value: N}: exactly one of value, rows, expect",
}

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "queries": {"type": "array", "items": QUERY, "minItems": 1,
                    "description": "SQL assertions: {sql, value: EXPECTATION} or {sql, rows: EXPECTATION}"},
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


def query_expectation(query: Mapping[str, Any]) -> tuple[str, Any]:
    """What a query asserts, in the one vocabulary: ``("value", EXPECTATION)`` about its one value
    or ``("rows", EXPECTATION)`` about its rows (the older forms translated)."""
    if query.get("expect") == "empty":
        return "rows", {"empty": True}
    if "compare" in query:
        return "value", {query["compare"]: query.get("value")}
    if "rows" in query:
        return "rows", query["rows"]
    return "value", query.get("value")


def _queries(store: Store, queries: list[Mapping[str, Any]], problems: list[str], details: list[str],
             measured: dict[str, Any]) -> int:
    failed = 0
    for number, query in enumerate(queries, 1):
        label = f"query {number}" + (f" ({query['name']})" if query.get("name") else "")
        key = f"query.{number}"
        sql = query["sql"]
        what, want = query_expectation(query)
        try:
            rows = store.query(sql)
        except StoreError as exc:
            failed += 1
            problems.append(f"{label} failed: {exc}: {_short(sql)}")
            measured[key] = {"error": bounded(str(exc))}
            continue
        table = [list(row) for row in rows]
        if what == "rows":
            measured[key] = {"rows": len(table), "first_rows": bounded(table[:5], items=5)}
            problem = judge(table, want)
            if problem is None:
                details.append(f"{label}: {len(table)} row(s), expected {describe(want)}")
                continue
            failed += 1
            if want == {"empty": True}:
                problems.append(f"{label} returned {len(table)} row(s), expected none: {_short(sql)}")
                details.extend(f"  {label} row: {tuple(row)!r}"[:200] for row in table[:5])
            else:
                problems.append(f"{label}: rows {problem}: {_short(sql)}")
            continue
        if len(table) != 1 or len(table[0]) != 1:
            failed += 1
            measured[key] = {"rows": len(table), "first_rows": bounded(table[:5], items=5)}
            problems.append(f"{label} returned {len(table)} row(s) of {len(table[0]) if table else 0} column(s), "
                            f"expected one value {describe(want)}: {_short(sql)}")
            continue
        got = table[0][0]
        measured[key] = bounded(got)
        problem = judge(got, want)
        if problem is None:
            details.append(f"{label}: {bounded(got)!r}, expected {describe(want)}")
        else:
            failed += 1
            problems.append(f"{label}: value {problem}: {_short(sql)}")
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
                measured["failed_queries"] = _queries(store, queries, problems, details, measured)
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


def param_problem(params: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """A comparison the schema cannot judge (a broken regular expression, an empty range)."""
    for number, query in enumerate(params.get("queries") or [], 1):
        if not isinstance(query, Mapping):
            continue
        for key in ("value", "rows"):
            if key in query and "compare" not in query:
                for problem in expectation_problems(query[key]):
                    return f"queries[{number - 1}].{key}: {problem}"
    return None


CONSISTENCY = CheckKind(
    name="consistency",
    judges=frozenset({"datastore"}),
    params=PARAMS,
    run=run,
    param_problem=param_problem,
    target_refs=("parity",),
    description="SQL assertions, SQLite foreign keys and parity (row counts, checksums) between data stores",
)
