"""``command``: run a program and judge its exit code and output.

Parameters: ``argv`` (a list: run without a shell) or ``shell`` (a string: run with
``/bin/sh -c``, only when the plan asks for it), ``cwd`` (relative to the plan), ``env`` (added
to the environment), ``exit_code`` (default 0), ``output`` (a regular expression that stdout or
stderr must match; matched against the output kept), ``max_output`` (the most bytes kept of
stdout, and of stderr: see :mod:`.limits`), ``name`` (the item's name, default the program's
name). The command's timeout is the gate's budget left; on timeout its whole process group is
killed, and so it is when the run is interrupted while it waits (Ctrl-C, SIGTERM).

Whoever must know which process group a program runs in (the rollback's journal, so that a run
resuming a killed rollback can end it) wraps the call in :func:`on_program_start`.
"""

from __future__ import annotations

import contextvars
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..units import ENV_SCHEMA
from .base import CheckContext, CheckKind, CheckResult
from .limits import MAX_OUTPUT_PARAM, SHOWN_LINES, max_output

__all__ = ["COMMAND", "ProgramRun", "command_label", "on_program_start", "run_program"]

#: Called with (pid, shown command) right after a program started, in this context only.
_STARTED: contextvars.ContextVar[Callable[[int, str], None] | None] = contextvars.ContextVar(
    "pytest_release_program_started", default=None)


@contextmanager
def on_program_start(callback: Callable[[int, str], None]) -> Iterator[None]:
    """Within this block (this thread or task), ``callback(pid, shown)`` is called as soon as
    :func:`run_program` has started a program; ``pid`` is also its process group's id."""
    token = _STARTED.set(callback)
    try:
        yield
    finally:
        _STARTED.reset(token)

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "shell": {"type": "string", "minLength": 1},
        "cwd": {"type": "string"},
        "env": ENV_SCHEMA,
        "exit_code": {"type": "integer"},
        "output": {"type": "string", "format": "regex"},
        "max_output": MAX_OUTPUT_PARAM,
        "name": {"type": "string"},
    },
    "oneOf": [{"required": ["argv"]}, {"required": ["shell"]}],
    "description": "a command: argv (a list, no shell) or shell (a string for /bin/sh -c), not both",
}

TAIL = 2000
READ_CHUNK = 64 * 1024
#: How long the reading of a killed program's output may take to end.
KILL_GRACE = 1.0


def command_label(params: Mapping[str, Any]) -> str:
    """The item name of a command check: its ``name``, else its program's base name."""
    if params.get("name"):
        return str(params["name"])
    if params.get("argv"):
        return Path(params["argv"][0]).name
    return "shell"


def _tail(text: str) -> str:
    return text if len(text) <= TAIL else "..." + text[-TAIL:]


@dataclass
class ProgramRun:
    """What running a program came to: its exit code (``None`` when it did not finish), output."""

    shown: str
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    error: str = ""
    #: Bytes the program wrote to stdout and stderr, and how many of them were not kept.
    output_bytes: int = 0
    output_dropped: int = 0

    def output_lines(self) -> list[str]:
        return _output_lines(self.stdout, self.stderr)

    def output_excerpt(self, lines: int = SHOWN_LINES) -> list[str]:
        """The last ``lines`` lines of stdout and of stderr, for the terminal."""
        return _output_lines(self.stdout, self.stderr, lines)

    def output_figures(self) -> dict[str, int]:
        """``output_bytes`` written, and ``output_dropped`` when some were not kept."""
        figures = {"output_bytes": self.output_bytes}
        if self.output_dropped:
            figures["output_dropped"] = self.output_dropped
        return figures


