"""Rollback in real pytest runs: triggers, steps reported like tests, exactly once (also under
xdist, after a hung check and after Ctrl-C), the loud failed outcome, manual rollback, and
resuming after the runner was killed with SIGKILL at many points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

import pytest

from conftest import Example
from pytest_release.records import check_records

PlanWriter = Callable[..., Path]

#: A step that records that it ran (one line per run in steps.log) and, optionally, what it prints.
STEP = '{{command: {{argv: [python, -c, "open(\'steps.log\', \'a\').write(\'{name}\\\\n\'){extra}"]}}}}'


def step(name: str, extra: str = "") -> str:
    return STEP.format(name=name, extra=extra)


def rollback_plan(gates: str, *, targets: str = "{}", stop_fails: bool = False, timeout: str = "10") -> str:
    stop = step("svc.stop", "; print(\'disk full\'); raise SystemExit(1)" if stop_fails else "")
    return f"""\
release: {{name: shop, version: 2.0.0}}
targets: {targets}
strategy:
  stages: [{{name: pre_release}}, {{name: post_release}}]
  gates:
    - {{name: validation_gate, timeout: {timeout}}}
    - {{name: rollback_gate, timeout: 10}}
rollback:
  triggers:
    - {{name: validation_failure, action: rollback, timeout: 60}}
    - {{name: manual_trigger, action: rollback, timeout: 60}}
  procedures:
    - name: service_rollback
      steps: [stop, revert, start]
      actions:
        stop: {stop}
        revert: {step("svc.revert")}
        start: {step("svc.start")}
    - name: data_rollback
      steps: [revert, verify]
      actions:
        revert: {step("data.revert")}
validation:
  gates:
{gates}
"""


FAILING_SERVICE_GATE = """\
    - name: service_validation
      stages: [post_release]
      checks:
        - {command: {name: smoke, argv: [python, -c, "raise SystemExit(3)"]}}
    - name: data_validation
      checks: [{command: {name: rows, argv: [python, -c, "pass"]}}]
"""


def _steps(pytester: pytest.Pytester) -> list[str]:
    log = pytester.path / "steps.log"
    return log.read_text().split() if log.exists() else []


def test_failed_gate_after_deploy_rolls_back_matching_procedures(pytester: pytest.Pytester,
                                                                 write_plan: PlanWriter) -> None:
    write_plan(rollback_plan(FAILING_SERVICE_GATE))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "--junitxml", "out.xml")
    assert result.ret == 20  # the gate still fails after the rollback: verify fails, loudly
    assert _steps(pytester) == ["svc.stop", "svc.revert", "svc.start"]  # service_rollback only
    result.stdout.fnmatch_lines([
        "*::pre_release::rollback_gate::readiness?service_rollback? PASSED*",
        "*::post_release::service_validation::command?smoke? FAILED*",
        "*validation_failure: required gate(s) failed after the release was deployed: "
        "post_release::service_validation; procedures service_rollback (they match the failed gate(s)*",
        "*::rollback::service_rollback::stop PASSED*",
        "*::rollback::service_rollback::revert PASSED*",
        "*::rollback::service_rollback::start PASSED*",
        "*::rollback::verify FAILED*",  # the same command still fails: the rollback is not proven
        "*ROLLBACK FAILED*",
    ])
    junit = (pytester.path / "out.xml").read_text()
    assert 'classname="release-plan.yaml.rollback.service_rollback" name="stop"' in junit


def test_failure_before_the_deploy_blocks_without_rollback(pytester: pytest.Pytester,
                                                           write_plan: PlanWriter) -> None:
    write_plan(rollback_plan(FAILING_SERVICE_GATE.replace("stages: [post_release]", "stages: [pre_release]")))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 1
    assert _steps(pytester) == []
    assert "pytest-release rollback" not in result.stdout.str()
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    assert json.loads((evidence / "runs" / run / "summary.json").read_text())["outcome"] == "blocked"


def test_failing_step_is_the_loud_rollback_failed_outcome(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(rollback_plan(FAILING_SERVICE_GATE, stop_fails=True))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert result.ret == 20
    assert _steps(pytester) == ["svc.stop"]  # the failed step stopped its procedure
    result.stdout.fnmatch_lines([
        "*::rollback::service_rollback::stop FAILED*",
        "*::rollback::service_rollback::revert SKIPPED*",
        "*ROLLBACK FAILED: THE SYSTEM MAY BE INCONSISTENT*",
        "*step service_rollback::stop (command) failed: python -c * exited 1, expected 0*",
        "*disk full*",
    ])
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    summary = json.loads((evidence / "runs" / run / "summary.json").read_text())
    assert summary["outcome"] == "rollback_failed" and summary["banner"] == "ROLLBACK FAILED"
    trigger = json.loads((evidence / "rollback" / "triggers" / run / "validation_failure.json").read_text())
    assert trigger["failed_step"] == "service_rollback::stop"
    # The evidence is complete and sealed when the rollback fails, too.
    verify = subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)], capture_output=True)
    assert verify.returncode == 0


def test_passing_verify_is_rolled_back(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    """The failing check reads a file that the revert step puts back: verify passes after it."""
    gates = """\
    - name: service_validation
      stages: [post_release]
      checks:
        - {command: {name: smoke, argv: [python, -c, "import os, sys; sys.exit(0 if os.path.exists('good') else 3)"]}}
