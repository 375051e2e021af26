"""Command-line tools beside the pytest plugin.

``python -m pytest_release schema`` prints the plan's JSON Schema (``--records``: the evidence
records' schema); ``python -m pytest_release verify EVIDENCE_DIR`` checks the evidence against the
manifests its runs sealed, and exits 1 listing every changed, missing or extra file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checks import BUILTIN_KINDS
from .evidence import verify_tree
from .records import RECORD_SCHEMA
from .schema import plan_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_release",
                                     description="pytest-release tools (the checks run under pytest)")
    commands = parser.add_subparsers(dest="command", required=True)
    schema = commands.add_parser("schema", help="print the JSON Schema (2020-12) of a release plan")
    schema.add_argument("--records", action="store_true", help="print the schema of evidence records instead")
    verify = commands.add_parser("verify", help="check an evidence directory against its manifests")
    verify.add_argument("evidence_dir", type=Path)
    verify.add_argument("--run", metavar="RUN_ID", help="check this run only (default: every run)")
    args = parser.parse_args(argv)
    if args.command == "schema":
        document = RECORD_SCHEMA if args.records else plan_schema(BUILTIN_KINDS)
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return 0
    if not (args.evidence_dir / "runs").is_dir():
        print(f"{args.evidence_dir}: not an evidence directory (no runs/ folder)", file=sys.stderr)
        return 2
    result = verify_tree(args.evidence_dir, args.run)
    for line in result.lines():
        print(line)
    runs = ", ".join(result.runs) or "none"
    if result.ok:
        print(f"OK: {len(result.runs)} run(s) verified ({runs})")
        return 0
    count = len(result.changed) + len(result.missing) + len(result.extra) + len(result.broken_chain)
    print(f"FAILED: {count} problem(s) in {args.evidence_dir} (runs checked: {runs})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
