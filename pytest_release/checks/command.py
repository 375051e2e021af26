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
from pathlib import Path
from typing import Any

from .base import CheckContext, CheckKind, CheckResult

__all__ = ["COMMAND", "command_label"]

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


def run(ctx: CheckContext) -> CheckResult:
    params = ctx.params
    argv = list(params["argv"]) if "argv" in params else ["/bin/sh", "-c", params["shell"]]
    shown = shlex.join(argv) if "argv" in params else f"sh -c {params['shell']!r}"
    want = int(params.get("exit_code", 0))
    expected: dict[str, Any] = {"exit_code": want}
    if "output" in params:
        expected["output"] = params["output"]
    cwd = ctx.path(params["cwd"]) if "cwd" in params else ctx.base_dir
    env = dict(os.environ)
    env.update({k: str(v) for k, v in params.get("env", {}).items()})
    remaining = ctx.remaining()
    if remaining <= 0:
        return CheckResult(False, f"{shown} not run: {ctx.budget_text()} was used up", {}, expected)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        return CheckResult(False, f"{shown} could not start: {exc.strerror or exc}", {"error": str(exc)}, expected)
    try:
        out, err = proc.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        took = time.monotonic() - started
        return CheckResult(False, f"{shown} did not finish within {took:.1f}s ({ctx.budget_text()} ran out); killed",
                           {"error": "timeout", "duration_s": round(took, 3)}, expected,
                           _output_lines(out, err))
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    took = round(time.monotonic() - started, 3)
    measured: dict[str, Any] = {"exit_code": proc.returncode, "duration_s": took}
    problems = []
    if proc.returncode != want:
        problems.append(f"exited {proc.returncode}, expected {want}")
    if "output" in params and not re.search(params["output"], stdout + stderr, re.MULTILINE):
        problems.append(f"output does not match {params['output']!r}")
    details = _output_lines(out, err)
    if problems:
        return CheckResult(False, f"{shown} " + "; ".join(problems), measured, expected, details)
    return CheckResult(True, f"{shown} exited {proc.returncode} in {took}s", measured, expected)


def _output_lines(out: bytes, err: bytes) -> list[str]:
    lines = []
    for label, data in (("stdout", out), ("stderr", err)):
        text = data.decode("utf-8", "replace").rstrip()
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