"""
    plan = rollback_plan(gates).replace(step("svc.revert"), step("svc.revert", "; open(\'good\', \'w\')"))
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*ROLLED BACK: validation_failure: every step passed and verify passed*"])


def test_manual_rollback_runs_every_procedure_and_no_gate(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    write_plan(rollback_plan(FAILING_SERVICE_GATE))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-rollback", "-rs")
    assert _steps(pytester) == ["svc.stop", "svc.revert", "svc.start", "data.revert"]
    result.stdout.fnmatch_lines(["*manual_trigger: --release-rollback: an operator asked for a rollback*",
                                 "*not run: --release-rollback asks for a rollback, not for the gates*"])
    assert "command[smoke] FAILED" not in result.stdout.str()


def test_exactly_one_rollback_under_xdist_with_failures_on_both_workers(pytester: pytest.Pytester,
                                                                        write_plan: PlanWriter) -> None:
    checks = "\n".join(f'        - {{command: {{name: f{i}, argv: [python, -c, "import time; time.sleep(0.2); '
                       f'raise SystemExit(1)"]}}}}' for i in range(8))
    write_plan(rollback_plan(f"    - name: service_validation\n      stages: [post_release]\n      checks:\n{checks}\n"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-n", "2")
    assert result.ret == 20
    assert _steps(pytester) == ["svc.stop", "svc.revert", "svc.start"]
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    workers = {r["worker"] for r in check_records(evidence, run) if r["verdict"] == "failed"}
    assert workers == {"gw0", "gw1"}
    assert len(list((evidence / "rollback" / "triggers" / run).glob("*.json"))) == 1


def test_check_hung_past_its_budget_still_rolls_back(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                     slow_headers_url: str) -> None:
    gates = "    - name: service_validation\n      stages: [post_release]\n      checks: [health]\n"
    write_plan(rollback_plan(gates, targets=f"{{api: {{url: '{slow_headers_url}'}}}}", timeout="1"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    assert _steps(pytester) == ["svc.stop", "svc.revert", "svc.start"]
    result.stdout.fnmatch_lines([
        "*::rollback::service_rollback::start PASSED*",
        "*::rollback::verify FAILED*",
        # a server that drips its headers: each check ends itself at its budget, in the gate and in verify
        "*GET http://127.0.0.1:*/ gave no answer within 1*s (the 1s budget of gate "
        "post_release::service_validation ran out)*",
        "*GET http://127.0.0.1:*/ gave no answer within 1*s (the 1s budget of gate "
        "rollback::service_validation ran out)*",
    ])


@pytest.mark.parametrize("on_interrupt", ["yes", "no"])
def test_ctrl_c_after_a_failure(pytester: pytest.Pytester, write_plan: PlanWriter, on_interrupt: str) -> None:
    gates = """\
    - name: service_validation
      stages: [post_release]
      checks:
        - {command: {name: smoke, argv: [python, -c, "raise SystemExit(3)"]}}
        - {command: {name: slow, argv: [python, -c, "open('slow-started', 'w'); import time; time.sleep(60)"]}}
