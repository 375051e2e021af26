"""Command-line tools beside the pytest plugin.

``python -m pytest_release schema`` prints the plan's JSON Schema (``--records``: the evidence
records' schema); ``python -m pytest_release verify EVIDENCE_DIR`` checks the evidence tree whole
(every file against its run's manifest, the chain of runs, ``LATEST``, and with ``--key`` every
signature) and exits 1 listing every problem; ``python -m pytest_release keygen DIR`` writes an
Ed25519 key pair to sign runs with; ``python -m pytest_release index EVIDENCE_DIR`` writes the
history page, ``EVIDENCE_DIR/index.html``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .checks import BUILTIN_KINDS
from .notify import NOTIFICATION_SCHEMA
from .records import RECORD_SCHEMA
from .schema import plan_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_release",
                                     description="pytest-release tools (the checks run under pytest)")
    commands = parser.add_subparsers(dest="command", required=True)
    schema = commands.add_parser("schema", help="print the JSON Schema (2020-12) of a release plan")
    what = schema.add_mutually_exclusive_group()
    what.add_argument("--records", action="store_true", help="print the schema of evidence records instead")
    what.add_argument("--notifications", action="store_true",
                      help="print the schema of a notification (notify, format: json) instead")
    index = commands.add_parser("index", help="write the history page EVIDENCE_DIR/index.html (every sealed run, "
                                              "delivery metrics)")
    index.add_argument("evidence_dir", type=Path)
    verify = commands.add_parser("verify", help="check an evidence directory whole: files, chain, signatures")
    verify.add_argument("evidence_dir", type=Path)
    verify.add_argument("--run", metavar="RUN_ID", help="check this run only (default: every run, and the chain)")
    verify.add_argument("--key", metavar="PUBLIC.pem", type=Path,
                        help="check every signed run's attestation with this Ed25519 public key")
    verify.add_argument("--head", metavar="SHA256",
                        help="the head's manifest digest kept from an earlier verify or run: fail if that run "
                             "is no longer in the chain (the latest runs were deleted or rewritten)")
    verify.add_argument("--require-signature", action="store_true",
                        help="fail unless every run is signed (needs --key)")
    keygen = commands.add_parser("keygen", help="write an Ed25519 key pair to sign runs with")
    keygen.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command == "schema":
        document = (RECORD_SCHEMA if args.records else NOTIFICATION_SCHEMA if args.notifications
                    else plan_schema(BUILTIN_KINDS))
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return 0
    if args.command == "keygen":
        return _keygen(args.directory)
    if args.command == "index":
        return _index(args.evidence_dir)
    return _verify(args)


def _index(root: Path) -> int:
    from .history_page import load_runs, write_index

    if not (root / "runs").is_dir():
        print(f"index: {root}: not an evidence directory (no runs/ folder)", file=sys.stderr)
        return 2
    path = write_index(root)
    print(f"{path}: {len(load_runs(root))} sealed run(s)")
    return 0


def _keygen(directory: Path) -> int:
    from .attest import keygen

    try:
        private, public, keyid = keygen(directory)
    except (FileExistsError, OSError) as exc:
        print(f"keygen: {exc}", file=sys.stderr)
        return 2
    print(f"private key: {private} (mode 0600: keep it secret, e.g. as the CI secret RELEASE_SIGNING_KEY)")
    print(f"public key:  {public} (for verify --key)")
    print(f"keyid:       {keyid}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .attest import KeyProblem, load_verifier
    from .chain import verify_tree

    def usage(message: str) -> int:
        print(f"verify: {message}", file=sys.stderr)
        return 2

    if not (args.evidence_dir / "runs").is_dir():
        return usage(f"{args.evidence_dir}: not an evidence directory (no runs/ folder)")
    if args.require_signature and args.key is None:
        return usage("--require-signature needs --key PUBLIC.pem")
    if args.head is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.head.strip()):
        return usage(f"--head {args.head[:80]!r}: not a SHA-256 (64 hex digits)")
    key = None
    if args.key is not None:
        try:
            key = load_verifier(args.key)
        except KeyProblem as exc:
            return usage(f"--key: {exc}")
    result = verify_tree(args.evidence_dir, args.run, key=key, head=args.head and args.head.strip(),
                         require_signature=args.require_signature)
    for line in result.lines():
        print(line)
    if result.head is not None:
        print(f"head: run {result.head[0]}, manifest sha256 {result.head[1]}")
    runs = ", ".join(result.runs if len(result.runs) < 5 else [result.runs[0], "...", result.runs[-1]]) or "none"
    if not result.ok:
        print(f"FAILED: {len(result.problems)} problem(s) in {args.evidence_dir} (runs checked: {runs})")
        return 1
    if key is not None:
        signed = f"{result.signed} signature(s) checked with key {key.keyid[:16]}"
    else:
        signed = "unsigned: signatures not checked"
    print(f"OK: {len(result.runs)} run(s) verified ({runs}); {signed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
