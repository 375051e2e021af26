"""consistency and PostgreSQL integrity against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import run_check
from pytest_release.checks import CheckContext, consistency
from pytest_release.model import Target, target_kind
from pytest_release.yamldoc import Mark

SCHEMA = """
CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                    total_cents INTEGER NOT NULL, paid BOOLEAN NOT NULL, note TEXT);
"""


def _sqlite(path: Path, customers: int = 3, orders: int = 5) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO customers VALUES (?, ?)", [(i, f"customer {i}") for i in range(1, customers + 1)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                     [(i, 1 + i % customers, 100 * i, i % 2 == 0, None if i % 3 else "gift") for i in
                      range(1, orders + 1)])
    conn.commit()
    conn.close()
    return path


def _postgres(dsn: str, customers: int = 3, orders: int = 5) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA.replace("INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY"))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s)",
                            [(i, f"customer {i}") for i in range(1, customers + 1)])
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)",
                            [(i, 1 + i % customers, 100 * i, i % 2 == 0, None if i % 3 else "gift")
                             for i in range(1, orders + 1)])


def _run(spec: dict[str, Any], base: Path, others: dict[str, dict[str, Any]], **params: Any):  # type: ignore[no-untyped-def]
    """Run consistency with the plan's other targets known (for parity)."""
    targets = {name: Target(name, target_kind(s), s, Mark(1, 1)) for name, s in {"db": spec, **others}.items()}
    ctx = CheckContext(kind="consistency", params=params, target=targets["db"], base_dir=base,
                       gate="pre_release::g", budget=10, deadline=time.monotonic() + 10, targets=targets)
    return consistency.run(ctx)


# -- SQLite --------------------------------------------------------------------------------------


def test_queries_pass_and_fail(tmp_path: Path) -> None:
    _sqlite(tmp_path / "app.db")
    queries = [
        {"sql": "SELECT id FROM orders WHERE total_cents < 0", "expect": "empty", "name": "no negative totals"},
        {"sql": "SELECT count(*) FROM customers", "compare": ">=", "value": 3},
    ]
    ok = run_check("consistency", {"sqlite": "app.db"}, tmp_path, queries=queries)
    assert ok.passed, ok.details
    assert ok.measured == {"queries": 2, "failed_queries": 0, "foreign_key_violations": 0,
                           "query.1": {"rows": 0, "first_rows": []}, "query.2": 3}
    bad = run_check("consistency", {"sqlite": "app.db"}, tmp_path, queries=[
        {"sql": "SELECT id FROM orders WHERE total_cents > 300", "expect": "empty"},
        {"sql": "SELECT count(*) FROM orders", "compare": "<=", "value": 4},
        {"sql": "SELECT nope FROM orders", "expect": "empty"},
    ])
    assert not bad.passed and bad.measured["failed_queries"] == 3
    assert bad.summary == ("app.db: 3 problem(s) in 3 queries, foreign keys: query 1 returned 2 row(s), "
                           "expected none: SELECT id FROM orders WHERE total_cents > 300")
    assert "query 2: value is 5, expected <= 4: SELECT count(*) FROM orders" in bad.details
    assert any(d.startswith("query 3 failed: no such column: nope") for d in bad.details)


def test_sqlite_is_opened_read_only(tmp_path: Path) -> None:
    _sqlite(tmp_path / "app.db")
    result = run_check("consistency", {"sqlite": "app.db"}, tmp_path,
                       queries=[{"sql": "DELETE FROM orders RETURNING id", "expect": "empty"}])
    assert not result.passed and "readonly" in result.summary
    assert sqlite3.connect(tmp_path / "app.db").execute("SELECT count(*) FROM orders").fetchone()[0] == 5


def test_foreign_key_violation(tmp_path: Path) -> None:
    db = _sqlite(tmp_path / "app.db")
    assert run_check("consistency", {"sqlite": "app.db"}, tmp_path).passed
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO orders VALUES (99, 42, 1, 0, NULL)")  # foreign keys are off by default
    conn.commit()
    conn.close()
    result = run_check("consistency", {"sqlite": "app.db"}, tmp_path)
    assert not result.passed
    assert result.measured == {"foreign_key_violations": 1}
    assert "foreign key violation: orders rowid 99 references a missing row of customers" in result.summary
    assert run_check("consistency", {"sqlite": "app.db"}, tmp_path, foreign_keys=False,
                     queries=[{"sql": "SELECT 1", "compare": "==", "value": 1}]).passed


def test_parity_between_two_sqlite_files(tmp_path: Path) -> None:
    _sqlite(tmp_path / "app.db")
    _sqlite(tmp_path / "backup.db")
    same = _run({"sqlite": "app.db"}, tmp_path, {"backup": {"sqlite": "backup.db"}}, parity="backup")
    assert same.passed, same.details
    assert same.measured == {"foreign_key_violations": 0, "tables": 2, "differing_tables": 0}
    conn = sqlite3.connect(tmp_path / "backup.db")
    conn.execute("DELETE FROM orders WHERE id = 5")
    conn.execute("UPDATE customers SET name = 'renamed' WHERE id = 2")
    conn.execute("CREATE TABLE extra(x)")
    conn.commit()
    conn.close()
    diff = _run({"sqlite": "app.db"}, tmp_path, {"backup": {"sqlite": "backup.db"}}, parity="backup")
    assert not diff.passed
    assert diff.measured["differing_tables"] == 3
    assert "table orders: 5 row(s) in app.db vs 4 in backup.db" in diff.details
    assert any(d.startswith("table customers: same 3 row(s) but checksums differ") for d in diff.details)
    assert "table extra: only in backup.db" in diff.details


