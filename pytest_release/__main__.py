"""``python -m pytest_release schema``: print the plan's JSON Schema (for editors and CI)."""

from __future__ import annotations

import argparse
import json
import sys

from .checks import BUILTIN_KINDS
from .schema import plan_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_release",
                                     description="pytest-release tools (the checks run under pytest)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="print the JSON Schema (2020-12) of a release plan")
    args = parser.parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(json.dumps(plan_schema(BUILTIN_KINDS), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
