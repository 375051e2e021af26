"""The plugin in real pytest runs: collection, selection, stages, warnings, budgets, xdist."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from collections.abc import Callable

import pytest

from helpers import plan_with
from pytest_release.records import read_lines

PlanWriter = Callable[..., Path]


def _normalise(text: str) -> list[str]:
    """Output lines without timings and the plugin list, to compare two runs."""
    lines = []
    for line in text.splitlines():
        if line.startswith(("plugins:", "rootdir:", "cachedir:")):
            continue
        lines.append(re.sub(r"in [0-9.]+s", "in Xs", line))
    return lines


def test_without_a_plan_nothing_changes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    assert 1\n\ndef test_two():\n    assert 0\n")
    with_plugin = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:release")
    assert with_plugin.ret == without.ret == pytest.ExitCode.TESTS_FAILED
    assert _normalise(with_plugin.stdout.str()) == _normalise(without.stdout.str())
    assert not any("release" in line.lower() for line in _normalise(with_plugin.stdout.str()))
    assert not (pytester.path / "evidence").exists()


def _two_stage_plan(http_url: str, *, soft_fails: bool = False, hard_fails: bool = False) -> str:
    soft_status = 201 if soft_fails else 200
    path = "/fail" if hard_fails else "/healthz"
    return plan_with(
        f"""\
        - name: service_validation
          checks:
            - health: {{path: {path}}}
            - {{health: {{path: /healthz, json: {{status: ok, checks.db: up}}, name: deep}}}}
        - name: smoke
          required: false
          checks: [{{health: {{path: /healthz, status: {soft_status}}}}}]
        - name: tools
          checks: [{{command: {{argv: [python, -c, "print('migrated')"], output: migrated, name: migrate}}}}]
        """,
        targets=f"api: {{url: '{http_url}', health: /healthz}}",
        stages="[{name: pre_release}, {name: post_release}]",
    )


def test_collection_node_ids_and_markers(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_two_stage_plan(http_url))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--collect-only", "-q")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "release-plan.yaml::pre_release::service_validation::health?api?",
        "release-plan.yaml::pre_release::service_validation::health-deep?api?",
        "release-plan.yaml::pre_release::smoke::health?api?",
        "release-plan.yaml::pre_release::tools::command?migrate?",
        "release-plan.yaml::post_release::service_validation::health?api?",
        "release-plan.yaml::post_release::service_validation::health-deep?api?",
        "release-plan.yaml::post_release::smoke::health?api?",
        "release-plan.yaml::post_release::tools::command?migrate?",
        "8 tests collected*",
    ])
    selected = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--collect-only", "-q",
                                             "-m", "release_stage_post_release and release_check_health",
                                             "-k", "not deep")
    selected.stdout.fnmatch_lines(["release-plan.yaml::post_release::service_validation::health?api?",
                                   "release-plan.yaml::post_release::smoke::health?api?",
                                   "2/8 tests collected (6 deselected)*"])


def test_reportinfo_points_at_the_plan_line(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_two_stage_plan(http_url, hard_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-rs",
                                           "--junitxml", "out.xml", "-o", "junit_family=xunit1")
    suite = ET.parse(pytester.path / "out.xml").getroot()
    case = next(c for c in suite.iter("testcase") if c.get("name") == "health[api]")
    # the check is written on line 12 of the plan (1-based); JUnit's line is 0-based
    assert case.get("file") == "release-plan.yaml" and case.get("line") == "11"
    assert result.ret == 1
    # skips name the plan line of the check that was skipped, not a line of the plugin
    result.stdout.fnmatch_lines(["SKIPPED [[]1] release-plan.yaml:12: stage post_release not run*"])


def test_all_pass_exit_0_and_properties(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_two_stage_plan(http_url))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--junitxml", "out.xml")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*shop 1.0.0: every required gate that ran passed*", "*8 passed*"])
    suite = ET.parse(pytester.path / "out.xml").getroot()
    case = next(c for c in suite.iter("testcase") if c.get("name") == "health-deep[api]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    # a passed check: its verdict (its stage and gate are in the classname); the rest is its record
    assert props == {"release_verdict": "passed"}
    assert case.get("classname") == "release-plan.yaml.pre_release.service_validation"
    records = pytester.path.joinpath("evidence/release/validation/gates").glob(
        "*/pre_release/service_validation/records.jsonl")
    record = next(r for r in read_lines(next(records)) if r["check"] == "health-deep[api]")
    assert "answered 200" in record["summary"] and record["measured"]["json.checks.db"] == "up"
    assert record["expected"]["json"] == {"status": "ok", "checks.db": "up"}


def test_failed_required_gate_skips_later_stages(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                 http_url: str) -> None:
    write_plan(_two_stage_plan(http_url, hard_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-rs")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        f"*GET {http_url}/fail answered 503, expected 200*",
        "*measured: status=503*",
        "*expected: status=200*",
        "*required gate(s) failed: pre_release::service_validation*",
        "*SKIPPED  stage post_release not run: required gate pre_release::service_validation failed "
        "(health?api?: GET*/fail answered 503, expected 200)*",
        "*1 failed, 3 passed, 4 skipped*",
    ])


def test_gate_not_required_warns_without_failing(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                 http_url: str) -> None:
    write_plan(_two_stage_plan(http_url, soft_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--junitxml", "out.xml", "-v")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*::pre_release::smoke::health?api? WARNED*",
        "*WARNING  release-plan.yaml::pre_release::smoke::health?api?: warning (gate pre_release::smoke is not "
        "required): GET*/healthz answered 200, expected 201*",
        "*6 passed, 2 warned*",
    ])
    suite = ET.parse(pytester.path / "out.xml").getroot()
    cases = [c for c in suite.iter("testcase") if c.get("classname", "").endswith(".smoke")]
    assert len(cases) == 2
    for case in cases:
        # a warning is no skip and no xfail for a CI dashboard: a test case with its verdict property
        assert case.find("skipped") is None and case.find("failure") is None and case.find("error") is None
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["release_verdict"] == "warning"
        assert "answered 200, expected 201" in json.loads(props["release"])["summary"]
    counts = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert counts is not None and counts.get("skipped") == "0" and counts.get("failures") == "0"


def test_last_failed_reruns_only_the_failed_check(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                  http_url: str) -> None:
    write_plan(_two_stage_plan(http_url, hard_fails=True))
    first = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert first.ret == 1
    again = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--lf", "-v")
    again.stdout.fnmatch_lines(["*pre_release::service_validation::health?api? FAILED*", "*1 failed, 7 deselected*"])


def test_release_stage_option_and_ini(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_two_stage_plan(http_url, hard_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-stage", "post_release")
    result.stdout.fnmatch_lines(["*stages: post_release*", "*1 failed, 3 passed*"])
    pytester.makeini("[pytest]\nrelease_plan = release-plan.yaml\nrelease_stages = post_release\n"
                     "release_evidence_dir = out/evidence\n")
    from_ini = pytester.runpytest_subprocess()
    from_ini.stdout.fnmatch_lines(["*stages: post_release*", "*1 failed, 3 passed*"])
    run = (pytester.path / "out/evidence/LATEST").read_text().strip()
    assert (pytester.path / "out/evidence/runs" / run / "junit.xml").is_file()
    assert (pytester.path / "out/evidence/runs" / run / "report.html").is_file()
    flag_wins = pytester.runpytest_subprocess("--release-stage", "pre_release")
    flag_wins.stdout.fnmatch_lines(["*stages: pre_release*"])


def test_plan_beside_ordinary_tests(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    """Without paths only the plan runs; with paths, the plan runs beside them."""
    write_plan(_two_stage_plan(http_url))
    pytester.makepyfile(test_unit="def test_unit():\n    pass\n")
    alone = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    alone.stdout.fnmatch_lines(["*8 passed*"])
    both = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "test_unit.py")
    both.stdout.fnmatch_lines(["*9 passed*"])


def test_xdist_gives_the_same_verdicts(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_two_stage_plan(http_url, hard_fails=True, soft_fails=True))
    serial = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--junitxml", "serial.xml")
    parallel = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-n", "2",
                                             "--junitxml", "parallel.xml")
    assert serial.ret == parallel.ret == 1

    def verdicts(name: str) -> dict[str, str]:
        suite = ET.parse(pytester.path / name).getroot()
        return {f"{c.get('classname')}.{c.get('name')}":
                next(p.get("value") for p in c.iter("property") if p.get("name") == "release_verdict")
                for c in suite.iter("testcase")}

    assert verdicts("serial.xml") == verdicts("parallel.xml")
    assert sorted(verdicts("serial.xml").values()) == ["failed", "passed", "passed", "skipped", "skipped",
                                                      "skipped", "skipped", "warning"]
    parallel.stdout.fnmatch_lines(["*SKIPPED  stage post_release not run: required gate "
                                   "pre_release::service_validation failed*"])


def test_hanging_check_fails_within_budget_and_the_run_goes_on(
        pytester: pytest.Pytester, write_plan: PlanWriter, hang_url: str, http_url: str) -> None:
    write_plan(plan_with(
        """\
        - name: service_validation
          targets: [stuck]
          checks: [health]
        - name: after
          targets: [api]
          checks: [{health: {path: /healthz}}]
        """,
        targets=f"stuck: {{url: '{hang_url}'}}\napi: {{url: '{http_url}'}}",
        timeout="2",
    ))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--durations=0")
    took = time.monotonic() - started
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        f"*GET {hang_url}/ gave no answer within *s (the 2s budget of gate pre_release::service_validation ran out)*",
        "*1 failed, 1 passed*",
    ])
    durations = [float(m.group(1)) for m in re.finditer(r"^([0-9.]+)s call .*health\[stuck\]", result.stdout.str(),
                                                        re.MULTILINE)]
    # The server never answers: the check ends at its 2 s budget (a loaded machine adds seconds, not minutes).
    assert durations and durations[0] < 2 + 6, result.stdout.str()
    assert took < 40


@pytest.mark.parametrize("fan_out", [False, True], ids=["alone", "fanned-out"])
def test_check_stuck_past_its_own_timeouts_is_stopped_by_the_budget(
        pytester: pytest.Pytester, write_plan: PlanWriter, slow_headers_url: str, http_url: str,
        fan_out: bool) -> None:
    """A server that trickles a header byte every 0.2 s defeats per-read socket timeouts; the
    check's own total deadline still ends it at the gate's budget, with its own message (alone,
    and when instances are checked together on threads no signal can stop), and the run goes on."""
    urls = f"['{slow_headers_url}/a', '{slow_headers_url}/b']" if fan_out else f"'{slow_headers_url}'"
    write_plan(plan_with(
        """\
        - name: service_validation
          targets: [slowloris]
          concurrency: 2
          checks: [health]
        - name: after
          targets: [api]
          checks: [{health: {path: /healthz}}]
        """,
        targets=f"slowloris: {{url: {urls}}}\napi: {{url: '{http_url}'}}",
        timeout="1500ms",
    ))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert time.monotonic() - started < 20
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "FAILED*health[[]slowloris*]: GET http://127.0.0.1:*/* gave no answer within 1.*s "
        "(the 1.5s budget of gate pre_release::service_validation ran out)",
        f"*{2 if fan_out else 1} failed, 1 passed*",
    ])
    assert "did not finish within" not in result.stdout.str()


STUCK_KIND = """\
import time

