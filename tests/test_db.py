"""pytest_release.db on a real SQLite file and a real PostgreSQL server: the same statements, with
``?`` placeholders, give the same rows on both engines; errors are safe to show."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_release.db import (Database, DatabaseError, dsn_label, is_postgres, open_postgres, open_sqlite, scrub,
                               to_pyformat)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A writable, empty database of each engine."""
    if request.param == "sqlite":
        db = open_sqlite(tmp_path / "made" / "here.sqlite", timeout=5)
    else:
        db = open_postgres(request.getfixturevalue("pg_dsn"), connect_timeout=10, statement_timeout=10)
    with db:
        yield db


@pytest.mark.parametrize("sql, expected", [
    ("SELECT ?", "SELECT %s"),
    ("a = ? AND b = ?", "a = %s AND b = %s"),
    ("x LIKE 'a%' AND y = ?", "x LIKE 'a%%' AND y = %s"),
    ("'is it?' = ?", "'is it?' = %s"),
    ("'it''s ?' || ?", "'it''s ?' || %s"),
    ('"odd?name" = ?', '"odd?name" = %s'),
    ("? -- a comment? yes\n, ?", "%s -- a comment? yes\n, %s"),
    ("? /* why? 100% */ ?", "%s /* why? 100%% */ %s"),
    ("SELECT 5 % ?", "SELECT 5 %% %s"),
    ("?::regclass", "%s::regclass"),
])
def test_qmark_placeholders_become_psycopgs_outside_quotes_and_comments(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


def test_the_same_statements_give_the_same_rows_on_both_engines(database: Database) -> None:
    database.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price DOUBLE PRECISION)")
    database.executemany("INSERT INTO items (id, name, price) VALUES (?, ?, ?)",
                         [(1, "apple", 0.5), (2, "50% off?", 2.0), (3, "it's", 3.25)])
    database.executemany("INSERT INTO items (id, name, price) VALUES (?, ?, ?)", [])
    database.commit()
    assert database.rows("SELECT id, name FROM items WHERE name LIKE '%off%' AND price > ?", (1,)) == \
        [(2, "50% off?")]
    assert database.rows("SELECT count(*) FROM items WHERE name = 'what?'") == [(0,)]
    assert database.rows("SELECT name FROM items WHERE id = ?", (3,)) == [("it's",)]
    assert list(database.iterate("SELECT id FROM items ORDER BY id")) == [(1,), (2,), (3,)]
    assert database.execute("DELETE FROM items WHERE price < ?", (3,)) == 2
    assert database.execute("UPDATE items SET price = ? WHERE id = ?", (9, 3)) == 1
    database.commit()
    assert database.rows("SELECT id, price FROM items") == [(3, 9.0)]
    assert database.rows("DELETE FROM items WHERE id = ?", (99,)) == []


def test_a_failed_statement_is_a_database_error_and_the_connection_goes_on(database: Database) -> None:
    database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    database.execute("INSERT INTO t (id) VALUES (?)", (1,))
    database.commit()
    with pytest.raises(DatabaseError) as failed:
        database.execute("INSERT INTO t (id) VALUES (?)", (1,))
    assert "\n" not in str(failed.value) and not failed.value.interrupted and not failed.value.timed_out
    with pytest.raises(DatabaseError, match="no_such_table|does not exist"):
        database.rows("SELECT * FROM no_such_table")
    assert database.rows("SELECT count(*) FROM t") == [(1,)]  # rolled back, still usable


def test_a_read_only_sqlite_file_refuses_writes_and_must_be_a_database(tmp_path: Path) -> None:
    path = tmp_path / "data.sqlite"
    with open_sqlite(path, timeout=5) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()
    with open_sqlite(path, timeout=5, read_only=True, label="data.sqlite") as db:
        assert db.label == "data.sqlite" and db.rows("SELECT count(*) FROM t") == [(0,)]
        with pytest.raises(DatabaseError, match="readonly"):
            db.execute("INSERT INTO t VALUES (1)")
    (tmp_path / "text.sqlite").write_text("not a database, not at all" * 10)
    with pytest.raises(DatabaseError, match="not a database"):
        open_sqlite(tmp_path / "text.sqlite", timeout=5, read_only=True)
    with pytest.raises(DatabaseError):
        open_sqlite(tmp_path / "missing.sqlite", timeout=5, read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_a_sqlite_statement_stops_at_its_deadline(tmp_path: Path) -> None:
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    started = time.monotonic()
    with open_sqlite(tmp_path / "x.sqlite", timeout=5, deadline=started + 0.3) as db:
        with pytest.raises(DatabaseError) as stopped:
            db.rows(endless)
    assert stopped.value.interrupted and time.monotonic() - started < 10


def test_a_postgres_statement_timeout_is_said(pg_dsn: str) -> None:
    with open_postgres(pg_dsn, connect_timeout=10, statement_timeout=10, autocommit=True) as db:
        db.statement_timeout(0.2)
        with pytest.raises(DatabaseError) as stopped:
            db.rows("SELECT pg_sleep(?)", (5,))
        assert stopped.value.timed_out and "statement timeout" in str(stopped.value)
        db.statement_timeout(10)
        assert db.rows("SELECT 1") == [(1,)]


def test_a_read_only_postgres_connection_refuses_writes(pg_dsn: str) -> None:
    with open_postgres(pg_dsn, connect_timeout=10, read_only=True, autocommit=True) as db:
        assert db.postgres and db.label == dsn_label(pg_dsn)
        with pytest.raises(DatabaseError, match="read-only"):
            db.execute("CREATE TABLE t (x integer)")


def test_a_connection_error_never_shows_the_password(postgres_server: str) -> None:
    host_port = postgres_server.split("@", 1)[1].split("/", 1)[0]
    dsn = f"postgresql://nobody:pw-s3cret@{host_port}/no_such_db"
    with pytest.raises(DatabaseError) as refused:
        open_postgres(dsn, connect_timeout=5)
    assert "pw-s3cret" not in str(refused.value) and dsn not in str(refused.value)


@pytest.mark.parametrize("location, postgres", [
    ("postgresql://u@h/db", True), ("postgres://h/db", True), ("host=h dbname=x", True),
    ("history.sqlite", False), ("/abs/path/db.sqlite", False),
])
def test_a_dsn_is_told_from_a_file_name(location: str, postgres: bool) -> None:
    assert is_postgres(location) is postgres


@pytest.mark.parametrize("dsn, label", [
    ("postgresql://user:pw@db.example:5433/shop", "postgres db.example:5433/shop"),
    ("postgresql://db.example/shop", "postgres db.example/shop"),
    ("host=h port=1 dbname=d user=u password=p", "postgres h:1/d"),
])
def test_a_dsn_is_labelled_without_user_or_password(dsn: str, label: str) -> None:
    assert dsn_label(dsn) == label


def test_scrub_masks_the_dsn_and_its_password_on_one_line() -> None:
    dsn = "postgresql://u:hunter2@h/db"
    assert scrub(f"failed for {dsn}\n  password hunter2 wrong", dsn) == "failed for <dsn> password *** wrong"
