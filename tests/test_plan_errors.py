"""Broken plans: each stops with exit 4, names file:line:col and the path, prints no traceback,
and runs nothing."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import yaml

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
                   "release-plan.yaml:5:", "more than 100000 values and keys after alias expansion (limit: 100000; "),
    "empty": ("", "release-plan.yaml:1:1:", "the file is empty"),
    "not-a-mapping": ("- just\n- a list\n", "release-plan.yaml:1:1: (plan):", "a plan is a mapping of sections"),
    "missing-strategy": (TARGETS + GOOD_GATES, "release-plan.yaml:1:1: (plan):", "missing required key 'strategy'"),
}

ROLLBACK = """\
rollback:
  triggers:
    - {name: validation_failure, action: rollback, procedures: [svc]}
  procedures:
    - name: svc
      steps: [stop]
      actions: {stop: {command: {argv: [sh, -c, 'exit 0']}}}
"""
COMMAND_GATE = GOOD_GATES.replace("checks: [health]", "checks: [{command: {argv: [sh, -c, 'exit 0']}}]")
# Each case was a traceback (pytest exit 3) before: now exit 4 and FILE:LINE:COL: path: message.
CASES.update({
    "control-char-in-value": (TARGETS.replace("app.db", "app\x07.db") + SEED_STRATEGY + GOOD_GATES,
                              "release-plan.yaml:3:19: (yaml):", "character U+0007 is not allowed in YAML"),
    "control-char-in-comment": (TARGETS + SEED_STRATEGY + "# a comment \x0b here\n" + GOOD_GATES,
                                "release-plan.yaml:9:13: (yaml):", "character U+000B is not allowed in YAML"),
    "deep-flow-list": (TARGETS + SEED_STRATEGY + "validation: " + "[" * 1000 + "]" * 1000 + "\n",
                       "release-plan.yaml:9:", "nested deeper than 64 levels (limit: 64)"),
    "deep-block-mapping": (TARGETS + SEED_STRATEGY + "validation:\n"
                           + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2000)),
                           "release-plan.yaml:", "nested deeper than 64 levels (limit: 64)"),
    "deep-block-list": (TARGETS + SEED_STRATEGY + "validation:\n  " + "- " * 5000 + "x\n",
                        "release-plan.yaml:10:", "nested deeper than 64 levels (limit: 64)"),
    "actions-as-list": (TARGETS + SEED_STRATEGY + GOOD_GATES + ROLLBACK.replace("actions: {stop:", "actions: [{stop:")
                        .replace("'exit 0']}}}", "'exit 0']}}}]"),
                        "release-plan.yaml:20:16: rollback.procedures[0].actions:", "is a list, expected a mapping"),
    "checks-as-number": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("checks: [health]", "checks: 3"),
                         "release-plan.yaml:12:15: validation.gates[0].checks:", "3 is a number, expected a list"),
    "procedures-as-number": (TARGETS + SEED_STRATEGY + GOOD_GATES + ROLLBACK.replace("procedures: [svc]", "procedures: 7"),
                             "release-plan.yaml:16:", "rollback.triggers[0].procedures: 7 is a number, expected a list"),
    "nameless-procedure": (TARGETS + SEED_STRATEGY + GOOD_GATES + ROLLBACK.replace("- name: svc\n", "- steps: [stop]\n")
                           .replace("      steps: [stop]\n      actions", "      actions"),
                           "release-plan.yaml:18:7: rollback.procedures[0]:", "missing required key 'name'"),
    "newline-in-key": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", '"time\\nout": 30'),
                       "release-plan.yaml:13:7: validation.gates[0]['time\\nout']:", "unknown key 'time\\nout'"),
    "infinite-timeout": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: .inf"),
                         "release-plan.yaml:13:16: validation.gates[0].timeout:", "inf is out of range"),
    "nan-timeout": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: .nan"),
                    "release-plan.yaml:13:16: validation.gates[0].timeout:", "nan is not a number"),
    "absurd-timeout": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: 99999999999999999999d"),
                       "release-plan.yaml:13:16: validation.gates[0].timeout:",
                       "'99999999999999999999d' is longer than the longest duration a plan may give, 366d"),
    "huge-number-timeout": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: 1.0e+400"),
                            "release-plan.yaml:13:16: validation.gates[0].timeout:", "out of range"),
    "negative-timeout": (TARGETS + SEED_STRATEGY + GOOD_GATES.replace("timeout: 30", "timeout: -5"),
                         "release-plan.yaml:13:16: validation.gates[0].timeout:", "-5 is out of range"),
    "million-instances": (TARGETS.replace('"http://127.0.0.1:9"', '"http://127.0.0.1:{1..1000000}"') + SEED_STRATEGY
                          + GOOD_GATES, "release-plan.yaml:2:14: targets.api.url:",
                          "1000000 instances: a target has at most 1000"),
    "env-key-with-equals": (TARGETS + SEED_STRATEGY + COMMAND_GATE.replace("argv:", "env: {A=B: '1'}, argv:"),
                            "release-plan.yaml:12:", "'A=B' is not an environment variable name (not empty, no '=')"),
    "env-key-empty-in-action": (TARGETS + SEED_STRATEGY + GOOD_GATES + ROLLBACK.replace("argv:", "env: {'': '1'}, argv:"),
                                "release-plan.yaml:20:40: rollback.procedures[0].actions.stop.command.env['']:",
                                "'' is not an environment variable name"),
    "argv-with-nul": (TARGETS + SEED_STRATEGY + COMMAND_GATE.replace("'exit 0'", '"exit\\0"'),
                      "release-plan.yaml:12:", "cannot hold the character NUL (U+0000)"),
    "too-many-bytes": ("# " + "x" * (8 * 1024 * 1024) + "\n", "release-plan.yaml:1:1: (file):",
                       "larger than the limit of 8388608 bytes (8 MiB)"),
})


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_plan_exits_4_with_position_and_no_traceback(pytester: pytest.Pytester, case: str) -> None:
    text, where, message = CASES[case]
    (pytester.path / "release-plan.yaml").write_text(text, "utf-8")
    pytester.makepyfile(test_marker="def test_never_runs():\n    open('RAN', 'w').close()\n")
    started = time.monotonic()
    # In this process: a plan error stops pytest in its configuration, before any signal handler,
    # thread or secret of a run exists (the tests below run the same path in a process of its own).
    result = pytester.runpytest_inprocess("--release-plan", "release-plan.yaml", "test_marker.py")
    assert time.monotonic() - started < 20
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert where in err, err
    assert message in err, err
    assert "Traceback" not in err + result.stdout.str()
    assert not (pytester.path / "RAN").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("".join(f"k{i}: 1\n" for i in range(600)), "more than 1000 values and keys (limit: 1000); the file is too large"),
    ("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(f"k{i}: *a\n" for i in range(200)),
     "more than 1000 values and keys after alias expansion (limit: 1000; "),
])
def test_the_size_limit_says_which_limit_it_hit(text: str, message: str) -> None:
    """Values and keys as written, or as aliases expand them: the message names the limit and its value
    (the plan's limit is 100000; a smaller one here keeps the test fast)."""
    from pytest_release.yamldoc import load_yaml_text

    doc = load_yaml_text(text, "plan.yaml", max_nodes=1000)
    assert doc.data is None
    [problem] = doc.problems
    assert message in str(problem)
    assert str(problem).startswith("plan.yaml:")


def test_non_utf8_plan(pytester: pytest.Pytester) -> None:
    (pytester.path / "release-plan.yaml").write_bytes(b"strategy:\n  stages: [{name: caf\xe9}]\n")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*release-plan.yaml:2:22: (file): not UTF-8*"])


@pytest.mark.parametrize("kind", ["symlink-loop", "directory", "unreadable"])
def test_a_plan_path_that_cannot_be_read(pytester: pytest.Pytester, kind: str) -> None:
    plan = pytester.path / "release-plan.yaml"
    if kind == "symlink-loop":
        plan.symlink_to("release-plan.yaml")
        why = "cannot read: Too many levels of symbolic links"
    elif kind == "directory":
        plan.mkdir()
        why = "cannot read: it is a directory, not a file"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        plan.write_text(TARGETS + SEED_STRATEGY, "utf-8")
        plan.chmod(0)
        why = "cannot read: Permission denied"
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*release-plan.yaml:1:1: (file): {why}*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


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


# -- the plans in the README and the docs ----------------------------------------------------------

ROOT = Path(__file__).parent.parent
#: A YAML block whose first line is one of these comments is not loaded (docs/index.md says so).
NOT_LOADED = re.compile(r"^# (fragment|not a plan)\b")


def _yaml_blocks() -> list[tuple[str, str]]:
    """Every YAML block of the README and docs/*.md, with where it starts (``docs/x.md:12``)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text("utf-8")
        for match in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def _base_plan() -> dict[str, object]:
    """The README's complete plan: the first README block with a ``strategy``."""
    for where, block in _yaml_blocks():
        data = yaml.safe_load(block)
        if where.startswith("README.md:") and isinstance(data, dict) and "strategy" in data:
            return data
    raise AssertionError("the README has no complete plan")


DOC_BLOCKS = _yaml_blocks()


def test_the_docs_hold_plans_and_one_complete_plan() -> None:
    """The test below has something to load: the README's complete plan has every section."""
    assert set(_base_plan()) == {"release", "targets", "strategy", "validation", "rollback", "monitoring",
                                 "analytics", "automation", "notify"}
    loaded = [w for w, b in DOC_BLOCKS if not NOT_LOADED.match(b)]
    assert len(loaded) >= 10, loaded
    assert {w.split(":")[0] for w in loaded} >= {"README.md", "docs/plan-format.md", "docs/rollback.md",
                                                  "docs/monitoring.md", "docs/analytics.md", "docs/workflows.md",
                                                  "docs/notify.md"}


@pytest.mark.parametrize(("where", "block"), DOC_BLOCKS, ids=[w for w, _ in DOC_BLOCKS])
def test_every_plan_in_the_docs_loads(tmp_path: Path, where: str, block: str) -> None:
    """Every YAML block of the README and docs/*.md is a plan that loads (one with ``targets``),
    or sections that load in the README's complete plan (each key of a section replaces the complete
    plan's), unless its first line says ``# fragment`` (a piece of a section) or ``# not a plan``
    (a CI workflow)."""
    from pytest_release import BUILTIN_KINDS, PlanError, load_plan

    if NOT_LOADED.match(block):
        assert yaml.safe_load(block) is not None or block.strip(), where
        return
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"{where}: not a mapping: mark it '# fragment' or '# not a plan'"
    if "targets" not in data:
        base = _base_plan()  # sections: each key of a section replaces the complete plan's
        data = {**base, **{k: {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                           for k, v in data.items()}}
        block = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / "release-plan.yaml"
    path.write_text(block, "utf-8")
    env = {name: "https://hooks.example.com/t0ken-value" for name in re.findall(r"\$\{env:(\w+)\}", block)}
    try:
        load_plan(path, BUILTIN_KINDS, env=env)
    except PlanError as exc:
        raise AssertionError(f"{where}: the plan does not load:\n" + "\n".join(map(str, exc.problems))) from None


# -- a config file the syntax check reads -------------------------------------------------------

SECRET_LINE = "password: hunter2-do-not-show\n"
FILLER = "".join(f"setting_{i}: value_{i}\n" for i in range(300))


@pytest.mark.parametrize("char", ["\x07", "\x0b", "\x1b", "\x00", "\x7f", "\ufffe"])
@pytest.mark.parametrize("where", ["value", "comment", "secret"])
def test_a_config_file_with_a_control_character_fails_the_syntax_check(tmp_path: Path, char: str, where: str) -> None:
    from helpers import run_check

    line = {"value": f"name: sh{char}op\n", "comment": f"# note {char} here\n",
            "secret": f"token: abc{char}def-secret-token\n"}[where]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text(FILLER + SECRET_LINE + line + FILLER, "utf-8")
    result = run_check("syntax", {"files": ["conf/*.yaml"]}, tmp_path)
    assert not result.passed
    [error] = result.details
    assert error.startswith("conf/app.yaml:302:"), error
    assert f"U+{ord(char):04X} is not allowed" in error and "(near: " in error
    assert "hunter2" not in error and "secret-token" not in error and "setting_" not in error
    assert len(error) < 400


def test_the_syntax_check_on_a_control_character_is_a_failed_check_not_a_traceback(pytester: pytest.Pytester) -> None:
    conf = pytester.path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text(FILLER + "token: abc\x07def-secret-token\n" + SECRET_LINE + FILLER, "utf-8")
    (pytester.path / "release-plan.yaml").write_text(
        "targets:\n  conf: {files: ['conf/*.yaml']}\n" + SEED_STRATEGY
        + "validation:\n  gates:\n    - {name: config_validation, checks: [syntax]}\n", "utf-8")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-evidence-dir", "ev")
    assert result.ret == 1  # BLOCKED: a failed check
    out = result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*conf/app.yaml:301:11: character U+0007 is not allowed in YAML*"])
    assert "Traceback" not in out and "CallInfo" not in out
    written = "".join(p.read_text("utf-8", "replace") for p in (pytester.path / "ev").rglob("*") if p.is_file())
    for text in (out, written):
        assert "secret-token" not in text and "hunter2" not in text and "setting_299" not in text
