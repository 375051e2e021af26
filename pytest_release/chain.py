"""``verify``: the evidence tree checked whole, from its manifests alone.

Every manifest is read (one that does not parse is a problem, never a traceback) and the chain
they form is rebuilt: one root, one head, no fork, every link's hash right, ``LATEST`` naming the
head, every file as its run sealed it, and no file or run folder that no manifest lists. With a
public key, every signed run's envelope is checked too (see ``attest``), and the runs from the
first signed one to the head must all be signed. Without one, what only a signature can show is
said plainly ("unsigned: cannot tell ...").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .evidence import HISTORY, INDEX, LATEST, LOCK, MANIFEST, RUN_ID, RUNS, SealError, read_manifest, seal_lock, sha256_path

if TYPE_CHECKING:
    from .attest import Verifier

__all__ = ["Verification", "verify_tree"]

#: Files that belong to the tree but to no run: the history store (every run changes it, so no
#: manifest can list it; what each run added is sealed in its analytics records) and the lock.
OUTSIDE = (LATEST, LOCK, HISTORY, HISTORY + "-journal", HISTORY + "-wal", HISTORY + "-shm", INDEX)


@dataclass
class _Run:
    run_id: str
    manifest: dict[str, Any]
    digest: str  # the manifest's SHA-256
    envelope: Path

    @property
    def previous(self) -> str | None:
        link = self.manifest.get("previous")
        return link["run_id"] if link else None


@dataclass
class Verification:
    """What ``verify`` found: problem lines (each fails it), notes, and the chain's head."""

    runs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    head: tuple[str, str] | None = None  # (run id, manifest sha256)
    signed: int = 0  # runs whose signature was checked and holds
    #: Each listed file's SHA-256 as found (``None``: missing), hashed once for both checks.
    found: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> Iterator[str]:
        yield from self.problems
        yield from self.notes


def verify_tree(root: Path, run_id: str | None = None, *, key: Verifier | None = None,
                head: str | None = None, require_signature: bool = False) -> Verification:
    """Check the evidence tree at ``root`` (``run_id``: that run's files, link and signature only)."""
    try:
        with seal_lock(root, shared=True, timeout=30):  # never between a run's manifest and LATEST
            return _verify(root, run_id, key, head, require_signature)
    except SealError as exc:
        return Verification(problems=[f"lock: {exc}"])


def _verify(root: Path, only: str | None, key: Verifier | None, head: str | None,
            require_signature: bool) -> Verification:
    from .attest import ENVELOPE

    result = Verification()
    runs: dict[str, _Run] = {}
    unreadable: dict[str, str] = {}
    folders = sorted(p for p in (root / RUNS).iterdir() if p.is_dir()) if (root / RUNS).is_dir() else []
    for folder in folders:
        path = folder / MANIFEST
        if not path.is_file():
            continue
        try:
            manifest, data = read_manifest(path)
        except OSError as exc:
            unreadable[folder.name] = f"cannot read it: {exc.strerror or exc}"
        except ValueError as exc:
            unreadable[folder.name] = str(exc)
        else:
            runs[folder.name] = _Run(folder.name, manifest, hashlib.sha256(data).hexdigest(), folder / ENVELOPE)
    if only is not None:
        if only in unreadable:
            result.problems.append(f"unreadable: {RUNS}/{only}/{MANIFEST}: {unreadable[only]}")
        elif only not in runs:
            result.problems.append(f"missing: {RUNS}/{only}/{MANIFEST}")
        else:
            result.runs.append(only)
            _check_files(root, runs[only], result)
            _check_link(root, runs[only], runs, unreadable, result)
            if key is not None:
                why = ("--require-signature asks for one" if require_signature else
                       "its manifest says it was signed" if runs[only].manifest.get("signed_by") else "")
                _check_signature(root, runs[only], key, result, why)
        return result

    result.runs = sorted(runs)
    for run in runs.values():
        _check_files(root, run, result)
        _check_link(root, run, runs, unreadable, result)
        if run.manifest.get("latest_found") is not None:
            result.problems.append(
                f"LATEST: when run {run.run_id} sealed, LATEST held {str(run.manifest['latest_found'])[:80]!r}, not "
                "the head of the chain: it was changed outside pytest-release (or a run died while sealing)")
    order = _chain(runs, result, bool(unreadable))
    _check_latest(root, runs, order, result)
    _check_unlisted(root, runs, unreadable, result)
    _check_signatures(root, runs, order, key, require_signature, result)
    if order and len(order) == len(runs) and not any(p.startswith(("fork:", "chain:")) for p in result.problems):
        last = runs[order[-1]]
        result.head = (last.run_id, last.digest)
    if head is not None:
        anchor = head.lower()
        match = next((r for r in runs.values() if anchor in (r.digest, _sha(r.envelope))), None)
        if match is None:
            result.problems.append(f"head: no run in the chain was sealed with sha256 {anchor}: that run (and "
                                   "perhaps others after it) was deleted or rewritten")
        elif match.run_id not in order:
            result.problems.append(f"head: run {match.run_id} (sha256 {anchor[:16]}...) is not on the chain")
    elif runs:
        result.notes.append("note: no --head given: nothing in the tree can show whether its latest runs were "
                            "deleted altogether; keep the head's digest (below) elsewhere and pass it with --head")
    return result


