"""Faults in the runner itself still end in a rollback and a verdict: SIGTERM (a cancelled CI job),
an evidence directory that cannot be written (before the run, or filled or made read-only during
it), and a pytest-xdist worker that crashes while it runs a check. Real pytest processes, real
signals, real file systems (a tmpfs and a read-only mount where this machine allows mounting)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from collections.abc import Callable

import pytest
from pytest_release.records import resolve

PlanWriter = Callable[..., Path]


def _plan(gates: str, *, timeout: str = "10", stages: str = "[{name: pre_release}, {name: post_release}]") -> str:
    """A plan whose rollback (service_rollback) logs each step to steps.log; its stop step removes
    ``broken`` (so the checks that failed because of it pass again in the final verify)."""
    log = "open('steps.log', 'a').write('{}\\\\n')"
    return f"""\
release: {{name: shop, version: 2.0.0}}
targets: {{}}
strategy:
  stages: {stages}
  gates:
    - {{name: validation_gate, timeout: {timeout}}}
rollback:
  triggers:
    - {{name: validation_failure, action: rollback, timeout: 60}}
  procedures:
    - name: service_rollback
      steps: [stop, revert, start]
      actions:
        stop: {{command: {{argv: [python, -c, "import os; {log.format('stop')}; os.path.exists('broken') and os.remove('broken')"]}}}}
        revert: {{command: {{argv: [python, -c, "import time; open('revert-started', 'w'); time.sleep(1.5); {log.format('revert')}"]}}}}
        start: {{command: {{argv: [python, -c, "{log.format('start')}"]}}}}
validation:
  gates:
{gates}
"""


#: A check that fails while ``broken`` exists (so it passes again after the rollback).
SMOKE = """{command: {name: smoke, argv: [python, -c, "import os, sys; sys.exit(os.path.exists('broken'))"]}}"""


def _steps(path: Path) -> list[str]:
    log = path / "steps.log"
    return log.read_text().split() if log.exists() else []


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _verify(evidence: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)],
                          capture_output=True, text=True)


# -- SIGTERM ------------------------------------------------------------------------------------


SLOW_GATE = f"""\
    - name: service_validation
      stages: [post_release]
      checks:
        - {SMOKE}
        - {{command: {{name: slow, argv: [python, -c, "import os, time; open('slow-started', 'w').write(str(os.getpid())); time.sleep(60 if os.path.exists('broken') else 0)"]}}}}
"""


@pytest.mark.parametrize("second", [False, True], ids=["once", "again-during-the-rollback"])
def test_sigterm_stops_the_checks_rolls_back_and_seals(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                      second: bool) -> None:
    write_plan(_plan(SLOW_GATE))
    (pytester.path / "broken").write_text("the release broke the service\n")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml",
                             "-p", "no:cacheprovider"], cwd=pytester.path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(pytester.path / "slow-started", proc)
    slow = int((pytester.path / "slow-started").read_text())
    (pytester.path / "slow-started").unlink()
    proc.send_signal(signal.SIGTERM)
    if second:
        _wait_for(pytester.path / "revert-started", proc)
        proc.send_signal(signal.SIGTERM)  # a CI system that insists: the step in progress must finish
    out, _ = proc.communicate(timeout=120)
    # Interrupted, rolled back: 2 (as after Ctrl-C); the rollback's own verdict is in the summary.
    assert proc.returncode == 2, out
    assert _steps(pytester.path) == ["stop", "revert", "start"], out
    assert not _alive(slow), "the check running when SIGTERM came was stopped with the run"
    assert "SIGTERM: the run was terminated" in out
    assert "(the run was interrupted)" in out
    assert "ROLLED BACK: validation_failure: every step passed and verify passed" in out
    assert "pytest-release: ROLLED BACK: evidence sealed in" in out
    if second:
        assert "SIGTERM received while the rollback runs: ignored" in out
        assert "1 SIGTERM(s) after the checks had stopped were ignored" in out
    assert "Traceback" not in out
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    summary = json.loads((evidence / "runs" / run / "summary.json").read_text())
    assert (summary["outcome"], summary["interrupted_by"], summary["exit_status"]) == ("rolled_back", "SIGTERM", 2)
    verify = _verify(evidence)
    assert verify.returncode == 0, verify.stdout


def test_sigterm_without_rollback_on_interrupt_rolls_nothing_back(pytester: pytest.Pytester,
                                                                  write_plan: PlanWriter) -> None:
    write_plan(_plan(SLOW_GATE))
    (pytester.path / "broken").write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml",
                             "-p", "no:cacheprovider", "--release-rollback-on-interrupt=no"],
                            cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(pytester.path / "slow-started", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert _steps(pytester.path) == []
    assert "pytest-release: INTERRUPTED: evidence sealed in" in out
    assert _verify(pytester.path / "evidence" / "release").returncode == 0


# -- evidence that cannot be written -----------------------------------------------------------


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/pytest-release-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                          capture_output=True).returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    finally:
        probe.rmdir()


CAN_MOUNT = _can_mount()
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="mounting a tmpfs needs root and CAP_SYS_ADMIN here")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points made by a test; unmounted after it (lazily, so a busy one cannot stay)."""
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _mount(mounts: list[Path], point: Path, *args: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *args, str(point)], check=True, capture_output=True)
    mounts.append(point)