from pytest_release import CheckKind, CheckResult


def stuck(ctx):
    time.sleep(60)  # ignores ctx.remaining(): only the budget's backstop can end it
    return CheckResult(True, "woke up")


def pytest_release_check_kinds():
    return [CheckKind(name="stuck", judges=frozenset({"service"}), params={"type": "object"}, run=stuck)]
"""


@pytest.mark.parametrize("fan_out", [False, True], ids=["alone", "fanned-out"])
def test_a_check_that_ignores_its_budget_is_stopped_by_the_backstop(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str, fan_out: bool) -> None:
    """A check kind that ignores the time it has left: alone, pytest-timeout's signal stops it;
    checked together with others (fan-out), on threads no signal can stop, each item stops waiting
    for its check at the budget."""
    pytester.makeconftest(STUCK_KIND)
    urls = f"['{http_url}/a', '{http_url}/b']" if fan_out else f"'{http_url}'"
    write_plan(plan_with(
        """\
        - name: service_validation
          targets: [svc]
          concurrency: 2
          checks: [stuck]
        - name: after
          targets: [api]
          checks: [{health: {path: /healthz}}]
        """,
        targets=f"svc: {{url: {urls}}}\napi: {{url: '{http_url}'}}",
        timeout="1500ms",
    ))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert time.monotonic() - started < 20
    assert result.ret == 1
    how = "no longer waited for" if fan_out else "stopped by pytest-timeout"
    result.stdout.fnmatch_lines([
        f"*stuck[[]svc*] did not finish within the 1.5s budget of gate pre_release::service_validation: {how}*",
        f"*{2 if fan_out else 1} failed, 1 passed*",
    ])


def test_seed_plan_verbatim_collects_and_runs(pytester: pytest.Pytester, http_url: str) -> None:
    """The source document's six blocks, verbatim, plus targets: a service, a SQLite file, config files."""
    import sqlite3

    seed = (Path(__file__).parent / "data" / "seed-sections.yaml").read_text("utf-8")
    targets = (f"release: {{name: shop, version: 1.0.0}}\ntargets:\n  api: {{url: '{http_url}', health: /healthz}}\n"
               "  db: {sqlite: var/app.db}\n"
               "  conf: {files: ['config/*.yaml', 'config/*.json'], schema: config.schema.json}\n")
    (pytester.path / "release-plan.yaml").write_text(targets + seed, "utf-8")
    (pytester.path / "config").mkdir()
    (pytester.path / "config" / "app.yaml").write_text("service: {name: shop, port: 8080}\n")
    (pytester.path / "config" / "features.json").write_text('{"checkout": true}\n')
    (pytester.path / "config.schema.json").write_text('{"type": "object"}\n')
    (pytester.path / "var").mkdir()
    sqlite3.connect(pytester.path / "var" / "app.db").execute("CREATE TABLE t(x)").connection.commit()
    # The seed's validation metrics sample for 300 s each: rehearse at 3/100 of the time. (A sample
    # of service_performance is a performance check, 100 requests, which must finish within the
    # metric's interval: 60 s in the seed, 1.8 s here. At 1/100 (600 ms) or 1/50 (1.2 s) a loaded CI
    # machine missed it now and then, and the alert fired: check parameters are not scaled.)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "--release-time-scale", "0.03")
    # The seed names rollback procedures but not what their steps do: the required rollback_gate
    # says so, and the release stops before anything could need a rollback it cannot do.
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*release-plan.yaml::pre_release::rollback_gate::readiness?service_rollback? FAILED*",
        "*release-plan.yaml::pre_release::service_validation::health?api? PASSED*",
        "*release-plan.yaml::pre_release::data_validation::integrity?db? PASSED*",
        "*release-plan.yaml::pre_release::config_validation::syntax?conf? PASSED*",
        "*release-plan.yaml::pre_release::config_validation::compatibility?conf? PASSED*",
        "*release-plan.yaml::pre_release::config_validation::metric?config_metrics? PASSED*",
        "*release-plan.yaml::post_release::config_validation::syntax?conf? SKIPPED*",
        "*service_rollback is not ready: stop: no action: define rollback.procedures?service_rollback?.actions.stop*",
        "*SKIPPED  stage release not run: required gate pre_release::rollback_gate failed*",
    ])
    out = result.stdout.str()
    # Every check kind the seed names runs against these targets: each check of pre_release passes
    # (performance, security, consistency and compatibility included); nothing is left unchecked.
    for check in ("service_validation::performance?api?", "service_validation::security?api?",
                  "data_validation::consistency?db?", "data_validation::security?db?",
                  "config_validation::security?conf?", "config_validation::compatibility?api?"):
        result.stdout.fnmatch_lines([f"*release-plan.yaml::pre_release::{check} PASSED*"])
    assert "NOT CHECKED" not in out and "check kind" not in out
    # pre_release is watched before the deploy: its 300 s monitoring window (the alerts' largest)
    # runs in 9 s, each metric sampled on its interval, the tasks counted with their metrics.
    result.stdout.fnmatch_lines([
        "*pre_release::monitoring_gate */9s (* left) | service_health: * samples, 100.0% good (needs 99.0%)*",
        "*release-plan.yaml::pre_release::monitoring_gate::metric?service_health? PASSED*",
        "*release-plan.yaml::pre_release::monitoring_gate::metric?service_performance? PASSED*",
        "*release-plan.yaml::pre_release::monitoring_gate::metric?service_security? PASSED*",
    ])
    assert "NOT ACTED ON by this version" in out
    # Only business_metrics (no source: nothing in the seed says where business figures come from)
    # and its analysis are not acted on; validation metrics, monitoring, tasks and the rest of
    # analytics run.
    notes = out[out.index("NOT ACTED ON by this version"):].splitlines()[1:3]
    assert [n.split(":")[0].strip() for n in notes] == ["analytics.metrics business_metrics",
                                                         "analytics.analysis business_analysis"], notes
    assert "analytics: system_analysis: " in out and "analytics: performance_analysis: " in out
    result.stdout.fnmatch_lines(["*3 failed, 22 passed, 50 skipped*"])


