"""What a rollback step can do: the built-in actions.

A procedure's step names an action: ``{command: {argv: [...]}}``, ``{symlink: {...}}``, ... Each
action kind has a parameter schema, ``run`` (do it, during a rollback) and ``ready`` (the
rollback_gate's readiness check: can it be done? a backup action takes its backup then).

Backups: at readiness a backup action writes the restore point (``to``); during a rollback it
keeps a copy of the state it is about to replace at ``to + ".before-rollback"`` and never touches
the restore point, which the restore action then puts back.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from ..checks.command import run_program
from ..checks.health import http_pool
from ..checks.integrity import parse_manifest, sha256_file
from ..checks.limits import MAX_OUTPUT_PARAM
from ..units import DURATION_SCHEMA, parse_duration

__all__ = ["ACTIONS", "ActionKind", "StepContext", "StepResult"]

SNAPSHOT_SUFFIX = ".before-rollback"


@dataclass
class StepResult:
    """A step's outcome: passed or not, one line for people, the lines under it, the figures."""

    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    """What an action runs with: its parameters, the plan's directory, when its time is up.

    ``mode`` is ``"rollback"`` or ``"readiness"``; ``verify`` judges validation gates again
    (given by name; empty means the gates this rollback is about).
    """

    procedure: str
    step: str
    params: Mapping[str, Any]
    base_dir: Path
    deadline: float
    mode: str = "rollback"
    verify: Callable[[list[str]], StepResult] | None = None
    call_hook: Callable[[StepContext], StepResult | None] | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def path(self, value: str) -> Path:
        return (self.base_dir / value).absolute()


@dataclass(frozen=True)
class ActionKind:
    name: str
    params: Mapping[str, Any]
    run: Callable[[StepContext], StepResult]
    ready: Callable[[StepContext], StepResult]
    backup: bool = False
    description: str = ""


def _obj(properties: Mapping[str, Any], required: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required),
            "additionalProperties": False, "description": description}


def _backup(into: Callable[[StepContext, Path], StepResult]) -> tuple[Callable[[StepContext], StepResult],
                                                                      Callable[[StepContext], StepResult]]:
    """A backup action's (run, ready) from ``into(ctx, where)``: readiness writes the restore point
    at ``to``; a rollback keeps the state it replaces at ``to.before-rollback``, never at ``to``."""

    def run(ctx: StepContext) -> StepResult:
        target = ctx.path(ctx.params["to"])
        return into(ctx, target.with_name(target.name + SNAPSHOT_SUFFIX))

    def ready(ctx: StepContext) -> StepResult:
        return into(ctx, ctx.path(ctx.params["to"]))

    return run, ready


# -- command ------------------------------------------------------------------------------------


def _command(ctx: StepContext) -> StepResult:
    timeout = ctx.remaining()
    if "timeout" in ctx.params:
        timeout = min(timeout, parse_duration(ctx.params["timeout"]))
    done = run_program(ctx.params, ctx.base_dir, timeout)
    want = int(ctx.params.get("exit_code", 0))
    measured = {"exit_code": done.returncode, "duration_s": done.duration}
    if done.returncode is None:
        return StepResult(False, f"{done.shown} {done.error}", done.output_lines(), measured)
    if done.returncode != want:
        return StepResult(False, f"{done.shown} exited {done.returncode}, expected {want}",
                          done.output_lines(), measured)
    return StepResult(True, f"{done.shown} exited {done.returncode}", done.output_lines(), measured)


def _command_ready(ctx: StepContext) -> StepResult:
    argv = ctx.params.get("argv") or ["/bin/sh"]
    program = argv[0]
    cwd = ctx.path(ctx.params.get("cwd", "."))
    found = shutil.which(program) or (os.access(cwd / program, os.X_OK) and str(cwd / program))
    if not found:
        return StepResult(False, f"program {program!r} is not found (PATH, or relative to {cwd})")
    return StepResult(True, f"{program} is runnable ({found})")


# -- files --------------------------------------------------------------------------------------