def _unwritable(how: str, pytester: pytest.Pytester, mounts: list[Path]) -> Path:
    """An evidence directory that cannot be written, made the way ``how`` says."""
    evidence = pytester.path / "evidence"
    if how == "a-file-in-the-way":
        evidence.write_text("not a folder\n")
        return evidence / "release"
    if how == "read-only-file-system":
        if not CAN_MOUNT:
            pytest.skip("a read-only bind mount needs root and CAP_SYS_ADMIN here")
        source = pytester.path / "ro-source"
        source.mkdir()
        _mount(mounts, evidence, "--bind", str(source))
        subprocess.run(["mount", "-o", "remount,bind,ro", str(evidence)], check=True, capture_output=True)
        return evidence / "release"
    assert how == "read-only-folder"
    evidence.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: make the folder immutable instead
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(evidence)],
                                                            capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not possible here, and root ignores permission bits")
        return evidence / "release"
    evidence.chmod(0o555)
    return evidence / "release"


@pytest.fixture
def immutable_cleanup(pytester: pytest.Pytester) -> Iterator[None]:
    yield
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(pytester.path / "evidence")], capture_output=True)


@pytest.mark.parametrize("how", ["a-file-in-the-way", "read-only-file-system", "read-only-folder"])
def test_an_unwritable_evidence_directory_is_a_usage_error_before_any_check(
        pytester: pytest.Pytester, write_plan: PlanWriter, mounts: list[Path], immutable_cleanup: None,
        how: str) -> None:
    write_plan(_plan("    - name: g\n      checks: [{command: {name: ran, argv: [python, -c, \"open('ran', 'w')\"]}}]\n"))
    evidence = _unwritable(how, pytester, mounts)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-evidence-dir",
                                           str(evidence))
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: the evidence directory * cannot be written: *. Nothing ran; choose "
                                 "another with --release-evidence-dir*"])
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text
    if how == "a-file-in-the-way":
        assert f"{pytester.path / 'evidence'} is a file where a folder should be" in text
    elif how == "read-only-file-system":
        assert "the file system is read-only" in text
    assert not (pytester.path / "ran").exists()


FILL = "import os\ntry:\n    f = open('{disk}/filler', 'ab')\n    while True:\n        f.write(b'x' * 4096); f.flush()\nexcept OSError:\n    pass\n"


@needs_mount
@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_evidence_lost_mid_run_still_rolls_back_and_says_what_is_missing(
        pytester: pytest.Pytester, write_plan: PlanWriter, mounts: list[Path], fault: str) -> None:
    disk = pytester.path / "disk"
    _mount(mounts, disk, "-t", "tmpfs", "-o", "size=2m", "tmpfs")
    if fault == "disk-full":
        breaker = [sys.executable, "-c", FILL.format(disk=disk)]
    else:
        breaker = ["mount", "-o", "remount,ro", str(disk)]
    gates = f"""\
    - name: service_validation
      stages: [post_release]
      checks:
        - {{command: {{name: break-the-disk, argv: {json.dumps(breaker)}}}}}
        - {SMOKE}
"""
    write_plan(_plan(gates))
    (pytester.path / "broken").write_text("")
    evidence = disk / "evidence"
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--release-evidence-dir",
                                           str(evidence))
    out = result.stdout.str()
    assert _steps(pytester.path) == ["stop", "revert", "start"], out  # the rollback ran all the same
    assert result.ret == 21, out
    why = "no space left on the device" if fault == "disk-full" else "the file system is read-only"
    result.stdout.fnmatch_lines([
        "*ROLLED BACK: validation_failure: every step passed and verify passed*",
        "*pytest-release: ROLLED BACK: EVIDENCE NOT SEALED: the manifest in * could not be written*",
        "*pytest-release: EVIDENCE INCOMPLETE: * evidence file(s) could not be written in * (the verdict above "
        "stands):*",
        f"*validation/gates/*/post_release/service_validation/records.jsonl: {why}*",
    ])
    assert "rollback/procedures/" in out and "journal.jsonl" in out
    assert "Traceback" not in out and "INTERNALERROR" not in out + result.stderr.str()
    # What was written before the fault is still there, and nothing claims to seal the run.
    run = next((evidence / "runs").iterdir()).name
    assert (evidence / "config" / run / "plan.yaml").is_file()
    assert not (evidence / "runs" / run / "manifest.json").exists()