def _sha(path: Path) -> str | None:
    try:
        return sha256_path(path)
    except OSError:
        return None


def _check_files(root: Path, run: _Run, result: Verification) -> None:
    lines = run.manifest.get("lines")
    lines = lines if isinstance(lines, dict) else {}
    for rel, want in run.manifest["files"].items():
        path = root / rel
        got = result.found[rel] = _sha(path) if path.is_file() else None
        if got is None:
            result.problems.append(f"missing: {rel}")
        elif got != want:
            sealed = lines.get(rel)
            result.problems.append(f"changed: {rel}{_unparsable(path, sealed if isinstance(sealed, int) else None)}")


def _unparsable(path: Path, sealed_lines: int | None = None) -> str:
    """What is wrong with a changed record file, beyond its hash: `` (it no longer parses: ...)``
    for a JSON file that is not JSON any more; for a JSON Lines file, how many lines it was sealed
    with and has now, and the first line that no longer parses."""
    if path.suffix not in (".json", ".jsonl"):
        return ""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f" (it cannot be read: {exc.strerror or exc})"
    if path.suffix == ".json":
        try:
            json.loads(data)
        except ValueError as exc:
            return f" (it no longer parses: {str(exc)[:80]})"
        return ""
    found = data.split(b"\n")
    if found and found[-1] == b"":
        found.pop()
    said = []
    if sealed_lines is not None and sealed_lines != len(found):
        said.append(f"sealed with {sealed_lines} line(s), it has {len(found)}")
    for number, line in enumerate(found, 1):
        try:
            json.loads(line)
        except ValueError as exc:
            said.append(f"line {number} no longer parses: {str(exc)[:80]}")
            break
    return f" ({'; '.join(said)})" if said else ""


def _check_link(root: Path, run: _Run, runs: dict[str, _Run], unreadable: dict[str, str],
                result: Verification) -> None:
    from .attest import ENVELOPE

    link = run.manifest.get("previous")
    if not link:
        return
    previous = link["run_id"]
    if previous in unreadable:
        result.problems.append(f"broken chain: {run.run_id}: previous manifest {previous} does not parse")
    elif previous not in runs:
        result.problems.append(f"broken chain: {run.run_id}: previous manifest {previous} is missing")
    elif runs[previous].digest != link["manifest_sha256"]:
        result.problems.append(f"broken chain: {run.run_id}: previous manifest {previous} was changed "
                               f"(listed in {RUNS}/{run.run_id}/{MANIFEST})")
        result.problems.append(f"changed: {RUNS}/{previous}/{MANIFEST}")
    want = link.get("envelope_sha256")
    if want and previous in runs:
        got = _sha(root / RUNS / previous / ENVELOPE)
        if got != want:
            state = "is missing" if got is None else "was changed"
            result.problems.append(f"broken chain: {run.run_id}: previous attestation {RUNS}/{previous}/{ENVELOPE} "
                                   f"{state}")


