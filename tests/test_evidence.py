"""The evidence tree: records, reports, the manifest and verify, against real pytest runs."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from collections.abc import Callable

import jsonschema
import pytest

from helpers import plan_with, wait_for_file
from pytest_release.evidence import FOLDERS
from pytest_release.records import RECORD_SCHEMA, check_records, read_lines, resolve

PlanWriter = Callable[..., Path]


def _plan(http_url: str, *, fail: bool = False) -> str:
    return plan_with(
        f"""\
        - name: service_validation
          checks:
            - health: {{path: {'/fail' if fail else '/healthz'}}}
            - {{health: {{name: deep, json: {{status: ok}}}}}}
        - name: smoke
          required: false
          checks: [{{health: {{path: /healthz, status: 201}}}}]
        - name: tools
          checks: [{{command: {{argv: [python, -c, "print('ok')"], output: ok, name: probe}}}}]
        """,
        targets=f"api: {{url: '{http_url}', health: /healthz}}",
        stages="[{name: pre_release}, {name: post_release}]",
    )


def _verify(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(path), *args],
                          capture_output=True, text=True)


def _verify_here(path: Path) -> tuple[int, str]:
    """``python -m pytest_release verify PATH`` run in this process: its exit status and output."""
    from pytest_release.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["verify", str(path)])
    return code, out.getvalue()


def _latest(evidence: Path) -> str:
    return (evidence / "LATEST").read_text().strip()


def test_a_run_fills_the_tree_with_valid_records(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                 http_url: str) -> None:
    write_plan(_plan(http_url, fail=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 1
    evidence = pytester.path / "evidence" / "release"
    run = _latest(evidence)
    result.stdout.fnmatch_lines([f"pytest-release: BLOCKED: evidence sealed in *{run} (manifest sha256 *)"])
    for folder in FOLDERS:
        assert (evidence / folder).is_dir(), folder
    run_dir = evidence / "runs" / run
    for name in ("junit.xml", "report.html", "summary.json", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert (evidence / "config" / run / "plan.yaml").read_bytes() == (pytester.path / "release-plan.yaml").read_bytes()
    validator = jsonschema.Draft202012Validator(RECORD_SCHEMA)
    records = [json.loads(p.read_text()) for p in evidence.rglob("*.json")
               if "record" in json.loads(p.read_text())]
    assert len(records) > 5 and not [r for r in records if r["record"] == "check"]
    records += check_records(evidence, run)  # one JSON line per check, in its gate's records.jsonl
    for record in records:
        validator.validate(record)
    checks = {r["nodeid"]: r for r in records if r["record"] == "check"}
    failed = checks["release-plan.yaml::pre_release::service_validation::health[api]"]
    assert failed["verdict"] == "failed" and failed["measured"]["status"] == 503
    assert failed["expected"] == {"status": 200} and failed["params"] == {"path": "/fail"}
    assert failed["summary"].endswith("/fail answered 503, expected 200")
    assert failed["worker"] == "main" and failed["duration_s"] >= 0 and failed["start"].endswith("Z")
    warned = checks["release-plan.yaml::pre_release::smoke::health[api]"]
    assert warned["verdict"] == "warning" and warned["required"] is False
    blocked = checks["release-plan.yaml::post_release::tools::command[probe]"]
    assert blocked["verdict"] == "skipped" and "stage post_release not run" in blocked["message"]
    gates = {(r["stage"], r["gate"]): r for r in records if r["record"] == "gate"}
    assert gates["pre_release", "service_validation"]["verdict"] == "failed"
    assert gates["pre_release", "smoke"]["verdict"] == "warning"
    assert gates["pre_release", "tools"]["verdict"] == "passed"
    assert gates["post_release", "tools"]["verdict"] == "not_run"
    for gate in gates.values():  # each gate names its checks' records (PATH#LN), which resolve to them
        for check in gate["checks"]:
            assert check["record"].endswith(f"/{gate['stage']}/{gate['gate']}/records.jsonl#L"
                                            f"{check['record'].rpartition('#L')[2]}")
            assert resolve(evidence, check["record"]) == checks[check["nodeid"]]
    stages = next(r for r in records if r["record"] == "stages")["stages"]
    assert [(s["name"], s["verdict"]) for s in stages] == [("pre_release", "failed"), ("post_release", "skipped")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"] == "blocked" and summary["banner"] == "BLOCKED" and summary["exit_status"] == 1
    effective = json.loads((evidence / "config" / run / "effective.json").read_text())
    assert effective["validation"]["gates"][0]["timeout_s"] == 10.0
    assert effective["validation"]["gates"][0]["stages"] == ["pre_release", "post_release"]
    assert (evidence / "validation" / "config" / run / "validation.json").is_file()
    assert _verify(evidence).returncode == 0


def test_verify_names_every_changed_missing_or_extra_file(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                         http_url: str) -> None:
    write_plan(_plan(http_url))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 0
    evidence = pytester.path / "evidence" / "release"
    good = _verify(evidence)
    assert good.returncode == 0 and "OK: 1 run(s) verified" in good.stdout
    manifest = json.loads((evidence / "runs" / _latest(evidence) / "manifest.json").read_text())
    files = sorted(manifest["files"])
    assert any(f.endswith("junit.xml") for f in files) and any(f.endswith("report.html") for f in files)
    for rel in files:
        # The command's own code in this process (two a file: a process each would take a minute).
        path = evidence / rel
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one byte changed
        code, out = _verify_here(evidence)
        assert code == 1 and f"changed: {rel}" in out, rel
        path.unlink()
        code, out = _verify_here(evidence)
        assert code == 1 and f"missing: {rel}" in out, rel
        path.write_bytes(original)
    (evidence / "validation" / "gates" / "planted.json").write_text("{}")
    planted = _verify(evidence)
    assert planted.returncode == 1 and "extra: validation/gates/planted.json" in planted.stdout


def test_two_runs_keep_both_and_chain(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_plan(http_url))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-stage",
                                         "pre_release").ret == 0
    evidence = pytester.path / "evidence" / "release"
    first = _latest(evidence)
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-stage",
                                         "post_release").ret == 0
    second = _latest(evidence)
    assert first != second and second > first
    for run in (first, second):
        assert (evidence / "runs" / run / "junit.xml").is_file()
        assert _verify(evidence, "--run", run).returncode == 0
    both = _verify(evidence)
    assert both.returncode == 0 and "OK: 2 run(s) verified" in both.stdout
    manifest = json.loads((evidence / "runs" / second / "manifest.json").read_text())
    assert manifest["previous"]["run_id"] == first
    assert json.loads((evidence / "runs" / first / "summary.json").read_text())["outcome"] == "passed"
    # Rewriting the first run's manifest (and its files) to hide a change breaks the chain.
    first_manifest = evidence / "runs" / first / "manifest.json"
    first_manifest.write_text(first_manifest.read_text().replace('"outcome": "passed"', '"outcome": "x"'))
    tampered = _verify(evidence)
    assert tampered.returncode == 1 and f"broken chain: {second}: previous manifest {first} was changed" in tampered.stdout


def test_users_own_reports_keep_working_and_are_kept(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                     http_url: str) -> None:
    write_plan(_plan(http_url))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--junitxml", "mine.xml",
                                           "--html", "mine.html", "--self-contained-html")
    assert result.ret == 0
    evidence = pytester.path / "evidence" / "release"
    run_dir = evidence / "runs" / _latest(evidence)
    assert (pytester.path / "mine.xml").read_bytes() == (run_dir / "junit.xml").read_bytes()
    assert (pytester.path / "mine.html").read_bytes() == (run_dir / "report.html").read_bytes()
    assert _verify(evidence).returncode == 0


def test_junit_carries_gate_stage_check_target_threshold_and_measured(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    write_plan(_plan(http_url, fail=True))
    pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    evidence = pytester.path / "evidence" / "release"
    suite = ET.parse(evidence / "runs" / _latest(evidence) / "junit.xml").getroot()
    case = next(c for c in suite.iter("testcase") if c.get("name") == "health[api]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    release = json.loads(props["release"])
    assert release["gate"] == "service_validation" and release["stage"] == "pre_release"
    assert release["check"] == "health" and release["target"] == "api" and release["required"] is True
    assert release["expected"] == {"status": 200} and release["measured"]["status"] == 503
    assert props["release_verdict"] == "failed" and "answered 503" in release["summary"]


def test_github_step_summary(pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_plan(_plan(http_url, fail=True))
    summary = pytester.path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    text = summary.read_text()
    assert text.startswith("earlier step\n### BLOCKED: shop 1.0.0")
    assert "| pre_release | service_validation | failed |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `pre_release::service_validation::health"))
    assert "| failed |" in row and "status=503" in row and "| status=200 |" in row


def test_hanging_check_leaves_complete_verified_evidence(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                         slow_headers_url: str) -> None:
    write_plan(plan_with("- name: service_validation\n  checks: [health]\n",
                         targets=f"stuck: {{url: '{slow_headers_url}'}}", timeout="1"))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 1
    evidence = pytester.path / "evidence" / "release"
    run = _latest(evidence)
    [record] = read_lines(evidence / "validation/gates" / run / "pre_release/service_validation/records.jsonl")
    assert record["check"] == "health[stuck]"
    assert record["verdict"] == "failed" and "budget of gate pre_release::service_validation" in record["message"]
    assert _verify(evidence).returncode == 0


def test_interrupted_run_seals_its_evidence(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(plan_with(
        """\
        - name: tools
          checks:
            - {command: {name: quick, argv: [python, -c, "pass"]}}
            - {command: {name: slow, argv: [python, -c, "import time; open('slow-started', 'w').close(); time.sleep(60)"]}}
        """, timeout="120"))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml",
                             "-p", "no:cacheprovider"], cwd=pytester.path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    evidence = pytester.path / "evidence" / "release"
    wait_for_file(pytester.path / "slow-started", proc, 30)  # the quick check is done, the slow one runs
    assert any(b'"command[quick]"' in p.read_bytes()
               for p in evidence.glob("validation/gates/*/pre_release/tools/records.jsonl"))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2, out
    run = _latest(evidence)
    summary = json.loads((evidence / "runs" / run / "summary.json").read_text())
    assert summary["outcome"] == "interrupted" and summary["banner"] == "INTERRUPTED"
    assert (evidence / "runs" / run / "junit.xml").is_file()
    assert _verify(evidence).returncode == 0


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_html_report_opens_with_the_release_summary_in_chromium(
        pytester: pytest.Pytester, write_plan: PlanWriter, http_url: str) -> None:
    """Real headless Chromium (Debian's, driven by Playwright) opens the self-contained report."""
    from playwright.sync_api import sync_playwright

    plan = _plan(http_url, fail=True) + "    - name: load\n      checks: [{performance: {requests: 40, concurrency: 4}}]\n"
    write_plan(plan)
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 1
    evidence = pytester.path / "evidence" / "release"
    report = evidence / "runs" / _latest(evidence) / "report.html"
    shot = Path(__file__).parent / "screenshots" / "release-report.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(report.as_uri())
            banner = page.locator("#release-banner")
            assert banner.is_visible()
            assert banner.inner_text() == "BLOCKED: shop 1.0.0"
            assert page.title().startswith("Release report: shop 1.0.0")
            stages = page.locator("#release-stages")
            assert stages.is_visible() and "pre_release" in stages.inner_text()
            row = page.locator("#release-attention a", has_text="pre_release::service_validation::health[api]")
            assert row.is_visible()
            href = row.get_attribute("href")
            assert href is not None
            file, _, line = href.partition("#L")  # a line of the gate's records.jsonl
            record = read_lines(report.parent / file)[int(line) - 1]
            assert record["record"] == "check" and record["verdict"] == "failed"
            chart = page.locator("#release-latency svg.release-latency-chart").first
            assert chart.is_visible()  # the performance check's latency distribution
            assert page.locator("#release-latency rect").count() >= 20
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_xdist_records_come_from_the_controller(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                http_url: str) -> None:
    """Under 2 xdist workers every check's record is written once, by the controller, into its
    gate's records.jsonl, and the gate records name each line."""
    write_plan(_plan(http_url, fail=True) + "    - name: many\n      checks:\n"
               + "".join(f"        - {{health: {{name: h{i}, path: /healthz}}}}\n" for i in range(12)))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-n", "2")
    assert result.ret == 1
    evidence = pytester.path / "evidence" / "release"
    run = _latest(evidence)
    records = list(check_records(evidence, run))
    nodeids = [r["nodeid"] for r in records]
    assert len(nodeids) == len(set(nodeids)) == 8 + 2 * 12  # each stage's gates: once each, no more
    assert {r["nodeid"].split("::")[1] for r in records} == {"pre_release", "post_release"}
    assert sum(1 for n in nodeids if "::many::" in n) == 24
    gates = [json.loads(p.read_text()) for p in (evidence / "validation/gates" / run).rglob("*/*.json")]
    referenced = [c["record"] for g in gates for c in g["checks"]]
    assert sorted(resolve(evidence, ref)["nodeid"] for ref in referenced) == sorted(nodeids)
    assert {r["worker"] for r in records} <= {"gw0", "gw1"}
    assert sorted(r["verdict"] for r in records).count("failed") == 1
    assert len(list(evidence.glob("runs/*/manifest.json"))) == 1
    assert _verify(evidence).returncode == 0


def _records_file(evidence: Path) -> Path:
    return next((evidence / "validation/gates" / _latest(evidence)).rglob("records.jsonl"))


def _change(lines: list[bytes]) -> list[bytes]:
    record = json.loads(lines[0])
    record["verdict"] = "failed" if record["verdict"] == "passed" else "passed"
    return [json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n", *lines[1:]]


EDITS = {
    "a line changed (its verdict)": (_change, None),
    "a line removed": (lambda lines: lines[1:], "sealed with 2 line(s), it has 1"),
    "a line added (a copy)": (lambda lines: [*lines, lines[0]], "sealed with 2 line(s), it has 3"),
    "a line added (not JSON)": (lambda lines: [*lines, b"{oops\n"], "line 3 no longer parses"),
    "two lines swapped": (lambda lines: lines[::-1], None),
}


@pytest.mark.parametrize("edit", EDITS)
def test_verify_fails_on_an_edited_removed_or_added_record_line(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                                http_url: str, edit: str) -> None:
    write_plan(plan_with("- name: service_validation\n  checks:\n    - {health: {name: a, path: /healthz}}\n"
                         "    - {health: {name: b, path: /fail}}\n", targets=f"api: {{url: '{http_url}'}}"))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 1
    evidence = pytester.path / "evidence" / "release"
    path = _records_file(evidence)
    rel = path.relative_to(evidence).as_posix()
    assert _verify(evidence).returncode == 0
    change, why = EDITS[edit]
    original = path.read_bytes()
    path.write_bytes(b"".join(change(original.splitlines(keepends=True))))
    done = _verify(evidence)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if line.startswith(f"changed: {rel}"))
    assert why is None or why in line, line
    path.write_bytes(original)
    assert _verify(evidence).returncode == 0


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no xdist", "-n 2"])
def test_files_per_run_do_not_grow_with_the_number_of_checks(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                            http_url: str, xdist: list[str]) -> None:
    """One run of 2 checks and one of 40, in one gate: the same files (the records of the 40 are
    40 lines of the same records.jsonl); nothing else but the manifest's list of them differs."""
    files = {}
    for count in (2, 40):
        checks = "".join(f"    - {{health: {{name: c{i}, path: /healthz}}}}\n" for i in range(count))
        write_plan(plan_with(f"- name: service_validation\n  checks:\n{checks}", targets=f"api: {{url: '{http_url}'}}"))
        evidence = pytester.path / f"evidence-{count}"
        assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-evidence-dir",
                                             str(evidence), *xdist).ret == 0
        run = _latest(evidence)
        files[count] = sorted(p.relative_to(evidence).as_posix().replace(run, "RUN")
                              for p in evidence.rglob("*") if p.is_file())
        assert len(list(check_records(evidence, run))) == count
        manifest = json.loads((evidence / "runs" / run / "manifest.json").read_text())
        assert manifest["lines"] == {f"validation/gates/{run}/pre_release/service_validation/records.jsonl": count}
    assert files[2] == files[40]
    assert len(files[40]) < 20