class _Capture:
    """One pipe of a program, read to its end on a thread of its own: its first ``limit // 2``
    bytes and its last ``limit - limit // 2`` are kept, the rest is counted and dropped."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.head = bytearray()
        self.tail = bytearray()
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.total = 0
        self.thread = threading.Thread(target=self._drain, name="pytest-release-output", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, READ_CHUNK)
                if not chunk:
                    return
                self.total += len(chunk)
                room = self.head_limit - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk and self.tail_limit:
                    self.tail += chunk
                    if len(self.tail) > 2 * self.tail_limit:  # trim now and then, not on every read
                        del self.tail[:-self.tail_limit]
        except OSError:
            return

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_limit:]) if self.tail_limit else b""
        dropped = self.total - len(self.head) - len(tail)
        if dropped <= 0:
            return (bytes(self.head) + tail).decode("utf-8", "replace")
        return (bytes(self.head).decode("utf-8", "replace") + f"\n[... {dropped} bytes not kept ...]\n"
                + tail.decode("utf-8", "replace"))

    @property
    def cut(self) -> int:
        """How many bytes were read and not kept."""
        return max(0, self.total - self.head_limit - self.tail_limit)


def run_program(params: Mapping[str, Any], base_dir: Path, timeout: float) -> ProgramRun:
    """Run ``argv`` (no shell) or ``shell`` (``/bin/sh -c``) from ``params`` with ``cwd`` and
    ``env``, for at most ``timeout`` seconds; on timeout the whole process group is killed.
    At most ``max_output`` bytes (default :data:`.limits.MAX_OUTPUT`) of stdout, and as many of
    stderr, are kept: the rest is read and dropped, so a program that writes without end uses no
    memory for it. Used by the ``command`` check and the ``command`` rollback action."""
    argv = list(params["argv"]) if "argv" in params else ["/bin/sh", "-c", params["shell"]]
    shown = shlex.join(argv) if "argv" in params else f"sh -c {params['shell']!r}"
    cwd = (base_dir / params["cwd"]).resolve() if "cwd" in params else base_dir
    env = dict(os.environ)
    env.update({k: str(v) for k, v in params.get("env", {}).items()})
    limit = max_output(params)
    if timeout <= 0:
        return ProgramRun(shown, None, error="not run: no time left")
    started = time.monotonic()
    deadline = started + timeout
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True, bufsize=0)
    except OSError as exc:
        return ProgramRun(shown, None, error=f"could not start: {exc.strerror or exc}")
    assert proc.stdout is not None and proc.stderr is not None
    captures = [_Capture(proc.stdout.fileno(), limit), _Capture(proc.stderr.fileno(), limit)]
    error = ""
    listener = _STARTED.get()
    try:
        if listener is not None:
            listener(proc.pid, shown)
        proc.wait(timeout=max(deadline - time.monotonic(), 0))
        for capture in captures:  # a child it left behind may hold the pipes open: not past the deadline
            capture.thread.join(max(deadline - time.monotonic(), 0))
        if any(c.thread.is_alive() for c in captures):
            raise subprocess.TimeoutExpired(argv, timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        error = f"did not finish within {time.monotonic() - started:.1f}s; killed"
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the program must not outlive its check
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        raise
    finally:
        for capture in captures:
            capture.thread.join(KILL_GRACE)  # EOF once the killed group is gone
        if any(c.thread.is_alive() for c in captures):
            error = error or "its output pipes stayed open"
            error += " (a process outside its group still holds its output open)"
        else:
            proc.stdout.close()
            proc.stderr.close()
    out, err = captures
    done = ProgramRun(shown, None if error else proc.returncode, out.text(), err.text(),
                      round(time.monotonic() - started, 3), error)
    done.output_bytes = out.total + err.total
    done.output_dropped = out.cut + err.cut
    return done


def run(ctx: CheckContext) -> CheckResult:
    params = ctx.params
    want = int(params.get("exit_code", 0))
    expected: dict[str, Any] = {"exit_code": want}
    if "output" in params:
        expected["output"] = params["output"]
    done = run_program(params, ctx.base_dir, ctx.remaining())
    if done.returncode is None:
        if "no time left" in done.error:
            return CheckResult(False, f"{done.shown} not run: {ctx.budget_text()} was used up", {}, expected)
        if done.error.startswith("could not start"):
            return CheckResult(False, f"{done.shown} {done.error}", {"error": done.error}, expected)
        return CheckResult(False, f"{done.shown} {done.error} ({ctx.budget_text()} ran out)",
                           {"error": "timeout", "duration_s": done.duration, **done.output_figures()}, expected,
                           done.output_lines(), done.output_excerpt())
    measured: dict[str, Any] = {"exit_code": done.returncode, "duration_s": done.duration,
                                **done.output_figures()}
    problems = []
    if done.returncode != want:
        problems.append(f"exited {done.returncode}, expected {want}")
    if "output" in params and not re.search(params["output"], done.stdout + done.stderr, re.MULTILINE):
        problems.append(f"output does not match {params['output']!r}")
    if problems:
        return CheckResult(False, f"{done.shown} " + "; ".join(problems), measured, expected, done.output_lines(),
                           done.output_excerpt())
    return CheckResult(True, f"{done.shown} exited {done.returncode} in {done.duration}s", measured, expected)


def _output_lines(out: str, err: str, last: int | None = None) -> list[str]:
    lines = []
    for label, data in (("stdout", out), ("stderr", err)):
        text = data.rstrip()
        if text:
            kept = _tail(text).splitlines()
            if last is not None and len(kept) > last:
                lines.append(f"--- {label} (last {last} lines) ---")
                kept = kept[-last:]
            else:
                lines.append(f"--- {label} ---")
            lines.extend(kept)
    return lines


COMMAND = CheckKind(
    name="command",
    judges=frozenset(),
    params=PARAMS,
    run=run,
    description="run a program (argv, no shell unless asked); judge exit code and output",
    label=command_label,
)