def test_parity_target_must_exist_and_be_a_data_store(tmp_path: Path) -> None:
    from pytest_release.checks import BUILTIN_KINDS
    from pytest_release.loader import load_plan
    from pytest_release.problems import PlanError

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets:\n  db: {sqlite: app.db}\n  conf: {files: ['*.yaml']}\n"
        "strategy:\n  stages: [{name: pre_release}]\n  gates: [{name: validation_gate}]\n"
        "validation:\n  gates:\n    - name: data\n      targets: [db]\n      checks:\n"
        "        - consistency: {parity: backup}\n        - consistency: {parity: conf}\n")
    with pytest.raises(PlanError) as info:
        load_plan(plan, BUILTIN_KINDS)
    text = str(info.value)
    assert "no target named 'backup'" in text
    assert "target 'conf' is not a datastore target, which parity needs" in text


# -- PostgreSQL ----------------------------------------------------------------------------------


def test_postgres_integrity_counts_every_table(pg_dsn: str, tmp_path: Path) -> None:
    _postgres(pg_dsn)
    result = run_check("integrity", {"dsn": pg_dsn}, tmp_path)
    assert result.passed, result.summary
    assert result.measured["tables"] == 2 and result.measured["rows"] == 8
    assert result.measured["unreadable_tables"] == 0
    assert result.details == ["customers: 3 row(s)", "orders: 5 row(s)"]
    assert "postgres 127.0.0.1:" in result.summary and "SELECT 1 ok, 2 table(s) readable" in result.summary
    assert run_check("integrity", {"dsn": pg_dsn}, tmp_path, quick=True).passed


def test_postgres_integrity_fails_clearly(pg_dsn: str, tmp_path: Path, free_port: int) -> None:
    import psycopg

    _postgres(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'pw-do-not-print'")
        conn.execute("GRANT SELECT ON customers TO reader")
    reader = pg_dsn.replace("postgres@", "reader:pw-do-not-print@")
    denied = run_check("integrity", {"dsn": reader}, tmp_path)
    assert not denied.passed
    assert "1 of 2 table(s)" in denied.summary and "orders: not readable: permission denied" in denied.summary
    refused = run_check("integrity", {"dsn": f"postgresql://u:pw-do-not-print@127.0.0.1:{free_port}/x"}, tmp_path)
    assert not refused.passed and refused.summary.startswith(f"cannot connect to postgres 127.0.0.1:{free_port}/x")
    for result in (denied, refused):
        assert "pw-do-not-print" not in result.summary + "".join(result.details)


def test_postgres_queries_and_parity_with_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    _postgres(pg_dsn)
    _sqlite(tmp_path / "app.db")
    pg = {"dsn": pg_dsn}
    result = _run(pg, tmp_path, {"lite": {"sqlite": "app.db"}}, parity="lite", queries=[
        {"sql": "SELECT o.id FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL",
         "expect": "empty"},
        {"sql": "SELECT sum(total_cents) FROM orders", "compare": "==", "value": 1500}])
    assert result.passed, result.details
    assert result.measured == {"queries": 2, "failed_queries": 0, "tables": 2, "differing_tables": 0,
                               "query.1": {"rows": 0, "first_rows": []}, "query.2": 1500}
    sqlite_side = _run({"sqlite": "app.db"}, tmp_path, {"pg": pg}, parity="pg")
    assert sqlite_side.passed, sqlite_side.details
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("INSERT INTO orders VALUES (6, 1, 600, 1, NULL)")
    conn.commit()
    conn.close()
    diff = _run(pg, tmp_path, {"lite": {"sqlite": "app.db"}}, parity="lite")
    assert not diff.passed
    assert diff.measured["differing_tables"] == 1
    host = pg_dsn.split("@")[1].rsplit("/", 1)[0]
    assert f"table orders: 5 row(s) in postgres {host}/" in diff.summary and "vs 6 in app.db" in diff.summary
    assert pg_dsn not in diff.summary


def test_postgres_query_timeout_uses_the_budget(pg_dsn: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check("consistency", {"dsn": pg_dsn}, tmp_path, budget=1.0,
                       queries=[{"sql": "SELECT pg_sleep(5)", "expect": "empty"}])
    assert time.monotonic() - started < 2.5
    assert not result.passed and "statement timeout" in result.summary


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dsn_without_psycopg_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    dsn = "postgresql://app:pw-not-shown@db.internal:5432/shop"
    for kind in ("integrity", "consistency"):
        result = run_check(kind, {"dsn": dsn}, tmp_path, **({"queries": [{"sql": "SELECT 1", "expect": "empty"}]}
                                                            if kind == "consistency" else {}))
        assert not result.passed
        assert result.summary == "psycopg is not installed: pip install 'pytest-release[postgres]'"
