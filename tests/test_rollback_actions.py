"""The built-in rollback actions against real files, SQLite databases and processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_release.rollback.actions import ACTIONS, StepContext, StepResult


def act(name: str, base: Path, mode: str = "rollback", budget: float = 10, **params: Any) -> StepResult:
    ctx = StepContext("proc", "step", params, base, time.monotonic() + budget, mode)
    action = ACTIONS[name]
    return action.ready(ctx) if mode == "readiness" else action.run(ctx)


def test_file_backup_and_restore_with_checksums(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "app.yaml").write_text("table: items\n")
    (tmp_path / "config" / "flags.json").write_text('{"new": false}\n')
    ready = act("file_backup", tmp_path, "readiness", files=["config/*"], to="backups/config")
    assert ready.passed and ready.measured == {"files": 2}
    assert (tmp_path / "backups" / "config" / "SHA256SUMS").read_text().count("config/") == 2
    (tmp_path / "config" / "app.yaml").write_text("table: items_v2\n")  # the bad release's config
    snapshot = act("file_backup", tmp_path, files=["config/*"], to="backups/config")
    assert snapshot.passed and (tmp_path / "backups" / "config.before-rollback" / "config" / "app.yaml").read_text() \
        == "table: items_v2\n"
    restored = act("file_restore", tmp_path, **{"from": "backups/config"})
    assert restored.passed, restored.summary
    assert (tmp_path / "config" / "app.yaml").read_text() == "table: items\n"


def test_file_restore_refuses_a_tampered_backup(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text("a: 1\n")
    assert act("file_backup", tmp_path, "readiness", files=["app.yaml"], to="bk").passed
    (tmp_path / "bk" / "app.yaml").write_text("a: 2\n")
    (tmp_path / "app.yaml").write_text("a: 3\n")
    assert not act("file_restore", tmp_path, "readiness", **{"from": "bk"}).passed
    result = act("file_restore", tmp_path, **{"from": "bk"})
    assert not result.passed and "app.yaml: changed since it was backed up" in result.summary
    assert (tmp_path / "app.yaml").read_text() == "a: 3\n"  # nothing was restored


def test_sqlite_backup_and_restore_while_a_writer_is_busy(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, price INTEGER)")
        conn.executemany("INSERT INTO items(price) VALUES (?)", [(i,) for i in range(1000)])
    backup = act("sqlite_backup", tmp_path, "readiness", db="app.db", to="bk/app.db")
    assert backup.passed
    writing = threading.Event()

    def writer() -> None:  # the bad release is in the middle of a write when the restore starts
        conn = sqlite3.connect(db, timeout=5, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE items SET price = price * 10 WHERE id % 7 = 0")
        writing.set()
        time.sleep(0.3)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    writing.wait()
    restored = act("sqlite_restore", tmp_path, db="app.db", **{"from": "bk/app.db"})
    thread.join()
    assert restored.passed, restored.summary
    assert restored.measured["content_sha256"] == backup.measured["content_sha256"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT sum(price) FROM items").fetchone() == (sum(range(1000)),)


def test_sqlite_restore_refuses_a_changed_backup(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("CREATE TABLE t(x)")
    assert act("sqlite_backup", tmp_path, "readiness", db="app.db", to="bk.db").passed
    with sqlite3.connect(tmp_path / "bk.db") as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    result = act("sqlite_restore", tmp_path, db="app.db", **{"from": "bk.db"})
    assert not result.passed and "changed since it was taken" in result.summary


def test_symlink_switch_is_atomic_and_checks_the_release(tmp_path: Path) -> None:
    for release in ("1.0.0", "1.1.0"):
        (tmp_path / "releases" / release).mkdir(parents=True)
    os.symlink(tmp_path / "releases" / "1.0.0", tmp_path / "current")
    assert act("symlink_backup", tmp_path, "readiness", link="current", to="bk/release").passed
    os.replace(tmp_path / "current", tmp_path / "old")
    os.symlink(tmp_path / "releases" / "1.1.0", tmp_path / "current")
    switched = act("symlink", tmp_path, link="current", to="bk/release")
    assert switched.passed and os.path.realpath(tmp_path / "current") == str(tmp_path / "releases" / "1.0.0")
    missing = act("symlink", tmp_path, "readiness", link="current", to="releases/2.0.0")
    assert not missing.passed and "release to revert to does not exist" in missing.summary


def test_process_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); open('ready', 'w'); time.sleep(60)"], cwd=tmp_path)
    while not (tmp_path / "ready").exists():
        time.sleep(0.01)
    (tmp_path / "svc.pid").write_text(f"{stubborn.pid}\n")
    result = act("process_stop", tmp_path, pidfile="svc.pid", grace="300ms")
    assert result.passed and "killed with SIGKILL" in result.summary
    with pytest.raises(ProcessLookupError):  # gone (and reaped: it was this process's child)
        os.kill(stubborn.pid, 0)
    again = act("process_stop", tmp_path, pidfile="svc.pid")
    assert again.passed and "not running" in again.summary


def test_process_start_waits_until_healthy_and_reports_a_crash(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-c", "import time, http.server as h; time.sleep(0.3); "
            f"h.ThreadingHTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"]
    started = act("process_start", tmp_path, argv=argv, pidfile="svc.pid", log="svc.log",
                  healthy={"url": f"http://127.0.0.1:{port}/"}, wait="10s")
    try:
        assert started.passed, started.summary
        assert started.measured["healthy_after_s"] >= 0.3
        again = act("process_start", tmp_path, argv=argv, pidfile="svc.pid", healthy={"url": f"http://127.0.0.1:{port}/"})
        assert again.passed and "already running" in again.summary
    finally:
        act("process_stop", tmp_path, pidfile="svc.pid")
    crash = act("process_start", tmp_path, argv=[sys.executable, "-c", "print('no config'); raise SystemExit(3)"],
                log="crash.log", healthy={"tcp": f"127.0.0.1:{port}"}, wait="5s")
    assert not crash.passed and "exited with 3 while starting" in crash.summary and "no config" in crash.details


def test_command_action_runs_without_a_shell(tmp_path: Path) -> None:
    ok = act("command", tmp_path, argv=[sys.executable, "-c", "print('$HOME')"])
    assert ok.passed and "$HOME" in "\n".join(ok.details)
    failed = act("command", tmp_path, argv=[sys.executable, "-c", "raise SystemExit(2)"])
    assert not failed.passed and "exited 2, expected 0" in failed.summary
    hung = act("command", tmp_path, budget=0.5, argv=[sys.executable, "-c", "import time; time.sleep(30)"])
    assert not hung.passed and "did not finish" in hung.summary
