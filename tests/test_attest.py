"""Signed runs and the whole-chain verify, against real pytest runs and a tampering user.

Each tampering case of issue 13 is applied to a copy of a real evidence tree (three runs, signed
or unsigned) and ``verify`` must catch it, or, for what only a key (or a kept head digest) can
show, say plainly that it cannot tell. The envelope is checked with independent implementations
(securesystemslib's DSSE and Ed25519 verifier, the in-toto attestation protobuf bindings).
"""

from __future__ import annotations

import base64
import fcntl
from fnmatch import fnmatch
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import plan_with
from pytest_release.__main__ import main as cli
from pytest_release.attest import CHAIN_FIELD, ENVELOPE, PREDICATE_TYPE, Signer, keygen, load_signer, statement

ARTIFACT = b"the release's bytes\n"
PLAN = plan_with(
    """\
    - name: tools
      checks:
        - {command: {argv: [python, -c, "print('ok')"], output: ok, name: probe}}
        - integrity
    """,
    targets="dist: {manifest: dist/SHA256SUMS}")


def _project(path: Path, plan: str = PLAN) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "release-plan.yaml").write_text(plan)
    (path / "dist").mkdir(exist_ok=True)
    (path / "dist" / "app.tar.gz").write_bytes(ARTIFACT)
    (path / "dist" / "SHA256SUMS").write_text(f"{hashlib.sha256(ARTIFACT).hexdigest()}  app.tar.gz\n")
    return path


def _run(project: Path, evidence: Path, *extra: str, env: dict[str, str] | None = None,
         plan: str = "release-plan.yaml") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "--release-plan", plan, "-p", "no:cacheprovider",
                           "--rootdir", str(project), "--release-evidence-dir", str(evidence), *extra],
                          cwd=project, capture_output=True, text=True, env={**os.environ, **(env or {})})


