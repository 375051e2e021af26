"""Operator CLI for the example shop service.

    python example_project/ctl.py [--var-dir DIR] init-db [--db PATH]
    python example_project/ctl.py [--var-dir DIR] deploy VERSION
    python example_project/ctl.py [--var-dir DIR] start [--port 18080]
    python example_project/ctl.py [--var-dir DIR] stop
    python example_project/ctl.py [--var-dir DIR] status

Runtime state lives in ``var/`` next to this file unless ``--var-dir`` says
otherwise: ``current`` (symlink to the deployed release), ``app.db``,
``service.pid``, ``service.port`` and ``service.log``. Exit code 0 means
success, 1 means failure with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

BASE = Path(__file__).resolve().parent
RELEASES = BASE / "releases"
SERVICE = BASE / "service.py"
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0)
)
"""
SEED_ITEMS = [(1, "widget", 1999), (2, "gadget", 2499), (3, "gizmo", 999), (4, "doohickey", 450)]


class CtlError(Exception):
    """An expected failure: reported as one line on stderr, exit code 1."""


class State:
    """Paths of the runtime state kept in the var directory."""

    def __init__(self, var_dir: Path) -> None:
        self.var = var_dir
        self.current = var_dir / "current"
        self.db = var_dir / "app.db"
        self.pidfile = var_dir / "service.pid"
        self.portfile = var_dir / "service.port"
        self.log = var_dir / "service.log"


def _pid_alive(pid: int) -> bool:
    """True if *pid* is a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); /proc tells them apart where available
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_service(pid: int) -> bool:
    """Guard against pid reuse: check the command line where /proc exists."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc at all: trust the pidfile
    except OSError:
        return True
    return SERVICE.name.encode() in cmdline