def _chain(runs: dict[str, _Run], result: Verification, partial: bool) -> list[str]:
    """The runs from the root to the head, when they form one chain; each fault as a problem
    (``partial``: some manifests do not parse, so heads and roots cannot be counted)."""
    followers: dict[str, list[str]] = {}
    for run in runs.values():
        if run.previous is not None:
            followers.setdefault(run.previous, []).append(run.run_id)
    for previous, after in sorted(followers.items()):
        if len(after) > 1:
            result.problems.append(f"fork: runs {', '.join(sorted(after))} all follow run {previous}")
    roots = sorted(r.run_id for r in runs.values() if r.previous is None)
    heads = sorted(r for r in runs if r not in followers)
    if partial:
        return []
    if len(roots) > 1:
        result.problems.append(f"chain: {len(roots)} roots (runs that follow no earlier run): {', '.join(roots)}")
    if len(heads) > 1:
        result.problems.append(f"chain: {len(heads)} heads (runs that no later run follows): {', '.join(heads)}")
    if runs and not heads:
        result.problems.append("chain: no head: the runs' links form a cycle")
    if len(heads) != 1:
        return []
    order, seen, current = [], set(), heads[0]
    while current in runs and current not in seen:
        seen.add(current)
        order.append(current)
        current = runs[current].previous  # type: ignore[assignment]
    order.reverse()
    stray = sorted(set(runs) - seen)
    if stray and len(roots) <= 1 and not any(len(a) > 1 for a in followers.values()):
        result.problems.append(f"chain: runs {', '.join(stray)} are not on the chain that ends in {heads[0]}")
    return order


def _check_latest(root: Path, runs: dict[str, _Run], order: list[str], result: Verification) -> None:
    path = root / LATEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if runs:
            head = f" (the head is {order[-1]})" if order else ""
            result.problems.append(f"LATEST: missing{head}")
        return
    text = raw[:200].decode("utf-8", "replace").strip()
    if not RUN_ID.fullmatch(text):
        result.problems.append(f"LATEST: garbled: {text[:80]!r} is not a run id")
    elif text not in runs:
        result.problems.append(f"LATEST: names run {text}, which has no manifest (deleted, or never sealed)")
    elif order and text != order[-1]:
        behind = len(order) - 1 - order.index(text) if text in order else None
        where = f", {behind} run(s) behind it" if behind else ""
        result.problems.append(f"LATEST: names run {text}, but the head of the chain is {order[-1]}{where}")


def _check_unlisted(root: Path, runs: dict[str, _Run], unreadable: dict[str, str], result: Verification) -> None:
    """Every file and run folder must be listed by a manifest (``.tmp`` files included)."""
    from .attest import ENVELOPE

    listed: set[str] = set()
    adopted: set[str] = set()
    for run in runs.values():
        listed.update(run.manifest["files"])
        listed.add(f"{RUNS}/{run.run_id}/{MANIFEST}")
        listed.add(f"{RUNS}/{run.run_id}/{ENVELOPE}")
        metadata = run.manifest.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("adopted"), dict):
            adopted.update(metadata["adopted"])
    hidden: dict[str, int] = {}
    unsealed: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if not p.is_dir()):
        rel = path.relative_to(root).as_posix()
        if rel in OUTSIDE or rel in listed:
            continue
        run_id = _run_of(rel)
        if run_id in unreadable:
            hidden[run_id] = hidden.get(run_id, 0) + 1
            continue
        if run_id and run_id not in runs:
            unsealed.add(run_id)
        result.problems.append(f"extra: {rel}")
    for run_id, reason in sorted(unreadable.items()):
        count = hidden.get(run_id, 0)
        result.problems.append(f"unreadable: {RUNS}/{run_id}/{MANIFEST}: {reason}"
                               + (f"; its run's {count} other file(s) cannot be checked" if count else ""))
    for folder in sorted((root / RUNS).iterdir()) if (root / RUNS).is_dir() else []:
        name = folder.name
        if folder.is_dir() and name not in runs and name not in unreadable and name not in adopted:
            if not any(folder.iterdir()):
                result.problems.append(f"extra: {RUNS}/{name}/ (a run folder that no manifest lists)")
            unsealed.add(name)
    for run_id in sorted(unsealed - adopted):
        result.notes.append(f"note: run {run_id} has no manifest (it was interrupted before it could seal its "
                            "evidence, or its files were added by hand)")


