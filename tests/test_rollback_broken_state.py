"""Rollback actions against the broken state a rollback exists for: corrupt SQLite files, config
that no longer parses or is gone, artifacts that fail their checksums, files the release added,
dangling release links, and services whose pidfile no longer names them. Real files, real SQLite,
real processes; the last tests run whole plans with pytest."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Example
from pytest_release.checks.integrity import sha256_file
from pytest_release.rollback.actions import ACTIONS, SHOWN_PROBLEMS, StepContext, StepResult, content_digest


def act(name: str, base: Path, mode: str = "rollback", budget: float = 10, **params: Any) -> StepResult:
    ctx = StepContext("proc", "step", params, base, time.monotonic() + budget, mode)
    action = ACTIONS[name]
    return action.ready(ctx) if mode == "readiness" else action.run(ctx)


# -- corrupt SQLite files -----------------------------------------------------------------------


def make_db(path: Path, rows: int = 3000) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price INTEGER)")
        conn.execute("CREATE INDEX items_name ON items(name)")
        conn.executemany("INSERT INTO items(name, price) VALUES (?, ?)", [(f"item-{i}" * 4, i) for i in range(rows)])
        conn.execute("PRAGMA user_version = 7")
    return read_rows(path)


def read_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, name, price FROM items ORDER BY id").fetchall()
    finally:
        conn.close()


def corrupt(path: Path, kind: str) -> None:
    """Break a database file the way disks, bugs and bad releases do; each kind differently."""
    rng = random.Random(kind)
    size = path.stat().st_size
    page = int.from_bytes(path.read_bytes()[16:18], "big")
    pages = size // page
    with open(path, "r+b") as fh:
        if kind == "header":  # no longer a database file at all
            fh.write(rng.randbytes(100))
        elif kind == "garbage-pages":
            fh.seek(3 * page)
            fh.write(rng.randbytes(5 * page))
        elif kind == "zeroed-pages":
            fh.seek(2 * page)
            fh.write(bytes(4 * page))
        elif kind == "truncated":
            fh.truncate(size // 2)
        elif kind == "scattered-cells":  # a few bytes in many b-tree pages: integrity_check lists many
            for number in range(5, pages, 3):
                fh.seek(number * page + 200)
                fh.write(rng.randbytes(50))
        elif kind == "free-space":
            fh.seek(10 * page + 20)
            fh.write(b"\xff" * 8)
        else:
            raise AssertionError(kind)


CORRUPTIONS = ["header", "garbage-pages", "zeroed-pages", "truncated", "scattered-cells", "free-space"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_forensic_copy_of_a_corrupt_database_keeps_its_bytes_and_the_restore_proves_itself(
        tmp_path: Path, kind: str) -> None:
    db = tmp_path / "app.db"
    good = make_db(db)
    point = act("sqlite_backup", tmp_path, "readiness", db="app.db", to="bk/app.db")
    assert point.passed, point.summary
    corrupt(db, kind)
    broken = db.read_bytes()
    strict = act("sqlite_backup", tmp_path, "readiness", db="app.db", to="other/app.db")
    assert not strict.passed  # the restore point is never taken from a broken database

    forensic = act("sqlite_backup", tmp_path, db="app.db", to="bk/app.db")
    assert forensic.passed, forensic.summary
    assert "forensic copy of app.db kept as raw bytes" in forensic.summary and "the live database is broken" in \
        forensic.summary
    assert (tmp_path / "bk" / "app.db.before-rollback").read_bytes() == broken
    problems = forensic.measured["integrity_check"]
    assert forensic.measured["integrity_problems"] == len(problems) >= 1
    assert len(forensic.details) <= SHOWN_PROBLEMS + 1
    assert len(forensic.summary) < 400
    assert (tmp_path / "bk" / "app.db").is_file() and act("sqlite_restore", tmp_path, "readiness", db="app.db",
                                                          **{"from": "bk/app.db"}).passed  # untouched

    restored = act("sqlite_restore", tmp_path, db="app.db", **{"from": "bk/app.db"})
    assert restored.passed, restored.summary
    assert restored.measured["content_sha256"] == restored.measured["restore_point_content_sha256"] \
        == point.measured["content_sha256"]
    assert restored.measured["sha256"] == sha256_file(db) and restored.measured["backup_sha256"] == \
        point.measured["sha256"]
    assert read_rows(db) == good
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA user_version").fetchone() == (7,)


def test_a_corrupt_wal_database_held_open_by_the_service(tmp_path: Path) -> None:
    """The service keeps its connection open through the rollback: the forensic copy keeps the
    -wal and -shm too, and the restore goes through the backup API into the same inode, so the
    service's own connection reads the restored rows."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=wal")
    good = make_db(db)
    service = sqlite3.connect(db, timeout=5)
    service.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows in the main file, the -wal empty
    service.execute("PRAGMA wal_autocheckpoint=0")
    assert act("sqlite_backup", tmp_path, "readiness", db="app.db", to="bk/app.db").passed
    inode = db.stat().st_ino
    with service:
        service.execute("UPDATE items SET price = -1 WHERE id < 5")  # the bad release's writes, still in the -wal
    corrupt(db, "garbage-pages")
    forensic = act("sqlite_backup", tmp_path, db="app.db", to="bk/app.db")
    assert forensic.passed and set(forensic.measured.get("files", [])) >= {"app.db", "app.db-wal"}, forensic.summary
    assert (tmp_path / "bk" / "app.db.before-rollback-wal").read_bytes() == (tmp_path / "app.db-wal").read_bytes()
    restored = act("sqlite_restore", tmp_path, db="app.db", **{"from": "bk/app.db"})
    assert restored.passed, restored.summary
    assert db.stat().st_ino == inode
    assert service.execute("SELECT id, name, price FROM items ORDER BY id").fetchall() == good
    service.close()


