"""Names hostile to file systems: every check, gate, stage and procedure name reaches an evidence
file name through one injective, length-bounded mapping (``evidence.safe_name``), and the
readable name stays inside the record. Generated names go through real pytest runs, and the
evidence they leave verifies."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pytest_release.evidence import MAX_FILE_NAME, safe_name
from pytest_release.records import check_records

FIXED = ["a/b", "a_b", "..", ".", "x" * 300, "é" * 200, "a b", "a\\b", "~", "-", "CON", "with::colons"]
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
                min_size=0, max_size=300)
# Plan names (stages, gates, procedures) follow the name pattern: letters, digits, _ . - ; long.
PLAN_NAMES = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,299}\Z").filter(lambda n: ".." not in n or len(n) > 2)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(names=st.lists(NAMES, min_size=2, max_size=6, unique=True),
       extension=st.sampled_from(["", ".json", ".jsonl"]))
def test_safe_name_is_injective_short_and_flat(names: list[str], extension: str) -> None:
    mapped = [safe_name(n + extension) for n in names + FIXED]
    assert len(set(mapped)) == len(set(names + FIXED))
    for name, file_name in zip(names + FIXED, mapped):
        assert len(file_name.encode("utf-8")) <= MAX_FILE_NAME
        assert "/" not in file_name and "\x00" not in file_name and not file_name.startswith(".")
        assert file_name.endswith(extension)
        if file_name != name + extension:
            assert "~" in file_name  # a changed name says so, with the hash of the original


UNDO = "open('undone', 'w').close()"
SMOKE = "import os, sys; sys.exit(0 if os.path.exists('undone') else 3)"  # fails until the rollback ran


def _plan(check_names: list[str], stage: str, gate: str, procedure: str) -> str:
    checks = [{"command": {"name": name, "argv": [sys.executable, "-c", "pass"]}} for name in check_names]
    plan = {
        "release": {"name": "names", "version": "1.0.0"},
        "strategy": {"stages": [{"name": stage}, {"name": "post_release"}],
                     "gates": [{"name": "validation_gate", "timeout": 60}]},
        "rollback": {"triggers": [{"name": "validation_failure", "action": "rollback", "timeout": 60}],
                     "procedures": [{"name": procedure, "steps": ["undo"],
                                     "actions": {"undo": {"command": {"argv": [sys.executable, "-c", UNDO]}}}}]},
        "validation": {"gates": [
            {"name": gate, "stages": [stage], "checks": checks},
            {"name": "smoke", "stages": ["post_release"],
             "checks": [{"command": {"name": "smoke", "argv": [sys.executable, "-c", SMOKE]}}]},
        ]},
    }
    return yaml.safe_dump(plan, allow_unicode=True, sort_keys=False)


@settings(max_examples=3, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=st.lists(NAMES, min_size=3, max_size=8),
       stage=PLAN_NAMES, gate=PLAN_NAMES, procedure=PLAN_NAMES)
def test_generated_names_run_and_their_evidence_verifies(pytester: pytest.Pytester, names: list[str], stage: str,
                                                         gate: str, procedure: str) -> None:
    stage, gate, procedure = (f"s{stage}"[:300], f"g{gate}"[:300], (f"p{procedure}" + "p" * 300)[:300])
    check_names = FIXED + names
    workdir = pytester.mkdir(f"run{next(_RUNS)}")
    (workdir / "release-plan.yaml").write_text(_plan(check_names, stage, gate, procedure), "utf-8")
    evidence = workdir / "evidence"
    result = pytester.runpytest_subprocess("--release-plan", str(workdir / "release-plan.yaml"),
                                           "--release-evidence-dir", str(evidence), "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "FileExistsError" not in out and "File name too long" not in out, out
    assert result.ret == 1, out  # ROLLED BACK: the post_release smoke gate failed, the procedure ran
    verify = subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    [run] = [p.name for p in (evidence / "runs").iterdir()]
    records = list(check_records(evidence, run))
    recorded = {r["check"] for r in records if r.get("stage") == stage}
    # Every check has its own record, a line of its gate's records.jsonl, with its readable name
    # inside (duplicates get #2, ...).
    assert len(recorded) == len(check_names), (sorted(recorded), check_names)
    for path in evidence.rglob("*"):
        assert len(path.name.encode("utf-8")) <= MAX_FILE_NAME
    # The procedure with a 300-character name keeps its records: the step's and its own.
    procedures = evidence / "rollback" / "procedures" / run
    steps = [json.loads(p.read_text("utf-8")) for p in procedures.rglob("*.json")]
    assert {(s.get("procedure"), s.get("step")) for s in steps} >= {(procedure, "undo"), (procedure, None)}


_RUNS = itertools.count()
