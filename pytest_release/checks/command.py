"""``command``: run a program and judge its exit code and output.

Parameters: ``argv`` (a list: run without a shell) or ``shell`` (a string: run with
``/bin/sh -c``, only when the plan asks for it), ``cwd`` (relative to the plan), ``env`` (added
to the environment), ``exit_code`` (default 0), ``output`` (a regular expression that stdout or
stderr must match), ``name`` (the item's name, default the program's name). The command's
timeout is the gate's budget left; on timeout its whole process group is killed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import CheckContext, CheckKind, CheckResult

__all__ = ["COMMAND", "ProgramRun", "command_label", "run_program"]

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "shell": {"type": "string", "minLength": 1},
        "cwd": {"type": "string"},
        "env": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "exit_code": {"type": "integer"},
        "output": {"type": "string", "format": "regex"},
        "name": {"type": "string"},
    },
    "oneOf": [{"required": ["argv"]}, {"required": ["shell"]}],
    "description": "a command: argv (a list, no shell) or shell (a string for /bin/sh -c), not both",
}

TAIL = 2000


def command_label(params: dict[str, Any]) -> str:
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

    def output_lines(self) -> list[str]:
        return _output_lines(self.stdout, self.stderr)


def run_program(params: Mapping[str, Any], base_dir: Path, timeout: float) -> ProgramRun:
    """Run ``argv`` (no shell) or ``shell`` (``/bin/sh -c``) from ``params`` with ``cwd`` and
    ``env``, for at most ``timeout`` seconds; on timeout the whole process group is killed.
    Used by the ``command`` check and the ``command`` rollback action."""
    argv = list(params["argv"]) if "argv" in params else ["/bin/sh", "-c", params["shell"]]
    shown = shlex.join(argv) if "argv" in params else f"sh -c {params['shell']!r}"
    cwd = (base_dir / params["cwd"]).resolve() if "cwd" in params else base_dir
    env = dict(os.environ)
    env.update({k: str(v) for k, v in params.get("env", {}).items()})
    if timeout <= 0:
        return ProgramRun(shown, None, error="not run: no time left")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        return ProgramRun(shown, None, error=f"could not start: {exc.strerror or exc}")
    try:
        out, err = proc.communicate(timeout=timeout)
        error = ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        error = f"did not finish within {time.monotonic() - started:.1f}s; killed"
    return ProgramRun(shown, None if error else proc.returncode, out.decode("utf-8", "replace"),
                      err.decode("utf-8", "replace"), round(time.monotonic() - started, 3), error)


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
                           {"error": "timeout", "duration_s": done.duration}, expected, done.output_lines())
    measured: dict[str, Any] = {"exit_code": done.returncode, "duration_s": done.duration}
    problems = []
    if done.returncode != want:
        problems.append(f"exited {done.returncode}, expected {want}")
    if "output" in params and not re.search(params["output"], done.stdout + done.stderr, re.MULTILINE):
        problems.append(f"output does not match {params['output']!r}")
    if problems:
        return CheckResult(False, f"{done.shown} " + "; ".join(problems), measured, expected, done.output_lines())
    return CheckResult(True, f"{done.shown} exited {done.returncode} in {done.duration}s", measured, expected)


def _output_lines(out: str, err: str) -> list[str]:
    lines = []
    for label, data in (("stdout", out), ("stderr", err)):
        text = data.rstrip()
        if text:
            lines.append(f"--- {label} ---")
            lines.extend(_tail(text).splitlines())
    return lines


COMMAND = CheckKind(
    name="command",
    judges=frozenset(),
    params=PARAMS,
    run=run,
    description="run a program (argv, no shell unless asked); judge exit code and output",
)