# -- a crashed pytest-xdist worker -------------------------------------------------------------

#: Kills the pytest-xdist worker that runs it (its parent); anywhere else (the rollback's verify,
#: on the controller) it passes.
KILL_WORKER = ('{command: {name: boom, argv: [python, -c, "import os, signal; '
               "os.environ.get('PYTEST_XDIST_WORKER') and os.kill(os.getppid(), signal.SIGKILL)\"]}}")


@pytest.mark.parametrize("restarts", ["default", "0"])
def test_a_crashed_worker_fails_its_check_and_the_rollback_runs_once(pytester: pytest.Pytester,
                                                                    write_plan: PlanWriter, restarts: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # When these tests run under xdist themselves, the run below must not look like a worker to boom.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    ok = '{command: {name: ok%d, argv: [python, -c, "pass"]}}'
    gates = f"""\
    - name: service_validation
      stages: [release]
      checks:
        - {KILL_WORKER}
        - {ok % 1}
    - name: post_checks
      stages: [post_release]
      checks:
        - {ok % 2}
        - {ok % 3}
        - {ok % 4}
"""
    # Budgets of 30 s: a later stage that waited for the lost verdict would wait minutes.
    write_plan(_plan(gates, timeout="30", stages="[{name: pre_release}, {name: release}, {name: post_release}]"))
    args = ["--release-plan", "release-plan.yaml", "-n", "2", "-p", "no:cacheprovider"]
    if restarts == "0":
        args.append("--max-worker-restart=0")
    started = time.monotonic()
    result = pytester.runpytest_subprocess(*args, timeout=200)
    elapsed = time.monotonic() - started
    out = result.stdout.str()
    assert elapsed < 90, f"took {elapsed:.0f}s: a stage waited for a verdict that never came"
    assert result.ret == 1, out
    assert _steps(pytester.path) == ["stop", "revert", "start"], out  # exactly once
    result.stdout.fnmatch_lines([
        "*ROLLED BACK: validation_failure: every step passed and verify passed*",
        "FAILED   release-plan.yaml::release::service_validation::command?boom?: no verdict received: *",
    ])
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    gate = json.loads((evidence / "validation" / "gates" / run / "release" / "service_validation.json").read_text())
    assert gate["verdict"] == "failed"
    boom = next(c for c in gate["checks"] if c["nodeid"].endswith("::command[boom]"))
    assert boom["verdict"] == "failed"
    record = resolve(evidence, boom["record"])
    assert record["summary"].startswith("no verdict received: ")
    assert ("crashed while running it" in record["summary"]
            or "its worker crashed before it reported" in record["summary"])
    assert len(list((evidence / "rollback" / "triggers" / run).glob("*.json"))) == 1
    trigger = json.loads(next((evidence / "rollback" / "triggers" / run).glob("*.json")).read_text())
    assert "release::service_validation" in trigger["reason"]
    # The later stage learned of the failure: skipped (it ran on a live worker) or failed without a
    # verdict (its worker was gone and xdist dropped it), never passed.
    post = json.loads((evidence / "validation" / "gates" / run / "post_release" / "post_checks.json").read_text())
    assert post["verdict"] in ("not_run", "failed"), post
    summary = json.loads((evidence / "runs" / run / "summary.json").read_text())
    assert summary["outcome"] == "rolled_back"
    assert _verify(evidence).returncode == 0


def test_exitfirst_still_rolls_back_a_failed_deployed_gate(pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    gates = f"""\
    - name: service_validation
      stages: [post_release]
      checks:
        - {SMOKE}
        - {{command: {{name: later, argv: [python, -c, "import os; os.path.exists('broken') and open('later-ran', 'w')"]}}}}
"""
    write_plan(_plan(gates))
    (pytester.path / "broken").write_text("")
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-x")
    assert not (pytester.path / "later-ran").exists()  # -x stopped the checks
    assert _steps(pytester.path) == ["stop", "revert", "start"]  # and the rollback still ran
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*ROLLED BACK: validation_failure: every step passed and verify passed*"])