def _run_of(rel: str) -> str | None:
    return next((part for part in rel.split("/") if RUN_ID.fullmatch(part)), None)


def _check_signatures(root: Path, runs: dict[str, _Run], order: list[str], key: Verifier | None,
                      require_signature: bool, result: Verification) -> None:
    signed = [r for r in runs.values() if r.manifest.get("signed_by") or r.envelope.exists()]
    for run in signed:
        if not run.envelope.is_file():
            result.problems.append(f"missing: {RUNS}/{run.run_id}/{run.envelope.name} (the run was signed)")
    if key is None:
        why = "no signature was checked: pass --key PUBLIC.pem" if signed else "the runs are not signed"
        if signed:
            result.notes.append(f"note: {len(signed)} run(s) carry a signature that was not checked")
        if runs:
            result.notes += [
                "unsigned: cannot tell whether a run's files were rewritten together with its manifest and "
                f"the manifests after it ({why})",
                "unsigned: cannot tell whether a run was forged and chained after the latest real one",
                "unsigned evidence proves that the runs form one unbroken chain and that every file is as its "
                "run sealed it: it catches accidents and careless edits, not someone who can write this "
                "directory; sign the runs (--release-sign-key) and verify with --key for that"]
        return
    position = {run_id: index for index, run_id in enumerate(order)}
    signed_ids = {r.run_id for r in signed}
    first = next((i for i, run_id in enumerate(order) if run_id in signed_ids), None)
    for run_id in sorted(runs):
        index = position.get(run_id)
        if require_signature:
            why = "--require-signature asks for one"
        elif index is not None and first is not None and index >= first:
            why = f"every run from {order[first]}, the first signed one, must be signed"
        elif index is not None and index == len(order) - 1:
            why = "the head must be signed when verifying with --key"
        else:
            why = ""
        _check_signature(root, runs[run_id], key, result, why)
    if first and not require_signature:
        result.notes.append(f"note: the {first} run(s) before {order[first]}, the first signed run, are unsigned; "
                            "the signed chain link of that run binds them as they are")


def _check_signature(root: Path, run: _Run, key: Verifier, result: Verification, required: str) -> None:
    """One run's envelope: signed with ``key``, over this manifest, this chain link, these files
    (``required``: why the run must be signed, empty if it need not be)."""
    from .attest import CHAIN_FIELD, chain_link

    where = f"{RUNS}/{run.run_id}/{run.envelope.name}"
    try:
        data = run.envelope.read_bytes()
    except FileNotFoundError:
        if required:
            result.problems.append(f"unsigned: run {run.run_id} has no attestation ({where}): {required}")
        return
    try:
        statement = key.open(data)
    except ValueError as exc:
        result.problems.append(f"signature: {where}: {exc}")
        return
    before = len(result.problems)
    subjects = {s.get("name"): (s.get("digest") or {}).get("sha256") for s in statement.get("subject") or []
                if isinstance(s, dict) and not s.get("annotations")}
    manifest_rel = f"{RUNS}/{run.run_id}/{MANIFEST}"
    if subjects.get(manifest_rel) != run.digest:
        result.problems.append(f"signature: {manifest_rel} is not the manifest that was signed "
                               "(it was rewritten after the run sealed)")
    for rel, want in sorted(run.manifest["files"].items()):
        got = result.found[rel] if rel in result.found else _sha(root / rel)
        if rel not in subjects:
            result.problems.append(f"signature: {rel} is not among the files run {run.run_id} signed")
        elif subjects[rel] != want or got not in (None, subjects[rel]):
            result.problems.append(f"signature: {rel} was changed after run {run.run_id} signed it")
    predicate = statement.get("predicate")
    chain = predicate.get(CHAIN_FIELD) if isinstance(predicate, dict) else None
    chain = chain if isinstance(chain, dict) else {}
    if chain.get("runId") != run.run_id or chain.get("previous") != chain_link(run.manifest.get("previous")):
        result.problems.append(f"signature: run {run.run_id}: the signed chain link differs from its manifest's")
    if len(result.problems) == before:
        result.signed += 1