"""
    write_plan(rollback_plan(gates))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml",
                             "-p", "no:cacheprovider", f"--release-rollback-on-interrupt={on_interrupt}"],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (pytester.path / "slow-started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    # Interrupted: 2, unless the rollback failed (here its verify may judge the smoke check again).
    assert proc.returncode == (20 if "ROLLBACK FAILED" in out else 2), out
    if on_interrupt == "yes":
        assert _steps(pytester) == ["svc.stop", "svc.revert", "svc.start"]
        assert "(the run was interrupted)" in out
    else:
        assert _steps(pytester) == []


def test_conftest_hook_performs_a_step(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    pytester.makeconftest("""
        from pytest_release import StepResult

        def pytest_release_rollback_step(context):
            if context.params.get("what") != "flip":
                return None
            if context.mode == "readiness":
                return StepResult(True, "can flip")
            open("flipped", "w").write(context.step)
            return StepResult(True, "flipped the feature flag", ["flag: off"])
    """)
    plan = rollback_plan(FAILING_SERVICE_GATE).replace(f"revert: {step('svc.revert')}", "revert: {hook: {what: flip}}")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v")
    result.stdout.fnmatch_lines(["*::pre_release::rollback_gate::readiness?service_rollback? PASSED*",
                                 "*::rollback::service_rollback::revert PASSED*"])
    assert (pytester.path / "flipped").read_text() == "revert"


def test_readiness_takes_backups_before_the_deploy_and_fails_loudly(pytester: pytest.Pytester,
                                                                    write_plan: PlanWriter) -> None:
    import sqlite3

    (pytester.path / "var").mkdir()
    with sqlite3.connect(pytester.path / "var" / "app.db") as conn:
        conn.execute("CREATE TABLE t(x)")
        conn.execute("INSERT INTO t VALUES (1)")
    plan = rollback_plan(FAILING_SERVICE_GATE).replace(
        f"revert: {step('data.revert')}",
        "backup: {sqlite_backup: {db: var/app.db, to: var/backups/app.db}}\n"
        "        revert: {sqlite_restore: {db: var/app.db, from: var/backups/app.db}}").replace(
        "steps: [revert, verify]", "steps: [backup, revert, verify]").replace(
        f"revert: {step('svc.revert')}", "revert: {symlink: {link: var/current, to: releases/nope}}")
    write_plan(plan)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "--release-stage",
                                           "pre_release")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*readiness?service_rollback? FAILED*",
        "*readiness?data_rollback? PASSED*",
        "*service_rollback is not ready: revert (symlink): release to revert to does not exist: releases/nope*",
    ])
    backup = pytester.path / "var" / "backups" / "app.db"
    assert backup.is_file() and (pytester.path / "var" / "backups" / "app.db.sha256").is_file()
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


# -- crash safety -------------------------------------------------------------------------------

#: Where the rollback is killed: after the journal shows this event for this step (None: any).
KILL_POINTS = {
    "after-start": ("rollback_start", None),
    "inside-data-revert": ("step_start", "data_rollback::revert"),
    "between-procedures": ("step_end", "config_rollback::verify"),
    "inside-service-start": ("step_start", "service_rollback::start"),
    "before-final-verify": ("step_end", "service_rollback::start"),
    "inside-final-verify": ("step_start", "verify"),
}


def _wait_and_kill(proc: subprocess.Popen[bytes], journals: Path, event: str, step_key: str | None) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for journal in journals.glob("*/journal.jsonl"):
            for line in journal.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry["event"] == event and (step_key is None or entry.get("step") == step_key):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_rollback_killed_with_sigkill_resumes_on_the_next_run(pytester: pytest.Pytester, example: Example,
                                                              point: str) -> None:
    plan = example.project / "release-plan.yaml"
    plan.write_text(plan.read_text().replace("retries: 6", "retries: 0"))
    evidence = pytester.path / "evidence"
    args = [sys.executable, "-m", "pytest", "--release-plan", str(plan), "--release-evidence-dir", str(evidence),
            "-p", "no:cacheprovider"]
    cwd = example.project  # as run.sh does: the project's conftest.py (its custom check) loads
    assert subprocess.run([*args, "--release-stage", "pre_release"], cwd=cwd, capture_output=True).returncode == 0
    example.ctl("stop")
    example.ctl("deploy", "1.1.0")
    example.ctl("start", "--port", str(example.port))
    after = [*args, "--release-stage", "release", "--release-stage", "post_release"]
    proc = subprocess.Popen(after, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    journals = evidence / "rollback" / "procedures"
    assert _wait_and_kill(proc, journals, *KILL_POINTS[point]), "the rollback never reached the kill point"
    resumed = subprocess.run(after, cwd=cwd, capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stdout
    assert "resuming the rollback interrupted in run" in resumed.stdout
    assert "ROLLED BACK (resumed the rollback of run" in resumed.stdout
    assert example.get("/version") == (200, {"version": "1.0.0"})
    assert example.get("/healthz")[0] == 200
    [journal] = list(journals.glob("*/journal.jsonl"))
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    keys = events[0]["steps"]
    ends = [e["step"] for e in events if e["event"] == "step_end"]
    assert sorted(ends) == sorted(keys), "each step completed exactly once"
    assert all(e["verdict"] == "passed" for e in events if e["event"] == "step_end")
    assert [e["event"] for e in events].count("rollback_resume") == 1
    assert events[-1]["event"] == "rollback_end" and events[-1]["outcome"] == "rolled_back"
    # The killed run's evidence is taken into the resuming run's manifest: the tree verifies.
    verify = subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout


def test_a_resumed_rollback_that_fails_exits_20(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    plan = rollback_plan(FAILING_SERVICE_GATE).replace(
        f"start: {step('svc.start')}",
        f"start: {step('svc.start', '; import os, sys; sys.exit(5 if os.path.exists(chr(102)) else 0)')}")
    write_plan(plan)
    args = [sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml", "-p", "no:cacheprovider"]
    proc = subprocess.Popen(args, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    journals = pytester.path / "evidence" / "release" / "rollback" / "procedures"
    assert _wait_and_kill(proc, journals, "step_end", "service_rollback::stop")
    (pytester.path / "f").touch()  # the start step fails from now on
    resumed = subprocess.run(args, cwd=pytester.path, capture_output=True, text=True)
    assert resumed.returncode == 20, resumed.stdout
    assert "ROLLBACK FAILED (resumed the rollback of run" in resumed.stdout
    assert "step service_rollback::start (command) failed" in resumed.stdout
    assert "error during collection" not in resumed.stdout


#: A rollback step's program that holds while ``hold-N`` exists (N: which copy it is) and logs, as
#: it starts, how many earlier copies still run beside it.
HELD = """\
import os, time
def alive(pid):
    try:
        stat = open(f'/proc/{pid}/stat').read()
    except OSError:
        return False
    return stat[stat.rfind(')') + 2] not in 'ZX'