def test_schema_command_prints_a_2020_12_schema_that_accepts_the_seed(pytester: pytest.Pytester) -> None:
    import subprocess
    import sys

    import jsonschema
    import yaml

    out = subprocess.run([sys.executable, "-m", "pytest_release", "schema"], capture_output=True, text=True,
                         check=True).stdout
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    seed = yaml.safe_load((Path(__file__).parent / "data" / "seed-sections.yaml").read_text("utf-8"))
    seed["targets"] = {"api": {"url": "http://127.0.0.1:8080"}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(seed)) == []
    seed["strategy"]["stagez"] = []
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(seed))


def test_secrets_from_the_environment_reach_no_output(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                      http_url: str) -> None:
    secret = "s3cr3t-T0ken-4711"
    write_plan(plan_with(
        """\
        - name: service_validation
          checks:
            - health: {path: "/fail?key=${env:SHOP_TOKEN}"}
            - command:
                argv: [python, -c, "import os; print('token is', os.environ['TOKEN']); raise SystemExit(2)"]
                env: {TOKEN: "${env:SHOP_TOKEN}"}
        """,
        targets=f"api: {{url: '{http_url}'}}",
    ))
    import os

    os.environ["SHOP_TOKEN"] = secret
    try:
        result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "-rA",
                                               "--junitxml", "mine.xml")
    finally:
        del os.environ["SHOP_TOKEN"]
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*GET*/fail?key=*** answered 404*", "*token is ****"])
    outputs = [result.stdout.str(), result.stderr.str(), (pytester.path / "mine.xml").read_text()]
    outputs += [p.read_text() for p in (pytester.path / "evidence").rglob("*") if p.is_file()]
    assert len(outputs) >= 4
    for text in outputs:
        assert secret not in text


