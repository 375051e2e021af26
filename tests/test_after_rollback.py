"""What holds after a rollback, in real pytest runs against real server processes: the final
verify judges the previous release with the plan's `after_rollback` expectations (never with the
new release's version pins by default), warns for gates that are not required, re-judges the
gates a trigger names, samples again the monitoring metric that fired; and a gate's readiness
check holds back its other checks, so a good release that starts slowly is not rolled back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import HERE, Example
from pytest_release.records import check_records
from test_monitoring import _run_with_fault

PlanWriter = Callable[..., Path]


def _latest(evidence: Path) -> str:
    return (evidence / "LATEST").read_text().strip()


def _verify_record(evidence: Path) -> dict[str, Any]:
    """The final verify's step record of the latest run."""
    [record] = [json.loads(p.read_text()) for p in (evidence / "rollback" / "procedures" / _latest(evidence))
                .rglob("verify.json") if json.loads(p.read_text()).get("procedure") == "rollback"]
    return record


def _judged(record: dict[str, Any], check: str) -> dict[str, Any]:
    [entry] = [e for e in record["measured"]["after_rollback"] if e["check"] == check]
    return entry


# -- (a) a correct rollback is not reported as failed -------------------------------------------

#: The release under test is 2.0.0; the rollback puts 1.0.0 back (the service reports the version
#: written in `current`) and clears the fault that failed the health check.
VERSIONED = """\
release: {{name: shop, version: 2.0.0}}
targets:
  api: {{url: '{url}'}}
strategy:
  stages: [{{name: pre_release}}, {{name: release}}]
  gates:
    - {{name: validation_gate, timeout: 10}}
rollback:
  triggers:
    - {{name: validation_failure, action: rollback, timeout: 60{verify}}}
    - {{name: manual_trigger, action: rollback, timeout: 60}}
  procedures:
    - name: service_rollback
      steps:
        - revert: {{command: {{argv: [python, -c, "import os; open('current', 'w').write('1.0.0'); os.path.exists('fault') and os.remove('fault')"]}}}}
validation:
  gates:
    - name: service_validation
      stages: [release]
      targets: [api]
      checks:
        - health: {{path: '/unless?file={fault}'}}
{checks}
{extra_gates}
"""

PIN_COMPAT = "compatibility: {{name: version, path: '/version?file={current}', version: '==2.0.0'{after}}}"
PIN_JSON = "health: {{name: version, path: '/version?file={current}', json: {{version: 2.0.0}}{after}}}"
REPORT_GATE = """\
    - name: version_report
      required: false
      stages: [release]
      targets: [api]
      checks:
        - {check}
"""

