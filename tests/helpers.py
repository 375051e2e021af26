"""Plain functions and classes the tests share (fixtures stay in conftest.py): plans, direct check
runs, the example project's handle, waits on files, processes and Prometheus. Tests import them
from here, never from conftest."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_release.checks import BUILTIN_KINDS, CheckContext, CheckResult
from pytest_release.model import Target, target_kind
from pytest_release.prometheus import PrometheusError, instant_query
from pytest_release.yamldoc import Mark

HERE = Path(__file__).parent


def plan_with(gates: str, targets: str = "", stages: str = "[{name: pre_release}]", timeout: str = "10") -> str:
    """A small plan: the given validation gates (YAML list items) and targets (YAML mapping lines)."""
    return (
        "release: {name: shop, version: 1.0.0}\n"
        f"targets:\n{textwrap.indent(textwrap.dedent(targets), '  ') if targets.strip() else '  {}'}\n"
        f"strategy:\n  stages: {stages}\n  gates:\n    - {{name: validation_gate, timeout: {timeout}}}\n"
        f"validation:\n  gates:\n{textwrap.indent(textwrap.dedent(gates), '    ')}\n"
    )


def service_plan(http_url: str, gates: str, timeout: int = 10) -> str:
    """A plan of one stage (pre_release) and one service ``api`` at ``http_url`` (health /healthz):
    the given validation gates (dedented YAML list items)."""
    return (
        "release: {name: shop, version: 1.0.0}\n"
        f"targets:\n  api: {{url: \"{http_url}\", health: /healthz}}\n"
        f"strategy:\n  stages: [{{name: pre_release}}]\n  gates: [{{name: validation_gate, timeout: {timeout}}}]\n"
        f"validation:\n  gates:\n{textwrap.indent(textwrap.dedent(gates), '    ')}"
    )


def run_check(kind: str, spec: dict[str, Any] | None, base: Path, budget: float = 5.0,
              **params: Any) -> CheckResult:
    """Run one check of ``kind`` directly (no pytest run) against a target given by its spec."""
    target = Target("t", target_kind(spec), spec, Mark(1, 1)) if spec is not None else None
    ctx = CheckContext(kind=kind, params=params, target=target, base_dir=base, gate="pre_release::g",
                       budget=budget, deadline=time.monotonic() + budget)
    run = BUILTIN_KINDS[kind].run
    assert run is not None
    return run(ctx)


@dataclass
class Example:
    project: Path
    port: int

    def ctl(self, *args: str) -> str:
        done = subprocess.run([sys.executable, str(self.project / "ctl.py"), *args], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def get(self, path: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def prices(self) -> list[tuple[int, str, int]]:
        with sqlite3.connect(self.project / "var" / "app.db") as conn:
            return conn.execute("SELECT id, name, price_cents FROM items ORDER BY id").fetchall()


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_for_file(path: Path, proc: subprocess.Popen[Any] | None = None, seconds: float = 60) -> None:
    """Wait until ``path`` exists (a program's sign that it reached a point), failing the test when
    ``proc`` ends first or ``seconds`` pass: the event to wait for before sending a signal."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            out = proc.communicate()[0] if proc.stdout is not None else ""
            pytest.fail(f"{path.name} never appeared: the program ended with {proc.returncode}\n{out}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} never appeared within {seconds:g}s", pytrace=False)
        time.sleep(0.01)


def wait_for_data(url: str, query: str, *, until: Callable[[float], bool] | None = None,
                  within: float = 20.0) -> float:
    """Query the Prometheus at ``url`` until ``query`` returns a value (and ``until(value)`` holds);
    the value. Fails the test, with the last answer, when ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = instant_query(url, query, timeout=2)
            last = f"it returned {value}"
            if until is None or until(value):
                return value
        except PrometheusError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            pytest.fail(f"{query} at {url}: no wanted answer within {within:g}s; last: {last}", pytrace=False)
        time.sleep(0.05)