prior = [int(line.split()[1]) for line in open('copies.log')] if os.path.exists('copies.log') else []
open('copies.log', 'a').write(f'start {os.getpid()} {sum(map(alive, prior))}\\n')
while os.path.exists(f'hold-{len(prior) + 1}'):
    time.sleep(0.05)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to watch the step's program")
def test_a_killed_step_does_not_run_beside_its_rerun_after_two_kills(pytester: pytest.Pytester,
                                                                     write_plan: PlanWriter) -> None:
    gates = """\
    - name: service_validation
      stages: [post_release]
      checks:
        - {command: {name: smoke, argv: [python, -c, "import os, sys; sys.exit(os.path.exists('broken'))"]}}
"""
    plan = rollback_plan(gates).replace(
        f"stop: {step('svc.stop')}", f"stop: {step('svc.stop', '; import os; os.remove(chr(98) + chr(114) + chr(111) + chr(107) + chr(101) + chr(110))')}").replace(
        f"revert: {step('svc.revert')}", "revert: {command: {argv: " + json.dumps(["python", "-c", HELD]) + "}}")
    write_plan(plan)
    for name in ("broken", "hold-1", "hold-2"):
        (pytester.path / name).touch()
    args = [sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml", "-p", "no:cacheprovider"]
    copies = pytester.path / "copies.log"

    def kill_the_runner_once_copy_runs(n: int) -> int:
        proc = subprocess.Popen(args, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not copies.exists() or len(copies.read_text().splitlines()) < n:
            assert proc.poll() is None and time.monotonic() < deadline, "the step never started"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the runner only: the step's program has a session of its own
        proc.wait()
        return int(copies.read_text().splitlines()[n - 1].split()[1])

    first = kill_the_runner_once_copy_runs(1)
    assert _alive(first), "a SIGKILLed runner leaves its step's program running"
    second = kill_the_runner_once_copy_runs(2)
    assert not _alive(first) and _alive(second)
    resumed = subprocess.run(args, cwd=pytester.path, capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stdout
    assert "ROLLED BACK (resumed the rollback of run" in resumed.stdout
    assert not _alive(second)
    starts = [line.split() for line in copies.read_text().splitlines()]
    assert len(starts) == 3
    assert [beside for _, _, beside in starts] == ["0", "0", "0"], "no copy ever ran beside another"
    evidence = pytester.path / "evidence" / "release"
    [journal] = list((evidence / "rollback" / "procedures").glob("*/journal.jsonl"))
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    started = [e for e in events if e["event"] == "step_process" and e["step"] == "service_rollback::revert"]
    assert [e["pgid"] for e in started] == [int(pid) for _, pid, _ in starts]
    assert [e["event"] for e in events].count("rollback_resume") == 2
    run = (evidence / "LATEST").read_text().strip()
    record = json.loads((evidence / "rollback" / "procedures" / run / "service_rollback" / "revert.json").read_text())
    assert record["verdict"] == "passed"
    assert any(f"process group {second} " in line and "ended it with SIGTERM" in line for line in record["details"])
    assert any(f"process group {first} " in line and "had already ended" in line for line in record["details"])
    # Both killed runs' evidence is taken into the resuming run's manifest: the tree verifies.
    verify = subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