def _matched(ctx: StepContext) -> list[Path]:
    found: set[Path] = set()
    for pattern in ctx.params["files"]:
        found.update(Path(p).absolute() for p in glob.glob(str(ctx.path(pattern)), recursive=True)
                     if Path(p).is_file())
    return sorted(found)


def _relative(ctx: StepContext, path: Path) -> str:
    try:
        return path.relative_to(ctx.base_dir.absolute()).as_posix()
    except ValueError:
        raise ValueError(f"{path} is outside the plan's directory; back up files below it") from None


def _file_backup_into(ctx: StepContext, target: Path) -> StepResult:
    files = _matched(ctx)
    if not files:
        return StepResult(False, f"no file matches {', '.join(ctx.params['files'])}")
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    lines = []
    for path in files:
        rel = _relative(ctx, path)
        copy = staging / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
        lines.append(f"{sha256_file(copy)}  {rel}")
    (staging / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    problems = _check_sums(staging)
    if problems:
        shutil.rmtree(staging, ignore_errors=True)
        return StepResult(False, f"backup of {len(files)} file(s) does not verify: {problems[0]}", problems)
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return StepResult(True, f"{len(files)} file(s) backed up to {target} and verified",
                      [line.split("  ", 1)[1] for line in lines], {"files": len(files)})


def _check_sums(directory: Path) -> list[str]:
    try:
        entries, bad = parse_manifest((directory / "SHA256SUMS").read_text("utf-8"))
    except OSError as exc:
        return [f"{directory}/SHA256SUMS: {exc.strerror or exc}"]
    problems = list(bad)
    for want, rel, _ in entries:
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel}: missing from the backup")
        elif sha256_file(path) != want:
            problems.append(f"{rel}: changed since it was backed up")
    return problems


