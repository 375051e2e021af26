"""Output people can read when things go wrong: a long list of problems is shown as a bounded,
correctly counted excerpt (the record keeps the whole list), a summary is one bounded line
wherever it is repeated, and the closing counts say that rollback steps are results too."""

from __future__ import annotations

import re
import sqlite3
import struct
from pathlib import Path
from collections.abc import Callable

import pytest

from pytest_release.checks import CheckResult
from pytest_release.checks.limits import SHOWN_LINES, SUMMARY_CHARS
from pytest_release.items import excerpt, one_line
from pytest_release.records import read_lines

PlanWriter = Callable[..., Path]


def corrupt_sqlite(path: Path, problems: int) -> None:
    """A real SQLite database whose ``integrity_check`` finds exactly ``problems`` problems: pages
    past its end that the header says belong to it and that nothing uses."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items (name) VALUES (?)", [(f"item {i}",) for i in range(50)])
    conn.close()
    data = bytearray(path.read_bytes())
    page_size = struct.unpack(">H", data[16:18])[0]
    pages = len(data) // page_size
    data += bytes(page_size * problems)
    data[28:32] = struct.pack(">I", pages + problems)
    path.write_bytes(bytes(data))


PLAN = """\
release: {name: shop, version: 1.0.0}
targets:
  db: {sqlite: app.db}
strategy:
  stages: [{name: pre_release}, {name: post_release}]
  gates: [{name: validation_gate, timeout: 30}]
validation:
  gates:
    - name: data_validation
      stages: [pre_release]
      checks: [integrity]
    - name: later
      stages: [post_release]
      checks: [{command: {name: smoke, argv: ["true"]}}]
"""


@pytest.mark.parametrize("problems", [1, SHOWN_LINES, SHOWN_LINES + 1, 150])
def test_integrity_check_shows_a_counted_excerpt_and_records_every_problem(
        problems: int, pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    corrupt_sqlite(pytester.path / "app.db", problems)
    write_plan(PLAN)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    out = result.stdout.str()
    assert result.ret == 1
    noun = "problem" if problems == 1 else "problems"
    result.stdout.fnmatch_lines([f"integrity_check of app.db found {problems} {noun}; first: Page * is never used"])
    more = problems - SHOWN_LINES
    if more > 0:
        result.stdout.fnmatch_lines([f"  ... and {more} more (first {SHOWN_LINES} of {problems} shown; "
                                     "the record's measured.details has them all)"])
    else:
        assert "... and" not in out
    # The excerpt once, and the summary's "first: ..." in the failure's heading, the FAILED line and
    # the skipped stage's reason: never the whole list, never again and again.
    assert out.count("is never used") <= min(problems, SHOWN_LINES) + 3, out
    assert len(out.splitlines()) < 30 + SHOWN_LINES, out
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED  stage post_release not run")]
    assert len(skipped) == 1 and len(skipped[0]) < SUMMARY_CHARS + 200, skipped
    gates = pytester.path / "evidence" / "release" / "validation" / "gates"
    record = next(r for r in read_lines(next(gates.glob("*/pre_release/data_validation/records.jsonl")))
                  if r["check"].startswith("integrity"))
    assert record["measured"]["problems"] == problems
    if problems > SHOWN_LINES:
        details = record["measured"]["details"]
        assert len(details) == problems and all(re.fullmatch(r"Page \d+ is never used", d) for d in details)
    assert "\n" not in record["summary"]


@pytest.mark.parametrize("lines,width", [(1, 10), (3, 10), (1, 5000), (400, 80), (0, 0)])
def test_a_summary_is_one_bounded_line(lines: int, width: int) -> None:
    text = "\n".join(f"{i}:" + "x" * width for i in range(lines))
    shown = one_line(text)
    assert "\n" not in shown and len(shown) <= SUMMARY_CHARS
    if lines > 1:
        assert f"(+{lines - 1} more line(s))" in shown or shown.endswith("...")
    if lines and width < 100:
        assert shown.startswith(f"0:{'x' * width}")


@pytest.mark.parametrize("count", [0, 1, SHOWN_LINES, SHOWN_LINES + 1, 1000])
def test_the_terminal_excerpt_of_details_is_bounded_and_counted(count: int) -> None:
    result = CheckResult(False, "s", details=[f"problem {i} " + "y" * 2000 for i in range(count)])
    shown = excerpt(result)
    assert len(shown) == min(count, SHOWN_LINES) + (count > SHOWN_LINES)
    assert all(len(line) <= 2 * SUMMARY_CHARS for line in shown)
    if count > SHOWN_LINES:
        assert shown[-1].startswith(f"... and {count - SHOWN_LINES} more (first {SHOWN_LINES} of {count}")


ROLLBACK_PLAN = """\
release: {{name: shop, version: 2.0.0}}
targets: {{}}
strategy:
  stages: [{{name: pre_release}}, {{name: post_release}}]
  gates: [{{name: validation_gate, timeout: 30}}, {{name: rollback_gate, timeout: 30}}]
rollback:
  triggers: [{{name: validation_failure, action: rollback, timeout: 60}}]
  procedures:
    - name: service_rollback
      steps: [{steps}]
      actions:
{actions}
validation:
  gates:
    - name: service_validation
      stages: [post_release]
      checks:
        - {{command: {{name: smoke, argv: [python, -c, "raise SystemExit(3)"]}}}}
        - {{command: {{name: fine, argv: ["true"]}}}}
"""


@pytest.mark.parametrize("steps", [1, 3])
def test_the_summary_says_rollback_steps_are_results_and_the_counts_add_up(
        steps: int, pytester: pytest.Pytester, write_plan: PlanWriter) -> None:
    names = [f"s{i}" for i in range(steps)]
    actions = "\n".join(f"        {n}: {{command: {{argv: [\"true\"]}}}}" for n in names)
    write_plan(ROLLBACK_PLAN.format(steps=", ".join(names), actions=actions))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    out = result.stdout.str()
    collected = int(re.search(r"collected (\d+) items", out).group(1))  # type: ignore[union-attr]
    reported = steps + 1  # and the final verify
    result.stdout.fnmatch_lines([f"{reported} rollback step(s) are reported as results beside the {collected} "
                                 "checks: pytest's counts below add both"])
    final = next(line for line in reversed(out.splitlines()) if re.match(r"^=+ .* in [0-9.]+s", line))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (failed|passed|skipped|warned|error)", final)}
    assert sum(counts.values()) == collected + reported, (counts, final)
