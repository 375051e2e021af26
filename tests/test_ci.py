"""CI: GitHub workflow commands at the plan's lines, escaped as GitHub documents; the composite
action's script run for real (install skipped: the package is installed here)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from helpers import service_plan
from pytest_release.ci import command, escape_data, escape_property

ROOT = Path(__file__).parent.parent
SECRET = "s3cr3t-4e1f"

# GitHub's documented syntax: ::COMMAND PROP=VALUE,PROP=VALUE::MESSAGE, with the toolkit's escapes.
COMMAND = re.compile(r"^::(error|warning|notice) ([^:]*)::(.*)$")


def unescape(text: str) -> str:
    """What the runner does with an escaped value (its own code, not the plugin's)."""
    return re.sub(r"%(25|0D|0A|3A|2C)", lambda m: {"25": "%", "0D": "\r", "0A": "\n", "3A": ":", "2C": ","}[m[1]],
                  text)


def parse(line: str) -> tuple[str, dict[str, str], str]:
    match = COMMAND.match(line)
    assert match, line
    props = dict(p.split("=", 1) for p in match[2].split(","))
    return match[1], {k: unescape(v) for k, v in props.items()}, unescape(match[3])


def _cases() -> list[str]:
    rng = random.Random(17)
    alphabet = "ab:,%\r\n=:: 0%25%0A"
    cases = ["", "100% done", "a:b,c", "line\nnext\r\n", "%0A is not a newline", "::error::inject", "title=x,line=9"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(40)]
    return cases


@pytest.mark.parametrize("text", _cases())
def test_annotations_escape_as_github_documents(text: str) -> None:
    """Whatever the text, the command stays one line, parses as GitHub parses it, and gives the
    text back: properties escape % CR LF : and , ; the message % CR LF."""
    line = command("error", text, file=f"plans/{text}.yaml", line=3, col=5, title=text)
    assert "\n" not in line and "\r" not in line
    kind, props, message = parse(line)
    assert kind == "error" and message == text
    assert props == {"file": f"plans/{text}.yaml", "line": "3", "col": "5", **({"title": text} if text else {})}
    assert escape_data(text).count(":") == text.count(":")  # ':' stays in a message
    assert ":" not in escape_property(text) and "," not in escape_property(text)


def plan_text(http_url: str) -> str:
    return service_plan(http_url, """\
        - name: service_validation
          checks:
            - health
            - health: {name: broken, path: "/fail?key=${env:API_KEY}"}
            - health: {name: broken, path: /fail}
        - name: smoke
          required: false
          checks:
            -   health: {path: /fail}
        """)


def position(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """(line, col) of the list item on the ``nth`` line holding ``needle``: where its value starts."""
    lines = text.splitlines()
    line = [i for i, content in enumerate(lines, 1) if needle in content][nth - 1]
    content = lines[line - 1]
    dash = content.index("- ")
    rest = content[dash + 1:]
    return line, dash + 1 + (len(rest) - len(rest.lstrip())) + 1


def test_failed_and_warning_checks_point_at_their_plan_lines(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = plan_text(http_url)
    (pytester.path / "plans").mkdir()
    write_plan(text, name="plans/release-plan.yaml")
    monkeypatch.setenv("API_KEY", SECRET)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    summary = pytester.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest_subprocess("--release-plan", "plans/release-plan.yaml")
    assert result.ret == 1
    out = result.stdout.str()
    assert SECRET not in out
    commands = [parse(line) for line in out.splitlines() if COMMAND.match(line)]
    errors = [c for c in commands if c[0] == "error"]
    warnings = [c for c in commands if c[0] == "warning"]
    assert len(errors) == 2 and len(warnings) == 1, commands
    first, second = errors
    for (_, props, _), (line, col) in zip(errors, [position(text, "name: broken", 1), position(text, "name: broken", 2)]):
        assert props["file"] == "plans/release-plan.yaml"
        assert (int(props["line"]), int(props["col"])) == (line, col)
    assert first[1]["title"] == "pytest-release: pre_release::service_validation::health-broken[api] failed"
    assert second[1]["title"] == "pytest-release: pre_release::service_validation::health-broken#2[api] failed"
    assert "/fail?key=*** answered 404, expected 200" in first[2] and "\nmeasured: " in first[2]
    _, props, message = warnings[0]
    assert (int(props["line"]), int(props["col"])) == position(text, "health: {path: /fail}")
    assert "warning (gate smoke is not required)" in props["title"] and "answered 503" in message
    history = pytester.path / "evidence" / "release" / "index.html"
    assert f"History: `{history}`" in summary.read_text()


def test_without_github_actions_no_workflow_command_is_printed(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_plan(plan_text(http_url))
    monkeypatch.setenv("API_KEY", SECRET)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 1
    assert not [line for line in result.stdout.lines if line.startswith("::")]


def test_a_failed_rollback_step_points_at_its_step(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = textwrap.dedent(f"""\
        release: {{name: shop}}
        targets:
          api: {{url: "{http_url}", health: /fail}}
        strategy:
          stages: [{{name: pre_release}}, {{name: release}}]
          gates: [{{name: validation_gate, timeout: 10}}]
        rollback:
          triggers: [{{name: validation_failure, action: rollback}}]
          procedures:
            - name: service_rollback
              steps:
                - revert: {{command: {{argv: ["{sys.executable}", "-c", "raise SystemExit(3)"]}}}}
        validation:
          gates:
            - {{name: service_validation, stages: [release], checks: [health]}}
        """)
    write_plan(text)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 20
    commands = [parse(line) for line in result.stdout.lines if COMMAND.match(line)]
    titles = {c[1]["title"]: c for c in commands}
    step = titles["pytest-release: rollback step service_rollback::revert failed"]
    assert int(step[1]["line"]) == position(text, "- revert:")[0]
    assert "pytest-release: release::service_validation::health[api] failed" in titles


@pytest.mark.parametrize("old, new, prefix", [
    ("timeout: 10}", "timeout: 3x}", "strategy.gates[0].timeout: "),
    ("        - health\n", "        - helth\n", "validation.gates[0].checks[0]: "),
])
def test_plan_errors_point_at_their_lines(pytester: pytest.Pytester, write_plan: Callable[..., Path],
                                          http_url: str, monkeypatch: pytest.MonkeyPatch, old: str, new: str,
                                          prefix: str) -> None:
    text = plan_text(http_url).replace(old, new, 1)
    write_plan(text)
    monkeypatch.setenv("API_KEY", SECRET)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 4
    commands = [parse(line) for line in result.stdout.lines if COMMAND.match(line)]
    assert len(commands) == 1, result.stdout.str()
    kind, props, message = commands[0]
    expected = next(i for i, line in enumerate(text.splitlines(), 1) if new.strip() in line)
    assert kind == "error" and props["file"] == "release-plan.yaml" and int(props["line"]) == expected
    assert message.startswith(prefix), message


# -- the composite action ------------------------------------------------------------------------


def test_the_action_is_a_composite_that_uploads_and_fails_with_the_plans_code() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = {s.get("id") or s["name"]: s for s in action["runs"]["steps"]}
    run = steps["run"]
    assert run["run"] == 'python3 "$GITHUB_ACTION_PATH/ci/github_action.py"'
    assert (ROOT / "ci" / "github_action.py").is_file()
    script = (ROOT / "ci" / "github_action.py").read_text()
    read = set(re.findall(r'"(INPUT_[A-Z_]+)"', script))
    assert read == set(run["env"]) and all(run["env"][k] == f"${{{{ inputs.{k[6:].lower()} }}}}" for k in read)
    assert set(action["inputs"]) >= {k[6:].lower() for k in read} | {"working-directory", "artifact-name"}
    upload = steps["upload"]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    last = action["runs"]["steps"][-1]
    assert last["if"] == "always()" and last["env"]["EXIT_CODE"] == "${{ steps.run.outputs.exit-code }}"
    assert 'exit "$EXIT_CODE"' in last["run"]
    for step in action["runs"]["steps"]:  # inputs reach scripts through env only (no injection)
        assert "${{" not in step.get("run", "")


@pytest.mark.parametrize("plan, code, outcome", [("good", 0, "RELEASED"), ("bad", 1, "BLOCKED"), ("broken", 4, "")])
def test_the_actions_script_runs_the_plan_and_reports_its_code(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str, plan: str, code: int,
        outcome: str) -> None:
    text = plan_text(http_url).replace("key=${env:API_KEY}", "key=x")
    if plan == "good":
        text = text.replace("/fail?key=x", "/healthz").replace("/fail", "/healthz")
    elif plan == "broken":
        text = text.replace("timeout: 10", "timeout: -1")
    write_plan(text, name="release-plan.yaml")
    out, summary = pytester.path / "github-output", pytester.path / "summary.md"
    env = {**os.environ, "INPUT_PLAN": "release-plan.yaml", "INPUT_ARGS": "-q -k 'not nothing'",
           "INPUT_EVIDENCE": "evidence/release", "INPUT_INSTALL": "none", "GITHUB_OUTPUT": str(out),
           "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(pytester.path)}
    done = subprocess.run([sys.executable, str(ROOT / "ci" / "github_action.py")], cwd=pytester.path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # the action's last step fails the job, after the upload
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs["exit-code"] == str(code) and outputs["outcome"] == outcome
    if code == 4:
        assert outputs["run-id"] == "" and "::error file=release-plan.yaml,line=6," in done.stdout
        return
    assert outputs["verified"] == "true" and "OK: 1 run(s) verified" in done.stdout
    evidence = pytester.path / "evidence" / "release"
    assert outputs["run-id"] == (evidence / "LATEST").read_text().strip()
    assert (evidence / "index.html").is_file() and "History: " in summary.read_text()
    assert ("::error file=release-plan.yaml" in done.stdout) == (code != 0)