def _verify(evidence: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_release", "verify", str(evidence), *args],
                          capture_output=True, text=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _latest(evidence: Path) -> str:
    return (evidence / "LATEST").read_text().strip()


def _statement(evidence: Path, run: str) -> dict[str, Any]:
    envelope = json.loads((evidence / "runs" / run / ENVELOPE).read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


@dataclass
class Tree:
    """A pristine evidence tree of three real runs, with the key that signed it (if any)."""

    project: Path
    evidence: Path
    runs: list[str]
    keys: Path
    signed: bool

    @property
    def sign_args(self) -> list[str]:
        return ["--release-sign-key", str(self.keys / "release-signing-key.pem")] if self.signed else []

    @property
    def public(self) -> Path:
        return self.keys / "release-signing-key.pub.pem"


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Tree]:
    base = tmp_path_factory.mktemp("trees")
    keys = base / "keys"
    keygen(keys)
    made = {}
    for signed in (False, True):
        project = _project(base / ("signed" if signed else "unsigned"))
        tree = Tree(project, project / "evidence", [], keys, signed)
        for _ in range(3):
            done = _run(project, tree.evidence, *tree.sign_args)
            assert done.returncode == 0, done.stdout + done.stderr
            tree.runs.append(_latest(tree.evidence))
        made[signed] = tree
    return made


@pytest.fixture(params=[False, True], ids=["unsigned", "signed"])
def tree(request: pytest.FixtureRequest, trees: dict[bool, Tree], tmp_path: Path) -> Tree:
    """A copy of a pristine tree, to tamper with."""
    pristine = trees[request.param]
    project = tmp_path / "project"
    shutil.copytree(pristine.project, project)
    return Tree(project, project / "evidence", list(pristine.runs), pristine.keys, pristine.signed)


def _verify_in_process(evidence: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli(["verify", str(evidence), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- the tampering user -----------------------------------------------------------------------------


def _rewrite_manifest(evidence: Path, run: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = evidence / "runs" / run / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _edit_summary(evidence: Path, run: str) -> None:
    summary = evidence / "runs" / run / "summary.json"
    summary.write_text(summary.read_text().replace('"outcome": "released"', '"outcome": "blocked"'))
    _rewrite_manifest(evidence, run, lambda m: m["files"].__setitem__(f"runs/{run}/summary.json", _sha(summary)))


def _delete_run(evidence: Path, run: str) -> None:
    """Every file and folder of ``run``, everywhere in the tree."""
    for folder in sorted(evidence.rglob(run), key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(folder)


def _link(evidence: Path, run: str) -> dict[str, str]:
    link = {"run_id": run, "manifest_sha256": _sha(evidence / "runs" / run / "manifest.json")}
    if (evidence / "runs" / run / ENVELOPE).exists():
        link["envelope_sha256"] = _sha(evidence / "runs" / run / ENVELOPE)
    return link


def _forge(evidence: Path, template: str, previous: dict[str, str] | None, signer: Signer | None = None) -> str:
    """A whole run made up from another's files, sealed (and signed with ``signer``) by hand."""
    forged = "20991231T235959Z-f0f0f0"
    files = {}
    for rel in json.loads((evidence / "runs" / template / "manifest.json").read_text())["files"]:
        target = evidence / rel.replace(template, forged)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(evidence / rel, target)
        files[rel.replace(template, forged)] = _sha(target)
    manifest = {"run_id": forged, "sealed_at": "2099-12-31T23:59:59.000Z", "previous": previous,
                "metadata": {"outcome": "released"}, "files": files}
    if signer is not None:
        manifest["signed_by"] = signer.keyid
    path = evidence / "runs" / forged / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if signer is not None:
        claim = statement(forged, (f"runs/{forged}/manifest.json", _sha(path)), files, previous,
                          {"result": "PASSED", "configuration": []})
        (path.parent / ENVELOPE).write_bytes(signer.envelope(json.dumps(claim).encode()))
    (evidence / "LATEST").write_text(forged + "\n")
    return forged


def _attacker(tmp: Path) -> Signer:
    keygen(tmp / "attacker")
    return load_signer(str(tmp / "attacker" / "release-signing-key.pem"), tmp)


@dataclass(frozen=True)
class Case:
    """A tampering; ``needs``: what verify needs to catch it (nothing, a key, or --head)."""

    tamper: Callable[[Tree], None]
    needs: str = ""
    says: str = ""


def _latest_back_then_new_run(t: Tree) -> None:
    (t.evidence / "LATEST").write_text(t.runs[1] + "\n")
    assert _run(t.project, t.evidence, *t.sign_args).returncode == 0


def _garble_latest_new_run_delete_earlier(t: Tree) -> None:
    (t.evidence / "LATEST").write_text("nonsense\n")
    assert _run(t.project, t.evidence, *t.sign_args).returncode == 0
    for run in t.runs:
        _delete_run(t.evidence, run)


def _rewrite_earlier_and_rehash(t: Tree) -> None:
    first, second, head = t.runs
    _edit_summary(t.evidence, second)
    _rewrite_manifest(t.evidence, head, lambda m: m["previous"].update(_link(t.evidence, second)))


CASES = {
    "latest summary edited, its manifest hash updated": Case(lambda t: _edit_summary(t.evidence, t.runs[-1]),
                                                             "key", "signature: runs/*/manifest.json is not*"),
    "earlier run edited, every later manifest re-hashed": Case(_rewrite_earlier_and_rehash, "key",
                                                               "signature: run *: the signed chain link differs*"),
    "latest run folder deleted, LATEST moved back": Case(
        lambda t: (shutil.rmtree(t.evidence / "runs" / t.runs[-1]),
                   (t.evidence / "LATEST").write_text(t.runs[1] + "\n")), says="extra: config/*/plan.yaml"),
    "latest run deleted altogether, LATEST moved back": Case(
        lambda t: (_delete_run(t.evidence, t.runs[-1]), (t.evidence / "LATEST").write_text(t.runs[1] + "\n")),
        "head", "head: no run in the chain was sealed with sha256 *"),
    "latest run deleted, LATEST still names it": Case(lambda t: _delete_run(t.evidence, t.runs[-1]),
                                                      says="LATEST: names run *, which has no manifest*"),
    "middle run deleted": Case(lambda t: _delete_run(t.evidence, t.runs[1]),
                               says="broken chain: *: previous manifest * is missing"),
    "LATEST names an older run": Case(lambda t: (t.evidence / "LATEST").write_text(t.runs[0] + "\n"),
                                      says="LATEST: names run *, but the head of the chain is *, 2 run(s) behind it"),
    "LATEST garbled": Case(lambda t: (t.evidence / "LATEST").write_bytes(b"\xff\xfe garbage"),
                           says="LATEST: garbled: *"),
    "LATEST deleted": Case(lambda t: (t.evidence / "LATEST").unlink(), says="LATEST: missing (the head is *)"),
    "forged run, unchained": Case(lambda t: _forge(t.evidence, t.runs[-1], None),
                                  says="chain: 2 roots (runs that follow no earlier run): *"),
    "forged run chained after the latest": Case(
        lambda t: _forge(t.evidence, t.runs[-1], _link(t.evidence, t.runs[-1])), "key",
        "unsigned: run 20991231T235959Z-f0f0f0 has no attestation*"),
    "forged run chained after the latest, signed with another key": Case(
        lambda t: _forge(t.evidence, t.runs[-1], _link(t.evidence, t.runs[-1]), _attacker(t.project)), "key",
        "signature: runs/20991231T235959Z-f0f0f0/attestation.intoto.jsonl: signed by key *, not by *"),
    "fork: LATEST moved back, then a new run": Case(_latest_back_then_new_run, says="fork: runs * all follow run *"),
    "LATEST garbled, a new run, every earlier run deleted": Case(
        _garble_latest_new_run_delete_earlier, says="broken chain: *: previous manifest * is missing"),
    "empty run folder added": Case(lambda t: (t.evidence / "runs" / "20991231T235959Z-f0f0f0").mkdir(),
                                   says="extra: runs/20991231T235959Z-f0f0f0/ (a run folder that no manifest lists)"),
    ".tmp file added in a run folder": Case(
        lambda t: (t.evidence / "runs" / t.runs[1] / ".summary.json.123.tmp").write_text("{}"),
        says="extra: runs/*/.summary.json.123.tmp"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tampering(name: str, tree: Tree, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    head = _sha(tree.evidence / "runs" / tree.runs[-1] / "manifest.json")
    key = ["--key", str(tree.public)] if tree.signed else []
    code, out = _verify_in_process(tree.evidence, capsys, *key)
    assert code == 0 and f"head: run {tree.runs[-1]}, manifest sha256 {head}" in out, out
    case.tamper(tree)
    code, out = _verify_in_process(tree.evidence, capsys, *key)
    caught = case.needs == "" or (case.needs == "key" and tree.signed)
    if caught:
        assert code == 1 and "FAILED:" in out, out
        assert any(fnmatch(line, case.says) for line in out.splitlines()), out
    else:
        assert code == 0, out  # consistent as far as the tree alone can show, and it says what it cannot tell
        assert ("unsigned: cannot tell" in out) if case.needs == "key" else ("no --head given" in out), out
    if case.needs == "head":
        code, out = _verify_in_process(tree.evidence, capsys, *key, "--head", head)
        assert code == 1 and "head: no run in the chain was sealed with sha256" in out, out


def test_unsigned_tree_says_what_it_proves_and_require_signature_fails(
        trees: dict[bool, Tree], capsys: pytest.CaptureFixture[str]) -> None:
    unsigned, signed = trees[False], trees[True]
    code, out = _verify_in_process(unsigned.evidence, capsys)
    assert code == 0 and "OK: 3 run(s) verified" in out and "unsigned: signatures not checked" in out
    assert "unsigned evidence proves that the runs form one unbroken chain" in out
    assert "not someone who can write this directory" in out
    code, out = _verify_in_process(unsigned.evidence, capsys, "--key", str(unsigned.public))
    assert code == 1 and f"unsigned: run {unsigned.runs[-1]} has no attestation" in out
    assert "the head must be signed when verifying with --key" in out
    code, out = _verify_in_process(signed.evidence, capsys, "--key", str(signed.public), "--require-signature")
    assert code == 0 and "3 signature(s) checked" in out, out
    code, out = _verify_in_process(signed.evidence, capsys, "--require-signature")
    assert code == 2 and "--require-signature needs --key" in out


def test_signing_starts_on_an_unsigned_chain(tmp_path: Path, trees: dict[bool, Tree],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Runs before the first signed one stay unsigned but bound by its signed link; after it,
    every run must be signed."""
    shutil.copytree(trees[False].project, tmp_path / "p")
    evidence, keys = tmp_path / "p" / "evidence", trees[True].keys
    sign = ["--release-sign-key", str(keys / "release-signing-key.pem")]
    assert _run(tmp_path / "p", evidence, *sign).returncode == 0
    code, out = _verify_in_process(evidence, capsys, "--key", str(keys / "release-signing-key.pub.pem"))
    assert code == 0 and "1 signature(s) checked" in out and "the 3 run(s) before" in out, out
    code, out = _verify_in_process(evidence, capsys, "--key", str(keys / "release-signing-key.pub.pem"),
                                   "--require-signature")
    assert code == 1 and out.count("has no attestation") == 3, out
    assert _run(tmp_path / "p", evidence).returncode == 0  # signing dropped again
    code, out = _verify_in_process(evidence, capsys, "--key", str(keys / "release-signing-key.pub.pem"))
    assert code == 1 and "must be signed" in out, out


def test_head_digest_from_the_run_line_checks_later_runs(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    evidence = project / "evidence"
    first = _run(project, evidence)
    digest = first.stdout.rpartition("manifest sha256 ")[2].split(")")[0]
    assert len(digest) == 64
    assert _run(project, evidence).returncode == 0
    later = _verify(evidence, "--head", digest)
    assert later.returncode == 0, later.stdout  # a run added after the kept head is fine
    bad = _verify(evidence, "--head", "xyz")
    assert bad.returncode == 2 and "not a SHA-256" in bad.stderr


MALFORMED = {
    "truncated JSON": lambda text: text[: len(text) // 2],
    "no files key": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "files"}),
    "files not an object": lambda text: json.dumps({**json.loads(text), "files": ["a"]}),
    "a list": lambda text: "[1, 2]",
    "not UTF-8": lambda text: "\udcff",
    "another run's id": lambda text: json.dumps({**json.loads(text), "run_id": "20000101T000000Z-000000"}),
    "previous garbled": lambda text: json.dumps({**json.loads(text), "previous": "yesterday"}),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_manifest_is_a_problem_line_not_a_traceback(name: str, trees: dict[bool, Tree],
                                                              tmp_path: Path) -> None:
    shutil.copytree(trees[False].evidence, tmp_path / "e")
    run = trees[False].runs[1]
    path = tmp_path / "e" / "runs" / run / "manifest.json"
    path.write_bytes(MALFORMED[name](path.read_text()).encode("utf-8", "surrogateescape"))
    done = _verify(tmp_path / "e")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(f"unreadable: runs/{run}/manifest.json: ") for line in lines), done.stdout
    assert any(line.startswith("broken chain: ") for line in lines), done.stdout
    assert not any(line.startswith("extra: ") for line in lines), done.stdout  # said once, not per file


#: A project's conftest.py that holds each run just before it seals (the recorder seals after every
#: other pytest_sessionfinish) until all six runs are there: they then seal at the same moment.
BARRIER = """\
import os, time
import pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    os.makedirs("arrived", exist_ok=True)
    open(os.path.join("arrived", str(os.getpid())), "w").close()
    deadline = time.monotonic() + 90
    while len(os.listdir("arrived")) < 6 and time.monotonic() < deadline:
        time.sleep(0.002)
"""


def test_six_concurrent_runs_give_one_linear_signed_chain(tmp_path: Path, trees: dict[bool, Tree]) -> None:
    """Six real pytest runs into one evidence directory reach their seal together."""
    project = _project(tmp_path / "p")
    (project / "conftest.py").write_text(BARRIER)
    evidence, keys = project / "evidence", trees[True].keys
    command = [sys.executable, "-m", "pytest", "--release-plan", "release-plan.yaml", "-p", "no:cacheprovider",
               "--rootdir", str(project), "--release-evidence-dir", str(evidence),
               "--release-sign-key", str(keys / "release-signing-key.pem")]
    procs = [subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(6)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outputs
    manifests = [json.loads(p.read_text()) for p in evidence.glob("runs/*/manifest.json")]
    assert len(manifests) == 6
    previous = [m["previous"]["run_id"] if m["previous"] else None for m in manifests]
    assert previous.count(None) == 1 and len(set(previous)) == 6, previous  # one root, no fork
    done = _verify(evidence, "--key", str(keys / "release-signing-key.pub.pem"), "--require-signature")
    assert done.returncode == 0 and "OK: 6 run(s) verified" in done.stdout, done.stdout
    assert "6 signature(s) checked" in done.stdout


def test_a_run_that_cannot_get_the_lock_says_so_and_keeps_its_files(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    evidence = project / "evidence"
    assert _run(project, evidence).returncode == 0
    with open(evidence / "LOCK", "w") as held:
        held.write("pid 4242 on the test\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        done = _run(project, evidence, env={"PYTEST_RELEASE_LOCK_TIMEOUT": "0.5"})
    assert done.returncode == 21, done.stdout  # EVIDENCE INCOMPLETE: not sealed
    assert "evidence NOT sealed: " in done.stdout and "is still locked after 0.5 s (held by pid 4242" in done.stdout
    runs = sorted(p.name for p in (evidence / "runs").iterdir())
    assert len(runs) == 2 and (evidence / "runs" / runs[1] / "summary.json").is_file()
    after = _verify(evidence)
    assert after.returncode == 1 and f"note: run {runs[1]} has no manifest" in after.stdout
    assert f"extra: runs/{runs[1]}/summary.json" in after.stdout


# -- the envelope, read by others ---------------------------------------------------------------------


def test_envelope_verifies_with_securesystemslib_and_parses_as_in_toto(trees: dict[bool, Tree]) -> None:
    from cryptography.hazmat.primitives import serialization
    from google.protobuf import json_format
    from in_toto_attestation.predicates.test_result.v0.test_result_pb2 import TestResult
    from in_toto_attestation.v1.statement import Statement
    from in_toto_attestation.v1.statement_pb2 import Statement as StatementProto
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    tree = trees[True]
    public = serialization.load_pem_public_key(tree.public.read_bytes())
    keyid = hashlib.sha256(public.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    key = SSlibKey.from_crypto(public, keyid=keyid)
    for run in tree.runs:
        raw = json.loads((tree.evidence / "runs" / run / ENVELOPE).read_text())
        envelope = Envelope.from_dict(json.loads(json.dumps(raw)))
        assert envelope.payload_type == "application/vnd.in-toto+json"
        assert list(envelope.verify([key], 1)) == [keyid]
        proto = json_format.ParseDict(json.loads(envelope.payload), StatementProto())
        Statement.copy_from_pb(proto).validate()
        assert proto.predicate_type == PREDICATE_TYPE
        subjects = {s.name: s.digest["sha256"] for s in proto.subject}
        manifest = json.loads((tree.evidence / "runs" / run / "manifest.json").read_text())
        assert subjects.pop(f"runs/{run}/manifest.json") == _sha(tree.evidence / "runs" / run / "manifest.json")
        assert subjects.pop("app.tar.gz") == hashlib.sha256(ARTIFACT).hexdigest()  # the artifacts target's
        assert subjects == manifest["files"]
        predicate = json_format.MessageToDict(proto.predicate)
        result = json_format.ParseDict(predicate, TestResult(), ignore_unknown_fields=True)
        assert result.result == "PASSED" and not result.failed_tests and not result.warned_tests
        assert sorted(result.passed_tests) == ["release-plan.yaml::pre_release::tools::command[probe]",
                                               "release-plan.yaml::pre_release::tools::integrity[dist]"]
        assert [(c.name, c.digest["sha256"]) for c in result.configuration] == [
            ("release-plan.yaml", _sha(tree.project / "release-plan.yaml"))]
        previous = predicate[CHAIN_FIELD]["previous"]
        if run == tree.runs[0]:
            assert previous == []
        else:
            before = tree.runs[tree.runs.index(run) - 1]
            assert {p["name"]: p["digest"]["sha256"] for p in previous} == {
                f"runs/{before}/manifest.json": _sha(tree.evidence / "runs" / before / "manifest.json"),
                f"runs/{before}/{ENVELOPE}": _sha(tree.evidence / "runs" / before / ENVELOPE)}
        # The independent verifier also rejects a changed payload.
        forged = dict(raw, payload=base64.b64encode(envelope.payload.replace(b"PASSED", b"FAILED")).decode())
        with pytest.raises(VerificationError):
            Envelope.from_dict(forged).verify([key], 1)


@pytest.mark.parametrize(("gates", "result", "lists"), [
    ("""\
    - name: tools
      checks: [{command: {name: bad, argv: [python, -c, "raise SystemExit(1)"]}}]
    """, "FAILED", {"failedTests": ["release-plan.yaml::pre_release::tools::command[bad]"]}),
    ("""\
    - name: tools
      required: false
      checks: [{command: {name: flaky, argv: [python, -c, "raise SystemExit(1)"]}}]
    - name: more
      checks: [{command: {name: good, argv: [python, -c, "pass"]}}]
    """, "WARNED", {"warnedTests": ["release-plan.yaml::pre_release::tools::command[flaky]"],
                    "passedTests": ["release-plan.yaml::pre_release::more::command[good]"]}),
], ids=["failed", "warned"])
def test_result_names_the_checks_by_verdict(gates: str, result: str, lists: dict[str, list[str]], tmp_path: Path,
                                            trees: dict[bool, Tree]) -> None:
    project = _project(tmp_path / "p", plan_with(gates))
    _run(project, project / "evidence", "--release-sign-key", str(trees[True].keys / "release-signing-key.pem"))
    predicate = _statement(project / "evidence", _latest(project / "evidence"))["predicate"]
    assert predicate["result"] == result
    for field_name, names in lists.items():
        assert predicate[field_name] == names


def test_rollback_steps_are_tests_of_the_attestation(tmp_path: Path, trees: dict[bool, Tree]) -> None:
    from test_rollback import FAILING_SERVICE_GATE, rollback_plan

    project = _project(tmp_path / "p", rollback_plan(FAILING_SERVICE_GATE))
    done = _run(project, project / "evidence", "--release-sign-key",
                str(trees[True].keys / "release-signing-key.pem"))
    assert done.returncode == 20, done.stdout
    predicate = _statement(project / "evidence", _latest(project / "evidence"))["predicate"]
    assert predicate["result"] == "FAILED"
    assert "release-plan.yaml::rollback::service_rollback::stop" in predicate["passedTests"]
    assert "release-plan.yaml::post_release::service_validation::command[smoke]" in predicate["failedTests"]
    assert "release-plan.yaml::rollback::verify" in predicate["failedTests"]


# -- keys ---------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_release", "keygen", str(tmp_path / "k")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "k" / "release-signing-key.pem", tmp_path / "k" / "release-signing-key.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    from cryptography.hazmat.primitives import serialization

    der = serialization.load_pem_public_key(public.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert f"keyid:       {hashlib.sha256(der).hexdigest()}" in done.stdout
    before = private.read_bytes()
    again = subprocess.run([sys.executable, "-m", "pytest_release", "keygen", str(tmp_path / "k")],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "never replaces a key" in again.stderr
    assert private.read_bytes() == before


def test_key_from_the_environment_signs_and_never_reaches_the_evidence(tmp_path: Path,
                                                                      trees: dict[bool, Tree]) -> None:
    keys = trees[True].keys
    text = (keys / "release-signing-key.pem").read_text()
    project = _project(tmp_path / "p")
    project.joinpath("pytest.ini").write_text("[pytest]\nrelease_sign_key = ${env:RELEASE_SIGNING_KEY}\n")
    done = _run(project, project / "evidence", env={"RELEASE_SIGNING_KEY": text})
    assert done.returncode == 0 and "signed by key" in done.stdout, done.stdout
    body = text.splitlines()[1]
    assert body not in done.stdout + done.stderr
    assert not [p for p in (project / "evidence").rglob("*") if p.is_file() and body.encode() in p.read_bytes()]
    checked = _verify(project / "evidence", "--key", str(keys / "release-signing-key.pub.pem"))
    assert checked.returncode == 0 and "1 signature(s) checked" in checked.stdout
    # ... and a path to the key in the environment works too.
    done = _run(project, project / "evidence", env={"RELEASE_SIGNING_KEY": str(keys / "release-signing-key.pem")})
    assert done.returncode == 0 and "signed by key" in done.stdout, done.stdout


@pytest.mark.parametrize(("value", "env", "says"), [
    ("${env:NO_SUCH_KEY_VAR}", {}, "environment variable NO_SUCH_KEY_VAR is not set"),
    ("${env:RELEASE_SIGNING_KEY}", {"RELEASE_SIGNING_KEY": "hunter2-not-a-key"},
     "${env:RELEASE_SIGNING_KEY} holds no PEM key and names no readable file"),
    ("missing.pem", {}, "cannot read */missing.pem"),
    ("PUBLIC", {}, "not a PEM private key (that is a public key: signing needs the private one)"),
    ("RSA", {}, "not an Ed25519 key (RSA); runs are signed with Ed25519 keys*"),
], ids=["unset", "garbage", "missing", "public", "rsa"])
def test_a_bad_signing_key_stops_the_run_before_any_check(value: str, env: dict[str, str], says: str,
                                                          tmp_path: Path, trees: dict[bool, Tree]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    project = _project(tmp_path / "p")
    if value == "PUBLIC":
        value = str(trees[True].public)
    elif value == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        (project / "rsa.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                            serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
        value = "rsa.pem"
    done = _run(project, project / "evidence", "--release-sign-key", value, env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "hunter2" not in out
    assert any(fnmatch(line, f"*--release-sign-key: *{says}*")
               for line in out.splitlines()), out
    assert not (project / "evidence" / "runs").exists()


def test_verify_key_must_be_an_ed25519_public_key(trees: dict[bool, Tree], capsys: pytest.CaptureFixture[str]) -> None:
    tree = trees[True]
    code = cli(["verify", str(tree.evidence), "--key", str(tree.keys / "release-signing-key.pem")])
    assert code == 2 and "a private key; verify with the public key" in capsys.readouterr().err
