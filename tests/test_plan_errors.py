"""Broken plans: each stops with exit 4, names file:line:col and the path, prints no traceback,
and runs nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

SEED_STRATEGY = """\
strategy:
  stages:
    - {name: pre_release, validation: true, rollback: true, monitoring: true}
  gates:
    - {name: validation_gate, required: true, timeout: 300}
"""

GOOD_GATES = """\
validation:
  gates:
    - name: service_validation
      checks: [health]
      timeout: 30
"""

TARGETS = """\
targets:
  api: {url: "http://127.0.0.1:9"}
  db: {sqlite: app.db}
"""

CASES = {
    "yaml-syntax": (TARGETS + SEED_STRATEGY + "validation:\n  gates: [\n", "release-plan.yaml:", "(yaml)"),
    "unknown-key": (TARGETS + SEED_STRATEGY.replace("validation: true", "validaton: true") + GOOD_GATES,
                    "release-plan.yaml:6:", "unknown key 'validaton' (did you mean 'validation'?)"),
    "unknown-section": (TARGETS + SEED_STRATEGY + GOOD_GATES + "monitorin: {}\n",
                        "release-plan.yaml:14:1: monitorin:", "did you mean 'monitoring'?"),
    "duplicate-key": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: 30\n      timeout: 40"),
                      "release-plan.yaml:14:7: validation.gates[0].timeout:", "duplicate key 'timeout' (first at line 13)"),
    "wrong-type": (TARGETS + SEED_STRATEGY.replace("required: true", "required: maybe") + GOOD_GATES,
                   "release-plan.yaml:8:", "strategy.gates[0].required: 'maybe' is a string, expected a boolean"),
    "out-of-range": (TARGETS + SEED_STRATEGY + GOOD_GATES + "  metrics:\n    - {name: m, threshold: 1.5, window: 300}\n",
                     "release-plan.yaml:15:", "validation.metrics[0].threshold: 1.5 is out of range"),
    "bad-unit": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: 30 minutes"),
                 "release-plan.yaml:13:16: validation.gates[0].timeout:", "is not a duration"),
    "zero-budget": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: 0s"),
                    "release-plan.yaml:13:16:", "must be more than zero"),
    "unset-env": (TARGETS.replace("app.db", '"${env:PYTEST_RELEASE_UNSET_VAR}"') + SEED_STRATEGY + GOOD_GATES,
                  "release-plan.yaml:3:", "environment variable PYTEST_RELEASE_UNSET_VAR is not set"),
    "dangling-target": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("checks: [health]", "checks: [health]\n      targets: [apii]"),
                        "release-plan.yaml:13:", "no target named 'apii' (did you mean 'api'?)"),
    "dangling-stage": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("checks: [health]", "checks: [health]\n      stages: [release]"),
                       "release-plan.yaml:13:", "no stage named 'release'"),
    "dangling-procedure": (TARGETS + SEED_STRATEGY + GOOD_GATES
                           + "rollback:\n  triggers:\n    - {name: validation_failure, action: rollback, procedures: [svc]}\n"
                           + "  procedures:\n    - {name: service_rollback, steps: [stop, revert, start]}\n",
                           "release-plan.yaml:16:", "no rollback procedure named 'svc'"),
    "unknown-check-kind": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("checks: [health]", "checks: [helth]"),
                           "release-plan.yaml:12:", "'helth' is not a check kind (did you mean 'health'?)"),
    "check-without-target": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("checks: [health]", "checks: [syntax]"),
                             "release-plan.yaml:12:", "check 'syntax' judges config targets"),
    "bad-check-param": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("checks: [health]", "checks: [{health: {stat: 200}}]"),
                        "release-plan.yaml:12:", "unknown key 'stat' (did you mean 'status'?)"),
    "object-tag": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: !!python/object/apply:os.system [id]"),
                   "release-plan.yaml:13:", "is not allowed: a plan holds plain data only"),
    "alias-bomb": ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                   "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                   "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
                   "release-plan.yaml:1:1: (yaml):", "alias bomb"),
    "empty": ("", "release-plan.yaml:1:1:", "the file is empty"),
    "not-a-mapping": ("- just\n- a list\n", "release-plan.yaml:1:1: (plan):", "a plan is a mapping of sections"),
    "missing-strategy": (TARGETS + GOOD_GATES, "release-plan.yaml:1:1: (plan):", "missing required key 'strategy'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_plan_exits_4_with_position_and_no_traceback(pytester: pytest.Pytester, case: str) -> None:
    text, where, message = CASES[case]
    (pytester.path / "release-plan.yaml").write_text(text, "utf-8")
    pytester.makepyfile(test_marker="def test_never_runs():\n    open('RAN', 'w').close()\n")
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "test_marker.py")
    assert time.monotonic() - started < 20
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert where in err, err
    assert message in err, err
    assert "Traceback" not in err + result.stdout.str()
    assert not (pytester.path / "RAN").exists()


def test_non_utf8_plan(pytester: pytest.Pytester) -> None:
    (pytester.path / "release-plan.yaml").write_bytes(b"strategy:\n  stages: [{name: caf\xe9}]\n")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*release-plan.yaml:2:22: (file): not UTF-8*"])


def test_missing_plan_file(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--release-plan", "nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*nope.yaml:1:1: (file): cannot read: No such file or directory*"])


def test_every_problem_is_reported_at_once(pytester: pytest.Pytester) -> None:
    text = (TARGETS + SEED_STRATEGY.replace("required: true", "required: maybe")
            + GOOD_GATES.replace("checks: [health]", "checks: [helth]").replace("timeout: 30", "timeout: 3x"))
    (pytester.path / "release-plan.yaml").write_text(text, "utf-8")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = result.stderr.lines
    assert lines[0] == "ERROR: the release plan has 3 problem(s):"
    assert lines[1].startswith("release-plan.yaml:8:41: strategy.gates[0].required: 'maybe'")
    assert lines[2].startswith("release-plan.yaml:12:16: validation.gates[0].checks[0]: 'helth'")
    assert lines[3].startswith("release-plan.yaml:13:16: validation.gates[0].timeout: '3x'")


def test_unknown_stage_option(pytester: pytest.Pytester) -> None:
    (pytester.path / "release-plan.yaml").write_text(TARGETS + SEED_STRATEGY + GOOD_GATES, "utf-8")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-stage", "post")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--release-stage post: no such stage*stages: pre_release*"])


def test_secret_does_not_leak_into_plan_errors(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "hunter2-secret")
    text = TARGETS.replace('"http://127.0.0.1:9"', '"${env:SHOP_DB_PASSWORD}"') + SEED_STRATEGY + GOOD_GATES
    (pytester.path / "release-plan.yaml").write_text(text, "utf-8")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "targets.api.url" in result.stderr.str()
    assert "hunter2" not in result.stderr.str() + result.stdout.str()


def test_http_parameters_on_a_tcp_target(pytester: pytest.Pytester) -> None:
    text = (TARGETS.replace('api: {url: "http://127.0.0.1:9"}', 'api: {tcp: "127.0.0.1:9"}') + SEED_STRATEGY
            + GOOD_GATES.replace("checks: [health]", "checks: [{health: {path: /healthz}}]"))
    (pytester.path / "release-plan.yaml").write_text(text, "utf-8")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("release-plan.yaml:12:16: validation.gates[0].checks[0]: check 'health': path apply to HTTP targets "
            "(url), not to a TCP target") in result.stderr.str()


def test_the_readme_plans_load(tmp_path: Path) -> None:
    """Every plan in the README (a YAML block starting with `release:` or `rollback:`) is valid."""
    import re

    from pytest_release import BUILTIN_KINDS, load_plan

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    plans = [b for b in blocks if b.startswith("release:")]
    assert plans
    strategy = "strategy:\n  stages: [{name: pre_release}, {name: post_release}]\n"
    for block in plans + [strategy + b for b in blocks if b.startswith("rollback:")]:
        path = tmp_path / "plan.yaml"
        path.write_text(block)
        load_plan(path, BUILTIN_KINDS)
