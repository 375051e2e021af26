"""The links a plan may leave out, inferred from names by the loader's one table
(``loader.CONVENTIONS``), and stored in the model as plain data: each implicit link gives what the
explicit one gives, and an explicit link always wins. Also: a check kind that names its items
(``command``) is asked by the loader, not by the model."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import pytest_release
from pytest_release.checks import BUILTIN_KINDS
from pytest_release.loader import CONVENTIONS, load_plan
from pytest_release.model import Plan

BASE = """\
release: {name: shop, version: 1.0.0}
targets:
  api: {url: "http://127.0.0.1:9"}
  db: {sqlite: app.db}
strategy:
  stages: [{name: pre_release}, {name: release}]
  gates:
    - {name: validation_gate}
    - {name: monitoring_gate}
validation:
  gates:
    - {name: service_validation, checks: [health]}
    - {name: data_validation, checks: [integrity]}
    - {name: service_smoke, checks: [health]}
    - name: migrations
      checks:
        - command: {argv: ["/bin/true"]}
        - command: {name: migrate, argv: ["/bin/true"]}
        - command: {shell: "true"}
  metrics:
    - {name: service_metrics%(metric_gates)s}
rollback:
  triggers: [{name: validation_failure, action: rollback}]
  procedures:
    - {name: service_rollback, steps: [stop, verify], actions: {stop: {command: {argv: ["/bin/true"]}}}}
    - {name: data_rollback, steps: [verify]}
monitoring:
  metrics:
    - {name: service_health%(metric_source)s}
    - {name: data_integrity}
  alerts:
    - {name: health_alert%(alert_metric)s}
automation:
  tasks:
    - {name: health_check%(task_check)s}
analytics:
  metrics:
    - {name: system_metrics}
    - {name: performance_metrics}
    - {name: store_size, source: {sql: "SELECT 1", target: db}}
  analysis:
    - {name: system_analysis}
    - {name: size_trend, metric: store_size}
"""

IMPLICIT = {"metric_gates": "", "metric_source": "", "alert_metric": "", "task_check": ""}
EXPLICIT = {"metric_gates": ", gates: [service_validation, service_smoke]",
            "metric_source": ", source: {check: health}",
            "alert_metric": ", metric: service_health",
            "task_check": ", check: health"}


def _load(tmp_path: Path, fields: dict[str, str]) -> Plan:
    path = tmp_path / "release-plan.yaml"
    path.write_text(BASE % fields, "utf-8")
    return load_plan(path, BUILTIN_KINDS)


@pytest.mark.parametrize("fields", [IMPLICIT, EXPLICIT], ids=["from-names", "written-out"])
def test_links_from_names_are_the_links_written_out(tmp_path: Path, fields: dict[str, str]) -> None:
    plan = _load(tmp_path, fields)
    assert plan.metrics["service_metrics"].gates == ("service_validation", "service_smoke")
    assert {p.name: p.gates for p in plan.procedures} == {
        "service_rollback": ("service_validation", "service_smoke"), "data_rollback": ("data_validation",)}
    assert [s.action for s in plan.procedures[1].steps] == ["verify"]  # a bare verify step verifies
    assert [(a.name, a.metric) for a in plan.alerts] == [("health_alert", "service_health")]
    monitors = {n: m.check.kind if m.check else None for n, m in plan.monitors.items()}
    assert monitors == {"service_health": "health", "data_integrity": "integrity"}
    assert [(t.name, t.check.kind, t.metric) for t in plan.tasks] == [("health_check", "health", "service_health")]
    assert {n: (m.source, m.kind) for n, m in plan.analytics_metrics.items()} == {
        "system_metrics": ("system", None), "performance_metrics": ("checks", "performance"),
        "store_size": ("sql", None)}
    assert [(a.name, a.metric, a.checks) for a in plan.analyses] == [
        ("system_analysis", "system_metrics", True), ("size_trend", "store_size", False)]


@pytest.mark.parametrize(("name", "others", "linked"), [
    ("metric_gates", ("service_metrics", ["service_validation", "services_x", "data_validation", "service"]),
     ["service_validation", "service"]),
    ("procedure_gates", ("db_rollback", ["db_validation", "dbx_validation", "db"]), ["db_validation", "db"]),
    ("alert_metric", ("latency_alert", ["api_latency", "latency_p95", "api_latency_p95", "slow"]),
     ["api_latency", "latency_p95", "api_latency_p95"]),
])
def test_each_link_of_the_table(name: str, others: tuple[str, list[str]], linked: list[str]) -> None:
    assert CONVENTIONS[name].linked(*others) == linked


@pytest.mark.parametrize(("name", "given", "word"), [
    ("monitoring_check", "service_health", "health"), ("monitoring_check", "health", "health"),
    ("task_check", "health_check", "health"), ("task_check", "nightly_security_check", "security"),
    ("analytics_source", "performance_metrics", "performance"), ("analytics_source", "system_metrics", "system"),
    ("analysis_metric", "system_analysis", "system_metrics"), ("verify_step", "verify", "verify"),
    ("verify_step", "verify_all", ""),
])
def test_each_word_of_the_table(name: str, given: str, word: str) -> None:
    assert CONVENTIONS[name].word(given) == word


def test_a_kind_names_its_own_items(tmp_path: Path) -> None:
    """``command`` items are named after the program (its kind's ``label``), asked once by the
    loader: the model holds the name as data and knows no check kind."""
    plan = _load(tmp_path, IMPLICIT)
    gate = next(g for g in plan.gates if g.name == "migrations")
    assert [c.item_name(None) for c in gate.checks] == ["command[true]", "command[migrate]", "command[shell]"]
    stage = plan.stages[1]
    assert {c.item_name(None) for c in plan.monitoring_gate(stage).checks} == {
        "metric[service_health]", "metric[data_integrity]"}


def test_no_module_but_the_loader_reads_meaning_into_names() -> None:
    """The naming conventions live in one table: no other module splits a plan name on ``_`` or
    takes a suffix off one (the way the inferences were written before they were gathered)."""
    package = Path(pytest_release.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "loader.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("split", "rpartition", "partition", "removesuffix")
                    and any(isinstance(a, ast.Constant) and a.value in ("_", "_alert", "_check", "_metrics",
                                                                        "_analysis", "_validation", "_rollback")
                            for a in node.args)):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not found, textwrap.shorten(", ".join(found), 300)