def _running_pid(state: State) -> int | None:
    """Pid of the running service, or None (a stale pidfile is removed)."""
    try:
        pid = int(state.pidfile.read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError:
        state.pidfile.unlink(missing_ok=True)
        return None
    if _pid_alive(pid) and _is_service(pid):
        return pid
    state.pidfile.unlink(missing_ok=True)
    return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _deployed(state: State) -> str | None:
    """Name of the release ``current`` points to, or None."""
    if not state.current.is_symlink():
        return None
    return Path(os.readlink(state.current)).name


def _log_tail(state: State, offset: int = 0, lines: int = 15) -> str:
    """Last *lines* lines of the service log written after byte *offset*."""
    try:
        with open(state.log, "rb") as log:
            log.seek(offset)
            tail = log.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(tail) or "(log is empty)"


def _served_version(url: str) -> str | None:
    """Version reported by the running service's ``/version``, or None."""
    try:
        with urllib.request.urlopen(f"{url}/version", timeout=2) as response:
            return str(json.load(response)["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmd_init_db(state: State, args: argparse.Namespace) -> str:
    """Create the items table and seed rows; safe to run repeatedly."""
    db: Path = args.db or state.db
    db.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(SCHEMA)
        conn.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?)", SEED_ITEMS)
        count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    return f"database {db} ready ({count} items)"


def cmd_deploy(state: State, args: argparse.Namespace) -> str:
    """Atomically point ``current`` at ``releases/VERSION``."""
    version: str = args.version
    release = RELEASES / version
    if "/" in version or version in ("", ".", "..") or not (release / "VERSION").is_file():
        raise CtlError(f"release {version!r} does not exist in {RELEASES}")
    if state.current.exists() and not state.current.is_symlink():
        raise CtlError(f"{state.current} exists and is not a symlink; refusing to replace it")
    state.var.mkdir(parents=True, exist_ok=True)
    previous = _deployed(state)
    _switch(state.current, release, state.var)
    # The live config is the operator's copy of the release's config, in var/config.
    live = state.var / "config"
    live.mkdir(exist_ok=True)
    for source in sorted((release / "config").iterdir()):
        temp = live / f".{source.name}.tmp"
        shutil.copy2(source, temp)
        os.replace(temp, live / source.name)
    message = f"deployed {version} (previous: {previous or 'none'})"
    migration = release / "migrate.sql"
    if migration.is_file():
        with closing(sqlite3.connect(state.db)) as conn, conn:
            conn.executescript(migration.read_text(encoding="utf-8"))
        message += f"; ran {migration.name}"
    if _running_pid(state) is not None:
        message += "; the running service still serves the old release until restarted"
    return message


def _switch(link: Path, target: Path, var: Path) -> None:
    """Point the symlink *link* at *target* atomically (relative to *var*)."""
    tmp = var / f".{link.name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, var), tmp)
    os.replace(tmp, link)


def cmd_start(state: State, args: argparse.Namespace) -> str:
    """Start the service in the background and wait until it accepts connections."""
    port: int = args.port
    if (pid := _running_pid(state)) is not None:
        raise CtlError(f"service already running (pid {pid})")
    if _deployed(state) is None or not state.current.exists():
        raise CtlError("no release deployed; run 'deploy VERSION' first")
    if not state.db.is_file():
        raise CtlError(f"database {state.db} does not exist; run 'init-db' first")
    if _port_open(port):
        raise CtlError(f"port {port} on {HOST} is already in use")
    command = [
        sys.executable, str(SERVICE),
        "--release", str(state.current), "--db", str(state.db), "--config", str(state.var / "config"),
        "--pidfile", str(state.pidfile), "--host", HOST, "--port", str(port),
    ]
    with open(state.log, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CtlError(f"service exited with code {proc.returncode} during start-up; "
                           f"log tail:\n{_log_tail(state, offset)}")
        if _port_open(port):
            state.portfile.write_text(f"{port}\n")
            return f"started pid {proc.pid} on http://{HOST}:{port} (release {_deployed(state)})"
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise CtlError(f"service did not listen on port {port} within {START_TIMEOUT:g}s; "
                   f"log tail:\n{_log_tail(state, offset)}")


def cmd_upgrade(state: State, args: argparse.Namespace) -> str:
    """Stop the service, deploy VERSION (default: $SHOP_RELEASE), start it again on its port."""
    version = args.version or os.environ.get("SHOP_RELEASE")
    if not version:
        raise CtlError("upgrade to which release? give VERSION or set SHOP_RELEASE")
    if args.port is None:
        args.port = int(state.portfile.read_text()) if state.portfile.is_file() else 18080
    args.version = version
    return "\n".join((cmd_stop(state, args), cmd_deploy(state, args), cmd_start(state, args)))


def cmd_stop(state: State, args: argparse.Namespace) -> str:
    """SIGTERM the service, SIGKILL it if it is still alive after the grace period."""
    pid = _running_pid(state)
    state.portfile.unlink(missing_ok=True)
    if pid is None:
        return "service is not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            state.pidfile.unlink(missing_ok=True)
            return f"stopped pid {pid}"
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    state.pidfile.unlink(missing_ok=True)
    return f"killed pid {pid} (did not stop within {STOP_TIMEOUT:g}s of SIGTERM)"


def cmd_status(state: State, args: argparse.Namespace) -> str:
    """Report whether the service runs and which release is deployed."""
    pid = _running_pid(state)
    release = _deployed(state)
    try:
        version = (state.current / "VERSION").read_text().strip() if release else None
    except OSError:
        version = None
    lines = [f"service: running (pid {pid})" if pid else "service: not running"]
    if pid and state.portfile.is_file():
        url = f"http://{HOST}:{state.portfile.read_text().strip()}"
        lines.append(f"url: {url}")
        lines.append(f"serving version: {_served_version(url) or 'unknown (no answer)'}")
    lines.append(f"release: {release or 'none deployed'}")
    lines.append(f"version: {version or 'unknown'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subcommand per operation."""
    parser = argparse.ArgumentParser(prog="ctl.py", description="Operate the example shop service.")
    parser.add_argument("--var-dir", type=Path, default=BASE / "var",
                        help="runtime state directory (default: example_project/var)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init-db", help="create and seed the SQLite database")
    p.add_argument("--db", type=Path, help="database path (default: VAR/app.db)")
    p.set_defaults(func=cmd_init_db)
    p = sub.add_parser("deploy", help="point var/current at releases/VERSION")
    p.add_argument("version")
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("start", help="start the service in the background")
    p.add_argument("--port", type=int, default=18080)
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("upgrade", help="stop, deploy VERSION (default: $SHOP_RELEASE), start again")
    p.add_argument("version", nargs="?")
    p.add_argument("--port", type=int, help="default: the port the service ran on, else 18080")
    p.set_defaults(func=cmd_upgrade)
    sub.add_parser("stop", help="stop the service").set_defaults(func=cmd_stop)
    sub.add_parser("status", help="show service and release status").set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; return the exit code."""
    args = build_parser().parse_args(argv)
    state = State(args.var_dir.resolve())
    try:
        print(args.func(state, args))
    except CtlError as exc:
        print(f"ctl: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:
        print(f"ctl: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