def _file_restore(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    problems = _check_sums(source)
    if problems:
        return StepResult(False, f"backup {source} does not verify, nothing restored: {problems[0]}", problems)
    entries, _ = parse_manifest((source / "SHA256SUMS").read_text("utf-8"))
    into = ctx.path(ctx.params.get("to", "."))
    for _, rel, _ in entries:
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copy2(source / rel, temp)
        os.replace(temp, target)
    restored = [f"{rel}" for _, rel, _ in entries]
    mismatched = [rel for want, rel, _ in entries if sha256_file(into / rel) != want]
    if mismatched:
        return StepResult(False, f"{len(mismatched)} restored file(s) differ from the backup", mismatched)
    return StepResult(True, f"{len(entries)} file(s) restored from {source} and verified", restored,
                      {"files": len(entries)})


def _file_restore_ready(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    if not source.is_dir():
        return StepResult(False, f"no backup at {source} to restore from")
    problems = _check_sums(source)
    if problems:
        return StepResult(False, f"backup {source} does not verify: {problems[0]}", problems)
    return StepResult(True, f"backup {source} is there and verifies")


# -- SQLite -------------------------------------------------------------------------------------


def _integrity(path: Path, timeout: float) -> str:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=max(timeout, 0.1))
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _sqlite_copy(source: Path, target: Path, timeout: float) -> None:
    """Copy a live database with the backup API: consistent while the service writes to it."""
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=max(timeout, 0.1))
    dst = sqlite3.connect(target, timeout=max(timeout, 0.1))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _sqlite_backup_into(ctx: StepContext, target: Path) -> StepResult:
    db = ctx.path(ctx.params["db"])
    if not db.is_file():
        return StepResult(False, f"no SQLite database at {db}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        _sqlite_copy(db, temp, ctx.remaining())
        check = _integrity(temp, ctx.remaining())
    except sqlite3.Error as exc:
        temp.unlink(missing_ok=True)
        return StepResult(False, f"backup of {db} failed: {exc}")
    if check != "ok":
        temp.unlink(missing_ok=True)
        return StepResult(False, f"backup of {db} does not pass integrity_check: {check}")
    digest = sha256_file(temp)
    os.replace(temp, target)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    return StepResult(True, f"{db.name} backed up to {target} (integrity_check ok, sha256 {digest[:12]})",
                      measured={"sha256": digest, "bytes": target.stat().st_size})


def _verified_backup(path: Path, timeout: float) -> str | None:
    """Why the backup at ``path`` cannot be restored, or ``None``."""
    if not path.is_file():
        return f"no backup at {path}"
    sums = path.with_name(path.name + ".sha256")
    try:
        want = sums.read_text().split()[0]
    except (OSError, IndexError):
        return f"no checksum {sums} beside the backup"
    if sha256_file(path) != want:
        return f"backup {path} changed since it was taken (sha256 differs from {sums.name})"
    try:
        check = _integrity(path, timeout)
    except sqlite3.Error as exc:
        return f"backup {path} cannot be read: {exc}"
    return None if check == "ok" else f"backup {path} fails integrity_check: {check}"


def _sqlite_restore(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    db = ctx.path(ctx.params["db"])
    problem = _verified_backup(source, ctx.remaining())
    if problem:
        return StepResult(False, f"{problem}; nothing restored")
    try:
        _sqlite_copy(source, db, ctx.remaining())
        check = _integrity(db, ctx.remaining())
    except sqlite3.Error as exc:
        return StepResult(False, f"restore of {db} from {source} failed: {exc}")
    if check != "ok":
        return StepResult(False, f"restored {db} fails integrity_check: {check}")
    return StepResult(True, f"{db.name} restored from {source} (integrity_check ok)")


def _sqlite_restore_ready(ctx: StepContext) -> StepResult:
    source = ctx.path(ctx.params["from"])
    problem = _verified_backup(source, ctx.remaining())
    return StepResult(False, problem) if problem else StepResult(True, f"backup {source} is there and verifies")


# -- releases -----------------------------------------------------------------------------------


def _symlink(ctx: StepContext) -> StepResult:
    link = ctx.path(ctx.params["link"])
    target = Path(os.path.realpath(ctx.path(ctx.params["to"])))
    if not target.exists():
        return StepResult(False, f"release to revert to does not exist: {target}")
    before = os.path.realpath(link) if link.is_symlink() else None
    temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    os.replace(temp, link)
    return StepResult(True, f"{link.name} -> {target} (was {before or 'not a link'})",
                      measured={"from": before, "to": str(target)})


def _symlink_backup_into(ctx: StepContext, target: Path) -> StepResult:
    link = ctx.path(ctx.params["link"])
    if not link.exists():
        return StepResult(False, f"{link} does not exist: no release to remember")
    live = Path(os.path.realpath(link))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    os.symlink(live, temp)
    os.replace(temp, target)
    return StepResult(True, f"remembered {link.name} -> {live} as {target}", measured={"release": str(live)})


def _symlink_ready(ctx: StepContext) -> StepResult:
    target = Path(os.path.realpath(ctx.path(ctx.params["to"])))
    if not target.exists():
        return StepResult(False, f"release to revert to does not exist: {ctx.params['to']} ({target})")
    return StepResult(True, f"release to revert to is there: {target}")


# -- processes ----------------------------------------------------------------------------------

_started: list[subprocess.Popen[bytes]] = []  # kept so that they are not reaped as garbage


def _pid(ctx: StepContext) -> int | None:
    try:
        return int(ctx.path(ctx.params["pidfile"]).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # our own child, and it has ended
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_dead(pid: int, until: float) -> bool:
    while time.monotonic() < until:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _process_stop(ctx: StepContext) -> StepResult:
    pid = _pid(ctx)
    if pid is None or not _alive(pid):
        return StepResult(True, f"not running (pidfile {ctx.params['pidfile']}: "
                                f"{'no live process' if pid else 'absent'})")
    grace = parse_duration(ctx.params.get("grace", 5))
    os.kill(pid, signal.SIGTERM)
    if _wait_dead(pid, time.monotonic() + min(grace, max(ctx.remaining(), 0))):
        return StepResult(True, f"pid {pid} stopped with SIGTERM", measured={"pid": pid, "signal": "SIGTERM"})
    os.kill(pid, signal.SIGKILL)
    if _wait_dead(pid, time.monotonic() + 5):
        return StepResult(True, f"pid {pid} ignored SIGTERM for {grace:g}s; killed with SIGKILL",
                          measured={"pid": pid, "signal": "SIGKILL"})
    return StepResult(False, f"pid {pid} is still alive after SIGKILL")


def _process_stop_ready(ctx: StepContext) -> StepResult:
    pid = _pid(ctx)
    state = f"pid {pid} running" if pid and _alive(pid) else "not running now"
    return StepResult(True, f"stops the process in {ctx.params['pidfile']} ({state})")


def _healthy(ctx: StepContext, timeout: float) -> str | None:
    """``None`` when the started service answers its health probe, else what it said."""
    probe = ctx.params.get("healthy") or {}
    if "url" in probe:
        try:
            response = http_pool().request("GET", probe["url"], timeout=urllib3.Timeout(total=max(timeout, 0.1)),
                                           retries=False, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            return f"GET {probe['url']} failed: {exc}"
        return None if 200 <= response.status < 300 else f"GET {probe['url']} answered {response.status}"
    if "tcp" in probe:
        host, _, port = probe["tcp"].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=max(timeout, 0.1)):
                return None
        except OSError as exc:
            return f"TCP connect to {probe['tcp']} failed: {exc.strerror or exc}"
    return None


def _process_start(ctx: StepContext) -> StepResult:
    pid = _pid(ctx) if "pidfile" in ctx.params else None
    if pid and _alive(pid) and _healthy(ctx, 2) is None:
        return StepResult(True, f"already running and healthy (pid {pid})", measured={"pid": pid})
    log_path = ctx.path(ctx.params.get("log", os.devnull))
    env = dict(os.environ)
    env.update({k: str(v) for k, v in ctx.params.get("env", {}).items()})
    started = time.monotonic()
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(list(ctx.params["argv"]), cwd=ctx.path(ctx.params.get("cwd", ".")), env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            return StepResult(False, f"{ctx.params['argv'][0]} could not start: {exc.strerror or exc}")
    _started.append(proc)
    wait = min(parse_duration(ctx.params.get("wait", 10)), max(ctx.remaining(), 0))
    last = "not probed yet"
    while time.monotonic() - started < wait:
        if proc.poll() is not None:
            return StepResult(False, f"exited with {proc.returncode} while starting", _log_tail(log_path))
        last = _healthy(ctx, 1.0) or ""
        if not last:
            if "pidfile" in ctx.params and _pid(ctx) is None:
                ctx.path(ctx.params["pidfile"]).write_text(f"{proc.pid}\n")
            took = round(time.monotonic() - started, 3)
            return StepResult(True, f"started pid {proc.pid}, healthy after {took}s",
                              measured={"pid": proc.pid, "healthy_after_s": took})
        time.sleep(0.1)
    return StepResult(False, f"started pid {proc.pid} but it was not healthy within {wait:g}s: {last}",
                      _log_tail(log_path))


def _log_tail(path: Path) -> list[str]:
    try:
        return path.read_text("utf-8", "replace").splitlines()[-20:]
    except OSError:
        return []


def _process_start_ready(ctx: StepContext) -> StepResult:
    program = ctx.params["argv"][0]
    cwd = ctx.path(ctx.params.get("cwd", "."))
    if not (shutil.which(program) or (cwd / program).is_file()):
        return StepResult(False, f"program {program!r} is not found")
    return StepResult(True, f"starts {program}")


# -- verify and hooks ---------------------------------------------------------------------------


def _verify(ctx: StepContext) -> StepResult:
    assert ctx.verify is not None
    return ctx.verify(list(ctx.params.get("gates", [])))


def _verify_ready(ctx: StepContext) -> StepResult:
    return StepResult(True, "judges the validation gates again after the rollback")


def _hook(ctx: StepContext) -> StepResult:
    assert ctx.call_hook is not None
    result = ctx.call_hook(ctx)
    if result is None:
        return StepResult(False, "no pytest_release_rollback_step hook implementation performed this step")
    return result


def _hook_ready(ctx: StepContext) -> StepResult:
    if ctx.call_hook is None:
        return StepResult(False, "no pytest_release_rollback_step hook is implemented (conftest.py or a plugin)")
    result = ctx.call_hook(ctx)
    if result is None:
        return StepResult(False, "no pytest_release_rollback_step implementation answered for this step")
    return result


_PROBE = {"type": "object", "additionalProperties": False, "maxProperties": 1,
          "properties": {"url": {"type": "string", "pattern": "^https?://"},
                         "tcp": {"type": "string", "pattern": r"^[^:\s]+:[0-9]{1,5}$"}},
          "description": "a health probe: {url: ...} (2xx) or {tcp: host:port}"}
_ARGV = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_ENV = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}

ACTIONS: dict[str, ActionKind] = {a.name: a for a in (
    ActionKind("command", {
        "type": "object", "additionalProperties": False,
        "properties": {"argv": _ARGV, "shell": {"type": "string", "minLength": 1}, "cwd": {"type": "string"},
                       "env": _ENV, "timeout": DURATION_SCHEMA, "exit_code": {"type": "integer"},
                       "max_output": MAX_OUTPUT_PARAM},
        "oneOf": [{"required": ["argv"]}, {"required": ["shell"]}],
        "description": "a command: argv (a list, no shell) or shell (a string for /bin/sh -c), not both"},
        _command, _command_ready, description="run a program; it must exit 0 (or exit_code)"),
    ActionKind("file_backup", _obj({"files": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                    "to": {"type": "string"}}, ("files", "to"), "files to back up, and where"),
               *_backup(_file_backup_into), backup=True,
               description="copy files (globs) with a SHA256SUMS into a backup folder"),
    ActionKind("file_restore", _obj({"from": {"type": "string"}, "to": {"type": "string"}}, ("from",),
                                    "a backup folder to restore from"),
               _file_restore, _file_restore_ready, description="verify a file backup and put its files back"),
    ActionKind("sqlite_backup", _obj({"db": {"type": "string"}, "to": {"type": "string"}}, ("db", "to"),
                                     "a SQLite database and where its backup goes"),
               *_backup(_sqlite_backup_into), backup=True,
               description="SQLite backup API copy, integrity-checked, with its SHA-256"),
    ActionKind("sqlite_restore", _obj({"db": {"type": "string"}, "from": {"type": "string"}}, ("db", "from"),
                                      "a SQLite database and the backup to restore into it"),
               _sqlite_restore, _sqlite_restore_ready,
               description="verify a SQLite backup and restore it into the live database"),
    ActionKind("symlink", _obj({"link": {"type": "string"}, "to": {"type": "string"}}, ("link", "to"),
                               "a symlink and the release it should point to"),
               _symlink, _symlink_ready, description="switch a symlink to another release, atomically"),
    ActionKind("symlink_backup", _obj({"link": {"type": "string"}, "to": {"type": "string"}}, ("link", "to"),
                                      "a symlink whose release to remember, and where"),
               *_backup(_symlink_backup_into), backup=True,
               description="remember the release a symlink points to (the release to revert to)"),
    ActionKind("process_stop", _obj({"pidfile": {"type": "string"}, "grace": DURATION_SCHEMA}, ("pidfile",),
                                    "a pidfile, and how long SIGTERM may take before SIGKILL"),
               _process_stop, _process_stop_ready, description="SIGTERM, then SIGKILL after the grace period"),
    ActionKind("process_start", _obj({"argv": _ARGV, "cwd": {"type": "string"}, "env": _ENV,
                                      "pidfile": {"type": "string"}, "log": {"type": "string"},
                                      "healthy": _PROBE, "wait": DURATION_SCHEMA}, ("argv",),
                                     "a program to start in the background, and how to tell it is healthy"),
               _process_start, _process_start_ready, description="start a service and wait until it is healthy"),
    ActionKind("verify", _obj({"gates": {"type": "array", "items": {"type": "string"}}}, (),
                              "the validation gates to judge again"),
               _verify, _verify_ready, description="judge validation gates again against the restored system"),
    ActionKind("hook", {"type": "object", "description": "parameters passed to the hook"},
               _hook, _hook_ready, description="a pytest_release_rollback_step hook in conftest.py or a plugin"),
)}