def test_integrity_problems_are_bounded_in_details_and_complete_in_measured(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db, rows=20000)
    with open(db, "r+b") as fh:  # many problems in many pages
        rng = random.Random(3)
        for number in range(5, db.stat().st_size // 4096, 2):
            fh.seek(number * 4096 + 8)
            fh.write(rng.randbytes(2))
    result = act("sqlite_backup", tmp_path, db="app.db", to="bk/app.db")
    assert result.passed
    problems = result.measured["integrity_check"]
    assert result.measured["integrity_problems"] == len(problems) > SHOWN_PROBLEMS
    assert result.details[:SHOWN_PROBLEMS] == problems[:SHOWN_PROBLEMS]
    assert result.details[-1] == (f"... and {len(problems) - SHOWN_PROBLEMS} more (all {len(problems)} in the "
                                  "step's measured integrity_check)")
    assert f"integrity_check found {len(problems)} problem(s)" in result.summary


def test_forensic_copy_of_a_missing_database_is_noted_and_passes(tmp_path: Path) -> None:
    result = act("sqlite_backup", tmp_path, db="app.db", to="bk/app.db")
    assert result.passed and "no SQLite database" in result.summary and result.measured["kept"] is False
    assert not act("sqlite_backup", tmp_path, "readiness", db="app.db", to="bk/app.db").passed


# -- the content digest: equal exactly when the content is equal --------------------------------

def _variant(conn: sqlite3.Connection, change: str) -> None:
    statements = {
        "one value": "UPDATE t SET v = 'b' WHERE id = 2",
        "a row added": "INSERT INTO t(id, v) VALUES (9, 'z')",
        "a row removed": "DELETE FROM t WHERE id = 3",
        "text becomes blob": "UPDATE t SET v = CAST(v AS BLOB) WHERE id = 1",
        "integer becomes real": "UPDATE t SET n = 1.0 WHERE id = 1",
        "a real's last bit": "UPDATE t SET r = 0.30000000000000004 WHERE id = 1",
        "null becomes empty": "UPDATE t SET v = '' WHERE id = 4",
        "rowid renumbered": "UPDATE t SET id = 20 WHERE id = 4",
        "an index added": "CREATE INDEX t_v ON t(v)",
        "user_version": "PRAGMA user_version = 2",
        "without-rowid row": "UPDATE kv SET v = 'other' WHERE k = 'a'",
        "values swapped between columns": "UPDATE t SET v = 'a1', n = 1 WHERE id = 1",
    }
    conn.execute(statements[change])


VARIANTS = ["one value", "a row added", "a row removed", "text becomes blob", "integer becomes real",
            "a real's last bit", "null becomes empty", "rowid renumbered", "an index added", "user_version",
            "without-rowid row", "values swapped between columns"]


@pytest.fixture
def base_db(tmp_path: Path) -> Path:
    db = tmp_path / "base.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v, n, r)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)",
                         [(1, "a", 1, 0.3), (2, "a", 2, 0.5), (3, b"\x00\xff", None, 1e300), (4, None, -5, -0.0)])
        conn.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID")
        conn.executemany("INSERT INTO kv VALUES (?, ?)", [("b", 2), ("a", "x")])
    return db