CUSTOM_CHECK = """
    from pytest_release import CheckKind, CheckResult

    def run(ctx):
        got = len(ctx.params["word"])
        ok = got <= ctx.params["max_len"]
        return CheckResult(ok, f"word is {got} letters, at most {ctx.params['max_len']}",
                           {"letters": got}, {"max_len": ctx.params["max_len"]})

    def pytest_release_check_kinds():
        return [CheckKind(name="wordlen", judges=frozenset(), run=run, description="a word's length",
                          params={"type": "object", "additionalProperties": False, "required": ["word", "max_len"],
                                  "properties": {"word": {"type": "string"},
                                                 "max_len": {"type": "integer", "minimum": 1}}})]
"""


def test_custom_check_from_conftest_is_validated_collected_run_and_reported(
        pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    pytester.makeconftest(CUSTOM_CHECK)
    write_plan(plan_with("- name: words\n  checks:\n    - wordlen: {word: release, max_len: 3}\n"
                         "    - wordlen: {word: ok, max_len: 3}\n"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "-m", "release_check_wordlen")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*::pre_release::words::wordlen FAILED*",
        "*::pre_release::words::wordlen#2 PASSED*",
        "*word is 7 letters, at most 3*",
        "*measured: letters=7*",
        "*expected: max_len=3*",
    ])
    write_plan(plan_with("- name: words\n  checks:\n    - wordlen: {word: release, max_len: 0, colour: red}\n"))
    broken = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    err = broken.stderr.str()
    assert "release-plan.yaml:12:" in err and "validation.gates[0].checks[0].wordlen.max_len: 0 is out of range" in err
    assert "unknown key 'colour'" in err