#: id: (the pinned check, its after_rollback, where it is, pytest arguments, exit code, how it is
#: judged after the rollback, its verdict there)
CASES: dict[str, tuple[str, str, str, tuple[str, ...], int, str, str]] = {
    "compatibility-default": (PIN_COMPAT, "", "gate", (), 1, "unpinned", "passed"),
    "json-default": (PIN_JSON, "", "gate", (), 1, "unpinned", "passed"),
    "compatibility-override": (PIN_COMPAT, "{version: '==1.0.0'}", "gate", (), 1, "override", "passed"),
    "json-override": (PIN_JSON, "{json: {version: 1.0.0}}", "gate", (), 1, "override", "passed"),
    "skip": (PIN_COMPAT, "skip", "gate", (), 1, "skip", "skipped"),
    "gate-skip": (PIN_COMPAT, "", "gate-skip", (), 1, "skip", "skipped"),
    "judge-as-written": (PIN_COMPAT, "judge", "gate", (), 20, "judge", "failed"),
    "override-that-fails": (PIN_COMPAT, "{version: '==0.9'}", "gate", (), 20, "override", "failed"),
    "not-required-warns": (PIN_COMPAT, "judge", "report", (), 1, "judge", "warning"),
    # an operator's rollback that succeeded exits 0: it did what was asked
    "manual-rollback": (PIN_COMPAT, "", "gate", ("--release-rollback",), 0, "unpinned", "passed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_verify_judges_the_previous_release_with_the_plans_expectations(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str, case: str) -> None:
    template, after, where, args, code, how, verdict = CASES[case]
    current, fault = pytester.path / "current", pytester.path / "fault"
    current.write_text("2.0.0")  # the new release serves
    fault.touch()  # and fails its health check: the rollback is due
    suffix = "" if not after else f", after_rollback: {after}"
    check = template.format(current=current, after=suffix)
    checks = f"        - {check}" if where != "report" else ""
    extra = REPORT_GATE.format(check=check) if where == "report" else ""
    verify = ", verify: [service_validation, version_report]" if where == "report" else ""
    plan = VERSIONED.format(url=http_url, fault=fault, checks=checks, extra_gates=extra, verify=verify)
    if where == "gate-skip":
        plan = plan.replace("      stages: [release]\n      targets: [api]\n      checks:",
                            "      stages: [release]\n      targets: [api]\n      after_rollback: skip\n      checks:")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", *args)
    assert result.ret == code, result.stdout.str()
    assert current.read_text() == "1.0.0" and not fault.exists()  # the rollback did its work
    if code in (0, 1):
        result.stdout.fnmatch_lines(["*::rollback::verify PASSED*", "*ROLLED BACK*: *verify passed*"])
    else:
        result.stdout.fnmatch_lines(["*::rollback::verify FAILED*", "*ROLLBACK FAILED*"])
    gate = "version_report" if where == "report" else "service_validation"
    record = _verify_record(pytester.path / "evidence" / "release")
    entry = _judged(record, f"{gate}::compatibility-version[api]" if "compat" in template
                    else f"{gate}::health-version[api]")
    assert (entry["after_rollback"], entry["verdict"]) == (how, verdict), entry
    health = _judged(record, "service_validation::health[api]")["verdict"]
    assert health == ("skipped" if where == "gate-skip" else "passed")
    if how == "unpinned":
        assert entry["dropped"] == (["version"] if "compat" in template else ["json.version"])
        assert "reports version 1.0.0" in entry["summary"] or "answered 200" in entry["summary"]
    if how == "override":
        assert entry["params"].get("version", entry["params"].get("json", {}).get("version")) in (
            "==1.0.0", "1.0.0", "==0.9")
    if how == "skip":
        assert "judges the new release only" in entry["why"]
        assert ("nothing to judge again: every check of service_validation says after_rollback: skip"
                if where == "gate-skip" else "1 not judged again (after_rollback: skip)") in record["summary"]
        if where == "gate-skip":
            assert entry["why"].startswith("after_rollback: skip (gate service_validation)")
    if verdict == "warning":
        assert "1 warning(s) (required: false)" in record["summary"]
        assert "WARNING: version_report::compatibility-version[api]" in "\n".join(record["details"])


def test_a_trigger_names_the_gates_its_verify_judges(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                      http_url: str) -> None:
    """The failed gate judges the new release only (it still fails after the rollback); the
    trigger's verify names the gate that proves the previous release works."""
    fault = pytester.path / "fault"
    fault.touch()
    plan = VERSIONED.format(url=http_url, fault=fault, checks="", verify=", verify: [smoke]", extra_gates="""\
    - name: smoke
      stages: [release]
      targets: [api]
      checks: [{health: {path: /healthz}}]
""").replace("os.path.exists('fault') and os.remove('fault')", "None")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 1, result.stdout.str()
    assert fault.exists()
    record = _verify_record(pytester.path / "evidence" / "release")
    assert [e["check"] for e in record["measured"]["after_rollback"]] == ["smoke::health[api]"]
    assert record["summary"] == "1 check(s) of smoke pass again"


@pytest.mark.parametrize(("kind", "params", "kept", "dropped"), [
    ("compatibility", {"name": "v", "version": "==2.0.0", "path": "/v"}, {"name": "v", "path": "/v"}, ["version"]),
    ("compatibility", {"previous": "old/"}, {"previous": "old/"}, []),
    ("health", {"json": {"status": "ok", "version": "2.0.0"}}, {"json": {"status": "ok"}}, ["json.version"]),
    ("health", {"json": {"build.version": "x", "db.schema_version": 7, "app.Version": "y"}}, {},
     ["json.build.version", "json.db.schema_version", "json.app.Version"]),
    ("health", {"json": {"release": "2.0.0", "n": 2}}, {"json": {"n": 2}}, ["json.release"]),
    ("health", {"contains": "release 2.0.0 up", "path": "/"}, {"path": "/"}, ["contains"]),
    ("health", {"contains": "up", "json": {"versions": ["a"]}}, {"contains": "up", "json": {"versions": ["a"]}},
     []),
    ("command", {"argv": ["check", "2.0.0"], "output": "2.0.0 installed"}, {"argv": ["check", "2.0.0"]},
     ["output"]),
    ("performance", {"p95": "250ms"}, {"p95": "250ms"}, []),
])
def test_what_pins_the_release_is_left_out_by_default(kind: str, params: dict[str, Any], kept: dict[str, Any],
                                                       dropped: list[str]) -> None:
    from pytest_release.rollback.expectations import unpin

    assert unpin(kind, params, "2.0.0") == (kept, dropped)
    assert unpin(kind, params, "")[1] == [d for d in dropped if d not in ("json.release", "contains", "output")]


# -- (b) after a monitoring failure, the verify samples the metric that fired again -------------

MONITORED = """\
release: {{name: shop, version: 2.0.0}}
targets:
  api: {{url: '{url}', health: /healthz}}
strategy:
  stages: [{{name: pre_release, monitoring: false}}, {{name: release, monitoring: true}}]
  gates:
    - {{name: validation_gate, timeout: 10}}
    - {{name: monitoring_gate, timeout: 1s, window: 10s}}
rollback:
  triggers:
    - {{name: monitoring_failure, action: rollback, timeout: 60}}
  procedures:
    - name: service_rollback
      steps:
        - revert: {{command: {{argv: [python, -c, "{revert}"]}}}}
validation:
  gates:
    - {{name: service_validation, targets: [api], checks: [health]}}
monitoring:
  metrics:
    - {{name: service_health, interval: 100ms, threshold: 0.9, source: {{check: {{health: {{path: '/unless?file={fault}'}}}}}}}}
    - {{name: service_version, interval: 100ms, threshold: 0.9, source: {{check: {{health: {{path: /version}}}}}}}}
  alerts:
    - {{name: health_alert, threshold: 0.8, window: 500ms}}
"""


@pytest.mark.parametrize("restores", [True, False], ids=["restores-the-service", "leaves-it-failing"])
def test_verify_after_a_monitoring_failure_samples_the_metric_that_fired(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str, restores: bool) -> None:
    """The fault fires health_alert mid-window. The rollback clears it or not; the validation
    gate passes either way, so only the metric's new sample can tell the two apart."""
    fault = pytester.path / "fault"
    revert = "import os; os.remove('fault')" if restores else "print('nothing to undo')"
    write_plan(MONITORED.format(url=http_url, fault=fault, revert=revert))
    code, out, _ = _run_with_fault(["--release-plan", "release-plan.yaml", "-v"], fault.touch, after=0.3,
                                   cwd=pytester.path)
    assert "alert health_alert fired" in out, out
    record = _verify_record(pytester.path / "evidence" / "release")
    metric = _judged(record, "monitoring_gate::metric[service_health]")
    # Only the metric that fired is sampled again (three rounds at its interval), with the gate.
    assert [e["check"] for e in record["measured"]["after_rollback"]] == [
        "service_validation::health[api]", "monitoring_gate::metric[service_health]"]
    assert _judged(record, "service_validation::health[api]")["verdict"] == "passed"
    assert "sampled again after the rollback: service_health: " in metric["summary"]
    if restores:
        assert code == 1, out
        assert "ROLLED BACK: monitoring_failure: every step passed and verify passed" in out
        assert metric["verdict"] == "passed" and re.search(r": (\d) of \1 samples good", metric["summary"]), metric
    else:
        assert code == 20, out
        assert "ROLLBACK FAILED" in out
        assert "::rollback::verify FAILED" in out
        assert metric["verdict"] == "failed", metric
        assert "1 of 2 check(s) of service_validation, monitoring_gate still fail" in record["summary"]


# -- (c) readiness: a good release that starts slowly is not rolled back -------------------------

LATE = """\
release: {{name: shop, version: 2.0.0}}
targets:
  api: {{url: 'http://127.0.0.1:{port}', health: /healthz}}
strategy:
  stages: [{{name: pre_release}}, {{name: release}}]
  gates:
    - {{name: validation_gate, timeout: {timeout}}}
rollback:
  triggers:
    - {{name: validation_failure, action: rollback, timeout: 30}}
  procedures:
    - name: service_rollback
      steps:
        - revert: {{command: {{argv: [python, -c, "open('rolled-back', 'w').close()"]}}}}
validation:
  gates:
    - name: config_validation
      stages: [pre_release]
      checks: [{{command: {{name: ok, argv: [python, -c, "pass"]}}}}]
    - name: service_validation
      stages: [release]
      targets: [api]
      checks:
{checks}
automation:
  workflows:
    - name: release_workflow
      steps: [validate, deploy, verify]
      actions:
        deploy: {{command: {{argv: [python, -c, "open('go', 'w').close()"]}}}}
"""

WAIT = "health: {retries: 60, delay: 100ms}"
OTHERS = ["health: {name: version, path: /version}",
          "performance: {path: /healthz, requests: 6, concurrency: 3, p95: 2s}",
          "compatibility: {name: version}",
          "security: {forbidden_paths: [/.env]}"]
#: id: the gate's checks, in plan order
READY_FORMS = {
    "retries-on-the-first-check": [WAIT, *OTHERS],
    "ready-true-on-a-later-check": [*OTHERS, WAIT.replace("}", ", ready: true}")],
}


@pytest.fixture
def late_server(pytester: pytest.Pytester) -> Iterator[int]:
    """A real service that starts listening 1.5 s after the deploy step wrote `go`."""
    proc = subprocess.Popen([sys.executable, str(HERE / "servers.py"), "late", str(pytester.path / "go"), "1.5"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    yield int(proc.stdout.readline())
    proc.kill()
    proc.wait()


def _late_plan(port: int, checks: list[str], timeout: str = "15") -> str:
    return LATE.format(port=port, timeout=timeout, checks="\n".join(f"        - {c}" for c in checks))


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
@pytest.mark.parametrize("form", sorted(READY_FORMS))
def test_a_slow_start_is_waited_for_not_rolled_back(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                    late_server: int, form: str, xdist: tuple[str, ...]) -> None:
    write_plan(_late_plan(late_server, READY_FORMS[form]))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "release_workflow", "-v", *xdist)
    assert result.ret == 0, result.stdout.str()
    assert "pytest-release rollback" not in result.stdout.str()
    assert not (pytester.path / "rolled-back").exists()
    result.stdout.fnmatch_lines(["*shop 2.0.0: every required gate that ran passed*"])
    evidence = pytester.path / "evidence" / "release"
    records = {f"{r['check']}.json": r for r in check_records(evidence / "validation" / "gates", _latest(evidence))
               if r["stage"] == "release"}
    assert records["health[api].json"]["measured"]["attempts"] > 1  # it really waited for the service
    assert all(r["verdict"] == "passed" for r in records.values() if r.get("record") == "check"), records
    # Each other check started once the readiness check had passed.
    ready_end = records["health[api].json"]["end"]
    assert all(r["start"] >= ready_end for n, r in records.items() if r.get("record") == "check"
               and n != "health[api].json")


def test_without_readiness_the_same_good_release_is_rolled_back(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                                late_server: int) -> None:
    """The control: `ready: false` on the first check lets the others start at once."""
    write_plan(_late_plan(late_server, [WAIT.replace("}", ", ready: false}"), *OTHERS]))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "release_workflow", "-v")
    assert result.ret == 1, result.stdout.str()
    assert (pytester.path / "rolled-back").exists()
    result.stdout.fnmatch_lines(["*compatibility-version?api? FAILED*", "*Connection refused*"])


@pytest.mark.parametrize("form", sorted(READY_FORMS))
def test_a_service_that_never_becomes_ready_fails_the_other_checks_unrun(
        pytester: pytest.Pytester, write_plan: PlanWriter, late_server: int, form: str) -> None:
    plan = _late_plan(late_server, READY_FORMS[form], timeout="1.5").replace("open('go', 'w')", "open('gone', 'w')")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-workflow",
                                           "release_workflow", "-v")
    out = result.stdout.str()
    assert (pytester.path / "rolled-back").exists(), out
    result.stdout.fnmatch_lines(["*::release::service_validation::health?api? FAILED*"])
    for other in ("health-version?api?", "performance?api?", "compatibility-version?api?", "security?api?"):
        result.stdout.fnmatch_lines([f"FAILED *::release::service_validation::{other}: not run: the service never "
                                     "became ready (health[[]api[]] failed: *"])
    evidence = pytester.path / "evidence" / "release"
    record = next(r for r in check_records(evidence, _latest(evidence)) if r["check"] == "performance[api]")
    assert record["measured"] == {"run": False}
    # The verify after the rollback holds the others back the same way, and says so.
    verify = _verify_record(evidence)
    assert result.ret == 20
    assert _judged(verify, "service_validation::performance[api]")["summary"].startswith(
        "not run: the service never became ready (health[api] failed: ")


# -- the plan says it, or says what is wrong ------------------------------------------------------


@pytest.mark.parametrize(("fragment", "message"), [
    ("after_rollback: {versoin: '==1.0'}", "*checks?1?.compatibility.after_rollback.versoin: unknown key 'versoin' "
                                           "(did you mean 'version'?)*"),
    ("after_rollback: maybe", "*checks?1?.compatibility.after_rollback: 'maybe' is not judge (as written) or skip; "
                              "choose from: judge, skip*"),
    ("after_rollback: {version: 'one'}", "*checks?1?.compatibility.after_rollback: check 'compatibility': version: "
                                         "'one' is not a PEP 440 version specifier*"),
    ("ready: yes please", "*checks?1?.compatibility.ready: 'yes please' is a string, expected a boolean*"),
])
def test_after_rollback_and_ready_are_checked_when_the_plan_loads(
        pytester: pytest.Pytester, write_plan: PlanWriter, fragment: str, message: str) -> None:
    plan = VERSIONED.format(url="http://127.0.0.1:9", fault="f", extra_gates="", verify=", verify: [servce_validation]",
                            checks=f"        - compatibility: {{name: version, {fragment}}}")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 4
    result.stderr.fnmatch_lines([message])
    result.stderr.fnmatch_lines(["*rollback.triggers?0?.verify?0?: no validation gate named 'servce_validation' "
                                 "(did you mean 'service_validation'?)*"])
    assert "Traceback" not in result.stderr.str()


# -- (a) for real: the example shop, its bad release, checks that pin the release -----------------


def test_the_example_rolls_back_a_release_whose_gate_pins_its_version(pytester: pytest.Pytester,
                                                                      example: Example) -> None:
    """service_validation also checks that 1.1.0 is what serves (a version pin of the new
    release, default after_rollback) and, written with an override, what must serve after a
    rollback. The broken migration fails the gate; the rollback restores 1.0.0 and the verify
    proves it with the override, leaving the pin of 1.1.0 out."""
    plan = example.project / "release-plan.yaml"
    pins = textwrap.indent(textwrap.dedent("""\
        - compatibility: {name: release, version: ==1.1.0}
        - health: {name: served, path: /version, json: {version: 1.1.0}, after_rollback: {json: {version: 1.0.0}}}
    """), "        ")
    text = plan.read_text()
    anchor = "        - health: {name: items, path: /api/items}\n"
    assert anchor in text
    plan.write_text(text.replace(anchor, anchor + pins))
    evidence = pytester.path / "evidence"
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--release-plan", "release-plan.yaml",
            "--release-evidence-dir", str(evidence), "-v"]
    before = subprocess.run([*args, "--release-stage", "pre_release"], cwd=example.project, capture_output=True,
                            text=True)
    assert before.returncode == 0, before.stdout
    example.ctl("stop")
    example.ctl("deploy", "1.1.0")
    example.ctl("start", "--port", str(example.port))
    after = subprocess.run([*args, "--release-stage", "release", "--release-stage", "post_release",
                            "--release-version", "1.1.0"], cwd=example.project, capture_output=True, text=True)
    assert after.returncode == 1, after.stdout
    assert "ROLLED BACK: validation_failure: every step passed and verify passed" in after.stdout
    assert example.get("/version") == (200, {"version": "1.0.0"})
    record = _verify_record(evidence)
    pinned = _judged(record, "service_validation::compatibility-release[api]")
    assert (pinned["after_rollback"], pinned["dropped"], pinned["verdict"]) == ("unpinned", ["version"], "passed")
    served = _judged(record, "service_validation::health-served[api]")
    assert (served["after_rollback"], served["verdict"]) == ("override", "passed")
    assert served["params"]["json"] == {"version": "1.0.0"}
    others = [e for e in record["measured"]["after_rollback"] if e["after_rollback"] in ("unpinned", "override")]
    assert f"{len(others)} judged with the previous release's expectations" in record["summary"]
