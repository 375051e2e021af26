"""CI annotations: on GitHub Actions, a failure shows on the plan line that defines it.

When ``GITHUB_ACTIONS`` is ``true``, every failed check or rollback step prints a workflow command
``::error file=PLAN,line=L,col=C,title=TITLE::MESSAGE`` (a check of a gate with
``required: false`` that failed: ``::warning``), and every plan problem (exit code 4) an
``::error`` at its position, so the pull request's diff shows them on the plan's lines. The file
is the plan's path relative to ``GITHUB_WORKSPACE`` (else to where pytest runs). Values are
escaped as GitHub's toolkit does (``@actions/core``, ``command.ts``): in the message ``%``, CR and
LF; in properties also ``:`` and ``,``. Secrets from ``${env:...}`` are masked first. GitHub
shows at most 10 errors and 10 warnings of a step: the rest are counted on one plain line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .result import result_of
from .secrets import redact

__all__ = ["command", "enabled", "escape_data", "escape_property", "item_positions", "plan_file", "problem_lines"]

#: GitHub shows this many annotations of each kind per step.
PER_KIND = 10
#: The longest message printed (the record has the whole text).
MESSAGE_CHARS = 1000


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (``%25``, ``%0D``, ``%0A``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as the message, and ``:`` and ``,`` (``%3A``, ``%2C``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, *, file: str, line: int, col: int | None = None, title: str = "") -> str:
    """``::KIND file=...,line=...,col=...,title=...::MESSAGE``, escaped."""
    if kind not in ("error", "warning", "notice"):
        raise ValueError(f"unknown annotation kind {kind!r}")
    props = [f"file={escape_property(file)}", f"line={int(line)}"]
    if col:
        props.append(f"col={int(col)}")
    if title:
        props.append(f"title={escape_property(title)}")
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 3] + "..."
    return f"::{kind} {','.join(props)}::{escape_data(message)}"


def plan_file(path: Path, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """The plan's path as GitHub names files: relative to the workspace (else the working directory)."""
    environ = os.environ if environ is None else environ
    base = environ.get("GITHUB_WORKSPACE") or str(cwd or Path.cwd())
    try:
        relative = os.path.relpath(path, base)
    except ValueError:
        return path.as_posix()
    return Path(relative).as_posix() if not relative.startswith("..") else path.as_posix()


def item_positions(plan: Any, kinds: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``STAGE::GATE::ITEM`` (a node id without the plan) -> (line, col) of the plan entry behind
    it, named as collection names items; ``rollback::PROCEDURE::STEP`` -> the step's."""
    found: dict[str, tuple[int, int]] = {}
    for stage in plan.stages:
        for gate in plan.stage_gates(stage):
            taken: dict[str, int] = {}
            for spec in gate.checks:
                kind = kinds.get(spec.kind)
                targets = plan.targets_for(gate, spec, kinds) if kind is not None and kind.judges else [None]
                for target in targets:
                    base = redact(spec.item_name(target), plan.secrets)
                    taken[base] = taken.get(base, 0) + 1
                    name = base if taken[base] == 1 else f"{spec.label}#{taken[base]}" + base[len(spec.label):]
                    found[f"{stage.name}::{gate.name}::{name}"] = (spec.mark.line, spec.mark.col)
    for procedure in plan.procedures:
        for step in procedure.steps:
            found[f"rollback::{step.id}"] = (step.mark.line, step.mark.col)
    return found


def report_lines(plan: Any, kinds: Mapping[str, Any], failed: Iterable[Any], warned: Iterable[Any],
                 rollback: Any = None, environ: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> list[str]:
    """The workflow commands for a run's failed and warning reports (pytest ``TestReport``s)."""
    file = plan_file(plan.path, environ, cwd)
    positions = item_positions(plan, kinds)
    lines: list[str] = []
    for kind, reports in (("error", list(failed)), ("warning", list(warned))):
        shown = 0
        for report in reports:
            props = {k: v for k, v in report.user_properties}
            result = result_of(report)
            key = report.nodeid.partition("::")[2]
            line, col = positions.get(key) or (_verify_position(plan, key, rollback) or
                                               ((report.location[1] or 0) + 1, 0))
            if "release_rollback" in props:
                title = f"rollback step {key.removeprefix('rollback::')} failed"
            elif kind == "error":
                title = f"{key} failed"
            else:
                title = f"{key}: warning (gate {result.gate if result else ''} is not required)"
            message = str((result.summary if result else props.get("summary")) or _first_line(report))
            for label, value in (("measured", result.measured), ("expected", result.expected)) if result else ():
                if value:
                    message += f"\n{label}: {json.dumps(value, sort_keys=True, default=str)}"
            if shown == PER_KIND:
                break
            lines.append(command(kind, redact(message, plan.secrets), file=file, line=line, col=col or None,
                                 title=redact(f"pytest-release: {title}", plan.secrets)))
            shown += 1
        if len(reports) > PER_KIND:
            lines.append(f"pytest-release: {len(reports) - PER_KIND} more {kind}(s) not annotated "
                         f"(GitHub shows {PER_KIND} per step)")
    return lines


def _verify_position(plan: Any, key: str, rollback: Any) -> tuple[int, int] | None:
    """The final verify of a rollback: the line of the trigger that ran it."""
    if key != "rollback::verify" or rollback is None or rollback.trigger not in plan.triggers:
        return None
    mark = plan.triggers[rollback.trigger].mark
    return mark.line, mark.col


def _first_line(report: Any) -> str:
    text = str(getattr(report, "wasxfail", "") or report.longreprtext).strip()
    return text.splitlines()[0] if text else "failed"


def problem_lines(problems: Iterable[Any], environ: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> list[str]:
    """An ``::error`` per plan problem (``problems.Problem``), at its file, line and column."""
    lines = []
    for problem in list(problems)[:PER_KIND]:
        file = plan_file(Path(problem.file).resolve(), environ, cwd)
        lines.append(command("error", f"{problem.path}: {problem.message}", file=file, line=problem.line,
                             col=problem.col, title="pytest-release: the release plan is wrong"))
    return lines
