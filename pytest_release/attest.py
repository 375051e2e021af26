"""Signed runs: Ed25519 keys, DSSE envelopes, and the in-toto Statement a signed run seals.

A signed run's seal is ``runs/RUN_ID/attestation.intoto.jsonl``: one DSSE envelope (one line of
JSON) whose payload, of type ``application/vnd.in-toto+json``, is an in-toto Statement v1:

* ``subject``: the run's manifest and every evidence file it lists, by SHA-256 (names relative to
  the evidence directory), and the release's artifacts where an artifacts target's ``manifest``
  gives their digests (annotated with the target's name);
* ``predicateType`` ``https://in-toto.io/attestation/test-result/v0.1``: ``result`` (PASSED,
  WARNED or FAILED), ``configuration`` (the plan, by SHA-256), ``url`` (the CI run, on GitHub
  Actions), ``passedTests``/``warnedTests``/``failedTests`` (check node ids and rollback steps);
* the extension field :data:`CHAIN_FIELD`: this run's id and the previous run's manifest and
  envelope, by SHA-256, so the signed runs form a chain.

The crypto is the ``cryptography`` package's (imported only when a key is used); the envelope
follows the DSSE v1 protocol: the signature is over ``PAE(payloadType, payload)``. A key's id is
the SHA-256 of its DER SubjectPublicKeyInfo (``openssl pkey -pubin -outform DER | sha256sum``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .fsutil import write_new

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from .model import Plan

__all__ = ["CHAIN_FIELD", "ENVELOPE", "PAYLOAD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "KeyProblem",
           "Signer", "Verifier", "keygen", "load_signer", "load_verifier", "pae", "statement", "test_result"]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
#: The predicate's extension field (a URI, as the in-toto parsing rules ask) that chains the runs.
CHAIN_FIELD = "https://pypi.org/project/pytest-release/chain/v1"
#: A signed run's envelope, beside its manifest: runs/RUN_ID/attestation.intoto.jsonl.
ENVELOPE = "attestation.intoto.jsonl"
PRIVATE_NAME, PUBLIC_NAME = "release-signing-key.pem", "release-signing-key.pub.pem"
_ENV = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")


class KeyProblem(ValueError):
    """A key that cannot be used; the message never holds the key's text."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding: what is signed, never the payload alone."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _keyid(public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Signer:
    """A loaded private key; ``secret`` is its PEM text when it came inline (to redact)."""

    key: Ed25519PrivateKey
    keyid: str
    secret: str | None = None

    def envelope(self, payload: bytes) -> bytes:
        """A DSSE envelope over ``payload``, as one line of JSON (an ``.intoto.jsonl`` line)."""
        signature = self.key.sign(pae(PAYLOAD_TYPE, payload))
        envelope = {"payload": base64.b64encode(payload).decode("ascii"), "payloadType": PAYLOAD_TYPE,
                    "signatures": [{"keyid": self.keyid, "sig": base64.b64encode(signature).decode("ascii")}]}
        return (json.dumps(envelope, separators=(",", ":")) + "\n").encode("ascii")


@dataclass(frozen=True)
class Verifier:
    """A loaded public key, to check envelopes with."""

    key: Ed25519PublicKey
    keyid: str

    def open(self, data: bytes) -> dict[str, Any]:
        """The Statement an envelope signed with this key holds; ``ValueError`` says why not."""
        from cryptography.exceptions import InvalidSignature

        try:
            envelope = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"not a DSSE envelope (not JSON: {exc})") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
            raise ValueError("not a DSSE envelope (no signatures list)")
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType is {str(envelope.get('payloadType'))[:80]!r}, not {PAYLOAD_TYPE}")
        payload = _b64(envelope.get("payload"))
        if payload is None:
            raise ValueError("the payload is not base64")
        message = pae(PAYLOAD_TYPE, payload)
        others = []
        for signature in envelope["signatures"]:
            if not isinstance(signature, dict):
                continue
            keyid = str(signature.get("keyid") or "")
            if keyid and keyid != self.keyid:
                others.append(keyid[:16])
                continue
            sig = _b64(signature.get("sig"))
            try:
                if sig is not None:
                    self.key.verify(sig, message)
                    break
            except InvalidSignature:
                pass
        else:
            if others:
                raise ValueError(f"signed by key {', '.join(others)}, not by {self.keyid[:16]}")
            raise ValueError(f"the signature does not verify with key {self.keyid[:16]}")
        try:
            statement = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"the payload is not JSON: {exc}") from None
        if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
            raise ValueError(f"the payload is not an in-toto Statement ({STATEMENT_TYPE})")
        if statement.get("predicateType") != PREDICATE_TYPE:
            raise ValueError(f"predicateType is not {PREDICATE_TYPE}")
        return statement