@pytest.mark.parametrize("change", VARIANTS)
def test_content_digest_differs_for_any_change_of_content(base_db: Path, tmp_path: Path, change: str) -> None:
    other = tmp_path / "other.db"
    shutil.copyfile(base_db, other)
    with sqlite3.connect(other) as conn:
        _variant(conn, change)
    assert content_digest(other, 5) != content_digest(base_db, 5)


@pytest.mark.parametrize("copy", ["backup API", "VACUUM INTO", "rows inserted in another order"])
def test_content_digest_is_equal_for_equal_content_in_other_bytes(base_db: Path, tmp_path: Path, copy: str) -> None:
    other = tmp_path / "other.db"
    if copy == "backup API":
        src, dst = sqlite3.connect(base_db), sqlite3.connect(other)
        src.backup(dst)
        src.close()
        dst.close()
    elif copy == "VACUUM INTO":
        with sqlite3.connect(base_db) as conn:
            conn.execute("VACUUM INTO ?", (str(other),))
    else:
        with sqlite3.connect(base_db) as conn:
            schema = [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master ORDER BY rowid")]
            rows = {name: conn.execute(f"SELECT * FROM {name}").fetchall() for name in ("t", "kv")}
        with sqlite3.connect(other) as conn:
            conn.execute("PRAGMA page_size = 1024")
            for sql in schema:
                conn.execute(sql)
            for name, values in rows.items():
                marks = ", ".join("?" * len(values[0]))
                conn.executemany(f"INSERT INTO {name} VALUES ({marks})", list(reversed(values)))
    assert sha256_file(other) != sha256_file(base_db)
    assert content_digest(other, 5) == content_digest(base_db, 5)


def test_restore_fails_when_the_restored_content_is_not_the_restore_point(tmp_path: Path) -> None:
    """The recorded content digest is what the restore is judged against."""
    db = tmp_path / "app.db"
    make_db(db, rows=10)
    assert act("sqlite_backup", tmp_path, "readiness", db="app.db", to="bk/app.db").passed
    digest_file = tmp_path / "bk" / "app.db.content-sha256"
    digest_file.write_text("0" * 64 + "  app.db\n")  # a restore point whose content was something else
    result = act("sqlite_restore", tmp_path, db="app.db", **{"from": "bk/app.db"})
    assert not result.passed and "does not equal the restore point" in result.summary
    assert result.measured["restore_point_content_sha256"] == "0" * 64
    digest_file.unlink()  # an older backup without the recorded digest: computed from the verified backup
    older = act("sqlite_restore", tmp_path, db="app.db", **{"from": "bk/app.db"})
    assert older.passed and any("taken by an older version" in line for line in older.details), older.details


# -- config files and artifacts -----------------------------------------------------------------

def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


BREAKAGES: dict[str, Callable[[Path], None]] = {
    "no longer parses": lambda d: (d / "app.yaml").write_text("table: [items\n  port: {{\n"),
    "binary garbage": lambda d: (d / "app.yaml").write_bytes(bytes(range(256)) * 4),
    "all files deleted": lambda d: [p.unlink() for p in d.iterdir()],
    "a file became a dangling link": lambda d: ((d / "flags.json").unlink(),
                                                os.symlink(d / "nowhere.json", d / "flags.json")),
    "emptied": lambda d: [p.write_bytes(b"") for p in d.iterdir()],
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_forensic_file_copy_of_broken_config_keeps_what_it_can_and_the_restore_runs(tmp_path: Path,
                                                                                  breakage: str) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "app.yaml").write_text("table: items\nport: 80\n")
    (config / "flags.json").write_text('{"new": false}\n')
    good = _tree(config)
    assert act("file_backup", tmp_path, "readiness", files=["config/*"], to="bk/config").passed
    BREAKAGES[breakage](config)
    forensic = act("file_backup", tmp_path, files=["config/*"], to="bk/config")
    assert forensic.passed and forensic.summary.startswith("forensic copy of"), forensic.summary
    kept = tmp_path / "bk" / "config.before-rollback"
    live = {rel: data for rel, data in _tree(config).items() if (config / rel).is_file()}
    assert {rel: data for rel, data in _tree(kept).items() if rel.startswith("config/")} == \
        {f"config/{rel}": data for rel, data in live.items()}
    wrong = set(forensic.measured["changed"]) | set(forensic.measured["missing"])
    assert wrong == {f"config/{rel}" for rel in good if live.get(rel) != good[rel]}
    assert all(f"{len(forensic.measured[k])} " in forensic.summary for k in ("changed", "missing")
               if forensic.measured[k])
    restored = act("file_restore", tmp_path, **{"from": "bk/config"})
    assert restored.passed, restored.summary
    assert _tree(config) == good and not (config / "nowhere.json").exists()


def test_forensic_copy_of_artifacts_that_fail_their_checksums(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    for name in ("app.tar", "app.whl", "docs.zip"):
        (dist / name).write_bytes(os.urandom(50_000))
    good = _tree(dist)
    assert act("file_backup", tmp_path, "readiness", files=["dist/*"], to="bk/dist").passed
    (dist / "app.tar").write_bytes(b"garbage")
    (dist / "docs.zip").unlink()
    with open(dist / "app.whl", "r+b") as fh:
        fh.truncate(100)
    forensic = act("file_backup", tmp_path, files=["dist/*"], to="bk/dist")
    assert forensic.passed
    assert forensic.measured["changed"] == ["dist/app.tar", "dist/app.whl"]
    assert forensic.measured["missing"] == ["dist/docs.zip"]
    assert "2 changed since the restore point: dist/app.tar, dist/app.whl; 1 missing: dist/docs.zip" in \
        forensic.summary
    assert act("file_restore", tmp_path, **{"from": "bk/dist"}).passed
    assert _tree(dist) == good


def test_forensic_copy_of_a_dangling_release_link(tmp_path: Path) -> None:
    (tmp_path / "releases" / "1.0.0").mkdir(parents=True)
    (tmp_path / "releases" / "1.1.0").mkdir(parents=True)
    os.symlink(tmp_path / "releases" / "1.0.0", tmp_path / "current")
    assert act("symlink_backup", tmp_path, "readiness", link="current", to="bk/release").passed
    (tmp_path / "current").unlink()
    os.symlink(tmp_path / "releases" / "1.1.0", tmp_path / "current")
    shutil.rmtree(tmp_path / "releases" / "1.1.0")  # the bad release removed itself half way
    assert not act("symlink_backup", tmp_path, "readiness", link="current", to="other").passed
    forensic = act("symlink_backup", tmp_path, link="current", to="bk/release")
    assert forensic.passed and "dangling" in forensic.summary and forensic.measured["dangling"] is True
    assert os.readlink(tmp_path / "bk" / "release.before-rollback") == str(tmp_path / "releases" / "1.1.0")
    assert act("symlink", tmp_path, link="current", to="bk/release").passed
    assert os.path.realpath(tmp_path / "current") == str(tmp_path / "releases" / "1.0.0")
    (tmp_path / "current").unlink()
    gone = act("symlink_backup", tmp_path, link="current", to="bk/release")
    assert gone.passed and "there is no" in gone.summary


# -- an exact restore: the files the release added go -------------------------------------------

#: layout: (globs, files the release adds that match them, files it adds that do not)
LAYOUTS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "a plugin in the same folder": (["config/*"], ["config/plugin.yaml"], []),
    "a new nested folder": (["config/**"], ["config/plugins/slow/plugin.py", "config/plugins/slow/README"], []),
    "several globs": (["config/*.yaml", "config/*.json"], ["config/extra.yaml", "config/more.json"],
                      ["config/notes.txt"]),
    "hidden files when asked for": (["config/*", "config/.*"], ["config/.override.yaml"], []),
    "many files": (["config/*"], [f"config/drop-{i:02}.yaml" for i in range(14)], []),
}


def _layout(tmp_path: Path) -> None:
    (tmp_path / "config" / "sub").mkdir(parents=True)
    (tmp_path / "config" / "app.yaml").write_text("table: items\n")
    (tmp_path / "config" / "flags.json").write_text("{}\n")
    (tmp_path / "config" / "sub" / "db.yaml").write_text("timeout: 2\n")
    (tmp_path / "config" / ".keep").write_text("")


@pytest.mark.parametrize("forensic", [True, False], ids=["moved-aside", "removed"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_exact_restore_removes_what_the_release_added(tmp_path: Path, layout: str, forensic: bool) -> None:
    globs, added, unmatched = LAYOUTS[layout]
    _layout(tmp_path)
    assert act("file_backup", tmp_path, "readiness", files=globs, to="bk/config").passed
    before = _tree(tmp_path / "config")
    for rel in added + unmatched:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"added by the release: {rel}\n")
    (tmp_path / "config" / "app.yaml").write_text("table: items_v2\n")
    if forensic:
        assert act("file_backup", tmp_path, files=globs, to="bk/config").passed
    restored = act("file_restore", tmp_path, **{"from": "bk/config"})
    assert restored.passed, restored.summary
    expected = dict(before, **{rel.removeprefix("config/"): f"added by the release: {rel}\n".encode()
                               for rel in unmatched})
    assert _tree(tmp_path / "config") == expected
    assert not (tmp_path / "config" / "plugins").exists()  # folders left empty go too
    assert restored.measured["removed"] == len(added) and restored.measured["added"] == sorted(added)
    where = "moved to" if forensic else "removed"
    assert f"; {len(added)} file(s) added since the backup {where}" in restored.summary
    assert sorted(added)[0] in restored.summary and len(restored.summary) < 600
    aside = tmp_path / "bk" / "config.before-rollback" / "added-since-backup"
    assert aside.is_dir() == forensic
    if forensic:
        assert sorted(p.relative_to(aside).as_posix() for p in aside.rglob("*") if p.is_file()) == sorted(added)


def test_exact_false_keeps_added_files_and_old_backups_still_restore(tmp_path: Path) -> None:
    _layout(tmp_path)
    assert act("file_backup", tmp_path, "readiness", files=["config/*"], to="bk/config").passed
    (tmp_path / "config" / "plugin.yaml").write_text("slow: true\n")
    kept = act("file_restore", tmp_path, exact=False, **{"from": "bk/config"})
    assert kept.passed and "kept 1 file(s) added since the backup (exact: false): config/plugin.yaml" in kept.summary
    assert (tmp_path / "config" / "plugin.yaml").exists()
    (tmp_path / "bk" / "config" / "GLOBS").unlink()  # a backup taken before globs were recorded
    older = act("file_restore", tmp_path, **{"from": "bk/config"})
    assert older.passed and "files added since the backup could not be looked for" in older.summary
    assert (tmp_path / "config" / "plugin.yaml").exists()


# -- a started process must be the one serving --------------------------------------------------

SERVE = ("import sys, time, http.server as h; time.sleep(float(sys.argv[2])); "
         "h.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), h.SimpleHTTPRequestHandler).serve_forever()")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, up: bool = True) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            if up:
                return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise AssertionError(f"port {port} never came {'up' if up else 'down'}")


@pytest.fixture
def old_service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The old release's service, still serving; its pidfile names a process that has ended."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(port), "0"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "svc.pid").write_text(ended.stdout)
    yield proc, port
    proc.kill()
    proc.wait()


def probe(kind: str, port: int) -> dict[str, str]:
    return {"url": f"http://127.0.0.1:{port}/"} if kind == "url" else {"tcp": f"127.0.0.1:{port}"}


@pytest.mark.parametrize("kind", ["url", "tcp"])
def test_stop_with_a_stale_pidfile_while_the_old_service_still_serves(
        tmp_path: Path, old_service: tuple[subprocess.Popen[bytes], int], kind: str) -> None:
    proc, port = old_service
    blind = act("process_stop", tmp_path, pidfile="svc.pid")
    assert blind.passed and "not running" in blind.summary  # without a probe it cannot know
    result = act("process_stop", tmp_path, pidfile="svc.pid", healthy=probe(kind, port))
    assert not result.passed
    assert result.summary.startswith("the service still answers:") and f"served by pid {proc.pid}" in result.summary
    proc.kill()
    proc.wait()
    gone = act("process_stop", tmp_path, pidfile="svc.pid", healthy=probe(kind, port))
    assert gone.passed and "no longer answers" in gone.summary


@pytest.mark.parametrize("pidfile", ["stale", "absent"])
@pytest.mark.parametrize("kind", ["url", "tcp"])
def test_start_while_the_old_service_still_serves_fails(
        tmp_path: Path, old_service: tuple[subprocess.Popen[bytes], int], kind: str, pidfile: str) -> None:
    proc, port = old_service
    if pidfile == "absent":
        (tmp_path / "svc.pid").unlink()
    result = act("process_start", tmp_path, argv=[sys.executable, "-c", SERVE, str(port), "0"], pidfile="svc.pid",
                 log="svc.log", healthy=probe(kind, port), wait="5s")
    assert not result.passed, result.summary
    assert f"port 127.0.0.1:{port} already served by another process (pid {proc.pid}" in result.summary
    assert result.measured["served_by"] == [proc.pid]


def test_start_fails_when_the_probe_is_answered_by_another_process(tmp_path: Path) -> None:
    """The old service begins to answer after the port was checked; the new process is still alive
    (it never binds): the probe reached a process that is not the one started."""
    port = free_port()
    other = subprocess.Popen([sys.executable, "-c", SERVE, str(port), "0.4"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        result = act("process_start", tmp_path, argv=[sys.executable, "-c", "import time; time.sleep(30)"],
                     pidfile="svc.pid", healthy=probe("url", port), wait="10s")
        assert not result.passed, result.summary
        assert f"the health probe was answered by another process: port {port} is served by pid {other.pid}" in \
            result.summary
    finally:
        act("process_stop", tmp_path, pidfile="svc.pid", grace="1s")
        other.kill()
        other.wait()


def test_start_rewrites_a_stale_pidfile_so_that_the_next_stop_stops_it(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "svc.pid").write_text("999999\n")
    started = act("process_start", tmp_path, argv=[sys.executable, "-c", SERVE, str(port), "0.2"], pidfile="svc.pid",
                  healthy=probe("url", port), wait="10s")
    assert started.passed, started.summary
    assert "still running" in started.summary
    assert (tmp_path / "svc.pid").read_text() == f"{started.measured['pid']}\n"
    stopped = act("process_stop", tmp_path, pidfile="svc.pid", healthy=probe("url", port))
    assert stopped.passed and f"pid {started.measured['pid']} stopped" in stopped.summary
    wait_port(port, up=False)


def test_start_waits_for_the_pidfile_process_instead_of_starting_a_second_copy(tmp_path: Path) -> None:
    port = free_port()
    first = subprocess.Popen([sys.executable, "-c", SERVE, str(port), "0.5"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        (tmp_path / "svc.pid").write_text(f"{first.pid}\n")
        result = act("process_start", tmp_path, argv=[sys.executable, "-c", SERVE, str(port), "0"],
                     pidfile="svc.pid", healthy=probe("url", port), wait="10s")
        assert result.passed and f"already running and healthy (pid {first.pid})" in result.summary, result.summary
        assert (tmp_path / "svc.pid").read_text() == f"{first.pid}\n"
    finally:
        first.kill()
        first.wait()


# -- whole plans: [backup, revert, verify] from the broken state, for real ----------------------

PLAN = """\
release: {name: shop, version: 2.0.0}
targets:
  db: {sqlite: var/app.db}
  conf: {files: ["var/config/*.yaml", "var/config/*.json"]}
  dist: {manifest: dist/SHA256SUMS}
strategy:
  stages: [{name: pre_release}, {name: post_release}]
  gates:
    - {name: validation_gate, timeout: 20}
    - {name: rollback_gate, timeout: 20}
rollback:
  triggers:
    - {name: validation_failure, action: rollback, timeout: 60}
  procedures:
    - name: data_rollback
      steps: [backup, revert, verify]
      actions:
        backup: {sqlite_backup: {db: var/app.db, to: var/backups/app.db}}
        revert: {sqlite_restore: {db: var/app.db, from: var/backups/app.db}}
    - name: config_rollback
      steps: [backup, revert, verify]
      actions:
        backup: {file_backup: {files: ["var/config/*"], to: var/backups/config}}
        revert: {file_restore: {from: var/backups/config}}
    - name: artifact_rollback
      steps: [backup, revert, verify]
      actions:
        backup: {file_backup: {files: ["dist/*"], to: var/backups/dist}}
        revert: {file_restore: {from: var/backups/dist}}
validation:
  gates:
    - {name: data_validation, targets: [db], checks: [integrity]}
    - {name: config_validation, targets: [conf], checks: [syntax]}
    - {name: artifact_validation, targets: [dist], checks: [integrity]}
"""

CONFIG_BREAKAGES: dict[str, Callable[[Path], None]] = {
    "no longer parses": lambda d: (d / "app.yaml").write_text("table: [items\n"),
    "deleted": lambda d: [p.unlink() for p in d.iterdir()],
    "a plugin added": lambda d: (d / "plugin.yaml").write_text("slow: [\n"),
}

ARTIFACT_BREAKAGES: dict[str, Callable[[Path], None]] = {
    "garbage": lambda d: (d / "app.tar").write_bytes(b"garbage"),
    "missing": lambda d: (d / "app.whl").unlink(),
    "truncated": lambda d: (d / "app.tar").write_bytes((d / "app.tar").read_bytes()[:10]),
}

#: Each kind of breakage appears once (the action tests above take every kind on its own).
CASES = [("header", "no longer parses", "garbage"), ("garbage-pages", "deleted", "missing"),
         ("scattered-cells", "a plugin added", "truncated")]


@pytest.mark.parametrize(("db_kind", "config_kind", "artifact_kind"), CASES)
def test_a_plan_rolls_back_from_a_broken_database_config_and_artifacts(
        pytester: pytest.Pytester, db_kind: str, config_kind: str, artifact_kind: str) -> None:
    root = pytester.path
    (root / "var" / "config").mkdir(parents=True)
    (root / "dist").mkdir()
    good_rows = make_db(root / "var" / "app.db", rows=2000)
    (root / "var" / "config" / "app.yaml").write_text("table: items\n")
    (root / "var" / "config" / "flags.json").write_text('{"new": false}\n')
    for name in ("app.tar", "app.whl"):
        (root / "dist" / name).write_bytes(os.urandom(20_000))
    (root / "dist" / "SHA256SUMS").write_text("".join(f"{sha256_file(root / 'dist' / n)}  {n}\n"
                                                      for n in ("app.tar", "app.whl")))
    good_config, good_dist = _tree(root / "var" / "config"), _tree(root / "dist")
    (root / "release-plan.yaml").write_text(PLAN)
    args = ["--release-plan", "release-plan.yaml", "-p", "no:cacheprovider"]
    before = pytester.runpytest_subprocess(*args, "--release-stage", "pre_release")
    assert before.ret == 0, before.stdout.str()

    corrupt(root / "var" / "app.db", db_kind)  # the release breaks all three
    CONFIG_BREAKAGES[config_kind](root / "var" / "config")
    ARTIFACT_BREAKAGES[artifact_kind](root / "dist")
    result = pytester.runpytest_subprocess(*args, "--release-stage", "post_release", "-v")
    out = result.stdout.str()
    assert result.ret == 1, out
    result.stdout.fnmatch_lines(["*::rollback::data_rollback::backup PASSED*",
                                 "*::rollback::data_rollback::revert PASSED*",
                                 "*::rollback::config_rollback::revert PASSED*",
                                 "*::rollback::artifact_rollback::revert PASSED*",
                                 "*::rollback::verify PASSED*",
                                 "*ROLLED BACK*"])
    assert read_rows(root / "var" / "app.db") == good_rows
    assert _tree(root / "var" / "config") == good_config and _tree(root / "dist") == good_dist
    assert (root / "var" / "backups" / "app.db.before-rollback").is_file()
    evidence = root / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    records = [json.loads(p.read_text()) for p in (evidence / "rollback" / "procedures" / run).rglob("*.json")]
    steps = {f"{r.get('procedure')}::{r.get('step')}": r for r in records if r.get("record") == "step"}
    backup = steps["data_rollback::backup"]
    assert backup["measured"]["forensic"] is True and backup["measured"]["raw"] is True, backup
    assert "forensic copy of app.db kept as raw bytes" in backup["summary"]
    revert = steps["data_rollback::revert"]["measured"]
    assert revert["content_sha256"] == revert["restore_point_content_sha256"]
    verify = subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)], capture_output=True)
    assert verify.returncode == 0


def test_the_example_recipe_with_a_stale_pidfile_while_the_old_release_serves(example: Example) -> None:
    """The example's own stop and start steps, against the real example service whose pidfile
    names a process that has ended: the stop says the service still answers, the start refuses to
    start a second copy (it would die with "Address already in use" while the old one answers)."""
    import yaml

    plan = yaml.safe_load((example.project / "release-plan.yaml").read_text())
    [service] = [p for p in plan["rollback"]["procedures"] if p["name"] == "service_rollback"]
    stop, start = service["actions"]["stop"]["process_stop"], service["actions"]["start"]["process_start"]
    pidfile = example.project / "var" / "service.pid"
    serving = int(pidfile.read_text())
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pidfile.write_text(ended.stdout)
    stopped = act("process_stop", example.project, **stop)
    assert not stopped.passed and "the service still answers" in stopped.summary
    assert f"served by pid {serving}" in stopped.summary
    started = act("process_start", example.project, **start)
    assert not started.passed and "already served by another process" in started.summary, started.summary
    assert example.get("/version") == (200, {"version": "1.0.0"})
    pidfile.write_text(f"{serving}\n")  # the fixture stops it