def test_service_instances_fan_out_concurrently(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                http_url: str) -> None:
    """Thirty instances of a service (a URL range) whose health takes 300 ms: thirty items, each
    with its own verdict, checked at once (about 0.3 s), not one after another (9 s)."""
    write_plan(plan_with(
        "- name: service_validation\n  concurrency: 30\n  checks: [{health: {path: /slow}}]\n",
        targets=f"api: {{url: '{http_url}/node{{1..30}}'}}"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 0, result.stdout.str()
    host = http_url.removeprefix("http://")
    result.stdout.fnmatch_lines([f"*::service_validation::health?api@{host}/node1? PASSED*",
                                 f"*::service_validation::health?api@{host}/node30? PASSED*",
                                 "*30 passed in *"])
    session = float(re.search(r"30 passed in ([0-9.]+)s", result.stdout.str()).group(1))
    # One after another they take at least 9 s; at once about 0.3 s plus pytest (seconds on a loaded machine).
    assert session < 6.0, f"thirty 300 ms checks took {session}s: they did not run concurrently"


def test_reporters_see_failed_warned_and_passed_checks(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                       http_url: str) -> None:
    """allure-pytest reads its status from pytest's report and the exception: a failed check is
    "failed" (an AssertionError, not "broken"), a passed one "passed", a warning never "broken" or
    "skipped"; pytest-html shows a warning with its own badge."""
    write_plan(_two_stage_plan(http_url, soft_fails=True, hard_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--alluredir", "allure",
                                           "--html", "report.html")
    assert result.ret == 1
    statuses: dict[str, str] = {}
    for path in (pytester.path / "allure").glob("*-result.json"):
        data = json.loads(path.read_text("utf-8"))
        statuses[data["fullName"]] = data["status"]
    expected = {"release-plan.pre_release.service_validation#health": "failed",
                "release-plan.pre_release.service_validation#health-deep": "passed",
                "release-plan.pre_release.smoke#health": "passed",  # the warning: not broken, not skipped
                "release-plan.pre_release.tools#command": "passed"}
    expected.update({k.replace("pre_release", "post_release"): "skipped" for k in expected})  # blocked
    assert statuses == expected
    html = (pytester.path / "report.html").read_text("utf-8")
    # (the rows are HTML-escaped JSON in the page): exactly the warning's result cell is a badge
    assert html.count("col-result release-warned") == 1 and "&gt;warned&lt;/span&gt;" in html


def test_project_markers_do_not_collide_with_plan_names(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                         http_url: str) -> None:
    """A project's own ``health`` and ``smoke`` markers select only its own tests; the plan's checks
    carry release_stage_/release_gate_/release_check_ markers (also under --strict-markers)."""
    write_plan(_two_stage_plan(http_url))
    pytester.makeini("[pytest]\nmarkers =\n    health: the project's own health tests\n"
                     "    smoke: the project's own smoke tests\n")
    pytester.makepyfile(test_own="import pytest\n\n@pytest.mark.health\ndef test_own_health():\n    pass\n\n"
                                 "@pytest.mark.smoke\ndef test_own_smoke():\n    pass\n")
    for marker, own in (("health", "test_own_health"), ("smoke", "test_own_smoke")):
        result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "test_own.py",
                                               "--strict-markers", "--collect-only", "-q", "-m", marker)
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines([f"test_own.py::{own}", "1/10 tests collected (9 deselected)*"])
    ours = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "test_own.py", "--strict-markers",
                                         "--collect-only", "-q", "-m", "release_gate_smoke or release_check_command")
    ours.stdout.fnmatch_lines(["release-plan.yaml::pre_release::smoke::health?api?",
                               "release-plan.yaml::pre_release::tools::command?migrate?",
                               "release-plan.yaml::post_release::smoke::health?api?",
                               "release-plan.yaml::post_release::tools::command?migrate?",
                               "4/10 tests collected (6 deselected)*"])
    markers = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--markers")
    markers.stdout.fnmatch_lines(["*release_stage_post_release: checks of release stage post_release*",
                                  "*release_gate_service_validation: checks of validation gate*",
                                  "*release_check_health: *"])