def _b64(value: Any) -> bytes | None:
    """Standard or URL-safe base64, padded or not (DSSE readers accept either)."""
    if not isinstance(value, str):
        return None
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _key_text(value: str, base: Path, env: Mapping[str, str]) -> tuple[bytes, str, str | None]:
    """(the PEM bytes, where they came from, the PEM text if it is a secret to redact)."""
    match = _ENV.match(value.strip())
    if match:
        name = match.group(1)
        if name not in env:
            raise KeyProblem(f"environment variable {name} is not set (${{env:{name}}})")
        text, where = env[name], f"${{env:{name}}}"
    else:
        text, where = value, ""
    if "-----BEGIN" in text:
        return text.encode("utf-8"), where or "the key text given", text
    path = (base / text.strip()).expanduser()
    try:
        return path.read_bytes(), where or str(path), None
    except OSError as exc:
        # A value from the environment is never echoed: it may be a mangled key.
        said = f"{where} holds no PEM key and names no readable file" if where else f"cannot read {path}"
        raise KeyProblem(f"{said}: {exc.strerror or exc}") from None


def load_signer(value: str, base: Path, env: Mapping[str, str] | None = None) -> Signer:
    """The private Ed25519 key that ``value`` gives: a path (relative to ``base``), PEM text, or
    ``${env:NAME}`` holding either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data, where, secret = _key_text(value, base, os.environ if env is None else env)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyProblem(f"{where}: the key is encrypted; pytest-release reads unencrypted PKCS#8 keys "
                         "(keep the key in a CI secret instead)") from None
    except ValueError:
        hint = " (that is a public key: signing needs the private one)" if b"PUBLIC KEY" in data else ""
        raise KeyProblem(f"{where}: not a PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "another kind"
        raise KeyProblem(f"{where}: not an Ed25519 key ({kind}); runs are signed with Ed25519 keys "
                         "(python -m pytest_release keygen DIR makes one)")
    return Signer(key, _keyid(key.public_key()), secret)


def load_verifier(path: Path) -> Verifier:
    """The public Ed25519 key in a PEM file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        raise KeyProblem(f"{path}: a private key; verify with the public key (keep the private one secret)")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyProblem(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyProblem(f"{path}: not an Ed25519 public key")
    return Verifier(key, _keyid(key))


def keygen(directory: Path) -> tuple[Path, Path, str]:
    """A new Ed25519 key pair in ``directory``: the private key (mode 0600, PKCS#8 PEM) and the
    public key (PEM); (private path, public path, key id). An existing key is never replaced."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / PRIVATE_NAME, directory / PUBLIC_NAME)
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} exists already; keygen never replaces a key")
    for path, data, mode in ((paths[0], private, 0o600), (paths[1], public, 0o644)):
        write_new(path, data, mode=mode)
        os.chmod(path, mode)  # whatever the umask
    return paths[0], paths[1], _keyid(key.public_key())


def _descriptor(name: str, sha256: str, **annotations: str) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "digest": {"sha256": sha256}}
    if annotations:
        found["annotations"] = annotations
    return found


def chain_link(previous: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A manifest's ``previous`` as ResourceDescriptors: the previous manifest (and envelope)."""
    if not previous:
        return []
    run = previous["run_id"]
    link = [_descriptor(f"runs/{run}/manifest.json", previous["manifest_sha256"])]
    if previous.get("envelope_sha256"):
        link.append(_descriptor(f"runs/{run}/{ENVELOPE}", previous["envelope_sha256"]))
    return link


def statement(run_id: str, manifest: tuple[str, str], files: Mapping[str, str],
              previous: Mapping[str, Any] | None, result: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement of a sealed run: ``manifest`` is (its relative path, its SHA-256),
    ``files`` the run's evidence files, ``result`` what :func:`test_result` found."""
    subjects = [_descriptor(*manifest)] + [_descriptor(rel, digest) for rel, digest in sorted(files.items())]
    subjects += [_descriptor(name, digest, target=target) for target, name, digest in result.get("artifacts", ())]
    predicate = {key: value for key, value in result.items() if key != "artifacts"}
    predicate[CHAIN_FIELD] = {"runId": run_id, "previous": chain_link(previous)}
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE, "predicate": predicate}


# What the predicate reads of a run, as protocols: the evidence tree (which seals through this
# module) sits below the summary and the rollback that these describe, so they are not imported.


class Verdict(Protocol):
    """A check's outcome (``summary.CheckOutcome``) as the predicate reads it."""

    @property
    def nodeid(self) -> str: ...

    @property
    def verdict(self) -> str: ...


class StepVerdict(Protocol):
    """A rollback step's outcome (``rollback.runner.StepOutcome``) as the predicate reads it."""

    @property
    def key(self) -> str: ...

    @property
    def verdict(self) -> str: ...


class RunOutcome(Protocol):
    """The run's summary (``summary.RunSummary``) as the predicate reads it."""

    @property
    def outcome(self) -> str: ...


class RollbackSteps(Protocol):
    """A rollback (``rollback.runner.RollbackResult``) as the predicate reads it."""

    @property
    def steps(self) -> Sequence[StepVerdict]: ...


def test_result(plan: Plan, summary: RunOutcome, outcomes: Iterable[Verdict],
                rollback: RollbackSteps | None, rollback_prefix: str) -> dict[str, Any]:
    """The Test Result predicate's fields for a run (and ``artifacts``: the subjects an artifacts
    target's manifest gives, as (target, name, sha256))."""
    tests: dict[str, list[str]] = {"passed": [], "warning": [], "failed": []}
    for outcome in outcomes:
        if outcome.verdict in tests:
            tests[outcome.verdict].append(outcome.nodeid)
    for step in rollback.steps if rollback is not None else ():
        if step.verdict in tests:
            tests[step.verdict].append(f"{rollback_prefix}::rollback::{step.key}")
    if summary.outcome not in ("passed", "released") or tests["failed"]:
        result = "FAILED"
    else:
        result = "WARNED" if tests["warning"] else "PASSED"
    found: dict[str, Any] = {
        "result": result,
        "configuration": [_descriptor(plan.display, plan.sha256)],
        "passedTests": sorted(tests["passed"]), "warnedTests": sorted(tests["warning"]),
        "failedTests": sorted(tests["failed"]),
        "artifacts": _artifacts(plan),
    }
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repo and run:
        found["url"] = f"{server}/{repo}/actions/runs/{run}"
    return found


def _artifacts(plan: Plan) -> list[tuple[str, str, str]]:
    """(target, file, sha256) for every file an artifacts target's checksum manifest lists."""
    from .checks.integrity import parse_manifest

    found = []
    for name, target in sorted(plan.targets.items()):
        value = target.spec.get("manifest")
        if target.kind != "artifacts" or not isinstance(value, str):
            continue
        try:
            entries, _ = parse_manifest((plan.base_dir / value).read_text("utf-8"))
        except (OSError, UnicodeDecodeError):
            continue  # the integrity check reports an unreadable manifest
        found += [(name, file, digest) for digest, file, _ in entries]
    return found
