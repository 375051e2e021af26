"""The comparison vocabulary: generated cases (operators x values x types) against an oracle written
independently, field paths, plan errors, and the checks that use it against a real server and
real SQLite files in real pytest runs."""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.parse
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from helpers import plan_with, run_check
from pytest_release.compare import MISSING, bounded, describe, judge, lookup, parse_path
from pytest_release.records import read_lines

# -- generated cases against an oracle ------------------------------------------------------------

VALUES: dict[str, Any] = {
    "int": 5, "zero": 0, "negative": -3, "float": 5.5, "decimal": Decimal("5"), "big": 10 ** 30,
    "string": "abc", "digits": "5", "empty-string": "", "true": True, "false": False, "null": None,
    "list": [1, 2, 3], "empty-list": [], "object": {"a": 1}, "empty-object": {}, "version": "1.4.2",
    "prerelease": "2.0rc1", "missing": MISSING,
}

EXPECTATIONS: list[Any] = [
    {">=": 5}, {"<=": 5}, {">": 5}, {"<": 5}, {">=": 5.5}, {"==": 5}, {"!=": 5}, {"==": "abc"},
    {"==": {"a": 1}}, {"between": [0, 5]}, {"between": [-5, -1]}, {"in": [5, "abc"]}, {"exists": True},
    {"exists": False}, {"empty": True}, {"empty": False}, {"length": 3}, {"length": {">=": 1}},
    {"length": {"between": [0, 0]}}, {"matches": "^a"}, {"matches": r"^\d+$"}, {"version": ">=1.0,<2"},
    {"version": ">=2.0rc1"}, {">=": 0, "<": 10}, 5, "abc", True, None, [1, 2, 3], 0,
]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _json(value: Any) -> str:
    return json.dumps(int(value) if isinstance(value, Decimal) else value, sort_keys=True)


def _version(value: Any, spec: str) -> bool:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return False
    try:
        return SpecifierSet(spec).contains(Version(str(value)), prereleases=True)
    except InvalidVersion:
        return False


def oracle(value: Any, expected: Any) -> bool:
    """What docs/checks.md says each comparison means, written without the module under test."""
    if not isinstance(expected, dict):
        return value is not MISSING and _json(value) == _json(expected)
    if value is MISSING:
        return expected.get("exists") is False
    results = []
    for op, operand in expected.items():
        if op in (">=", "<=", ">", "<"):
            results.append(_number(value) and {">=": value >= operand, "<=": value <= operand,
                                               ">": value > operand, "<": value < operand}[op])
        elif op == "between":
            results.append(_number(value) and operand[0] <= value <= operand[1])
        elif op == "==":
            results.append(_json(value) == _json(operand))
        elif op == "!=":
            results.append(_json(value) != _json(operand))
        elif op == "in":
            results.append(any(_json(value) == _json(o) for o in operand))
        elif op == "exists":
            results.append(operand is True)
        elif op == "empty":
            results.append(isinstance(value, (str, list, dict, type(None)))
                           and (value in (None, "", [], {})) == operand)
        elif op == "length":
            results.append(isinstance(value, (str, list, dict)) and oracle(len(value), operand))
        elif op == "matches":
            results.append(isinstance(value, str) and re.search(operand, value) is not None)
        elif op == "version":
            results.append(_version(value, operand))
    return all(results)


@pytest.mark.parametrize("expected", EXPECTATIONS, ids=[json.dumps(e) for e in EXPECTATIONS])
@pytest.mark.parametrize("name", list(VALUES))
def test_every_comparison_against_every_type(name: str, expected: Any) -> None:
    value = VALUES[name]
    problem = judge(value, expected)
    assert (problem is None) == oracle(value, expected), problem
    if problem is not None:
        assert len(problem) < 300 and "\n" not in problem
        assert ("is missing" in problem) == (value is MISSING)
        assert "expected" in problem or "cannot be" in problem


NUMERIC = [{">=": 5}, {"<": 1}, {"between": [1, 2]}, {">": 0, "<": 10}]


@pytest.mark.parametrize("expected", NUMERIC, ids=[json.dumps(e) for e in NUMERIC])
@pytest.mark.parametrize("value", ["5000", "", True, None, [1], {"n": 1}],
                         ids=["numeric-string", "empty-string", "boolean", "null", "list", "object"])
def test_a_number_comparison_of_something_else_fails_and_says_what_it_is(value: Any, expected: Any) -> None:
    problem = judge(value, expected)
    assert problem is not None and "not a number" in problem
    assert problem.startswith(f"is {json.dumps(value) if not isinstance(value, str) else repr(value)} (")
    assert f"expected {describe(expected)}" in problem


@pytest.mark.parametrize("operand", ["abc", None, [1], {"x": 1}, [3, 1, 2], 1.5, True],
                         ids=["string", "null", "list", "object", "triple", "float", "boolean"])
@pytest.mark.parametrize("op", [">=", "<", "between", "in", "length", "matches", "version", "empty", "nope"])
@pytest.mark.parametrize("name", ["int", "string", "list", "null", "decimal", "version"])
def test_judging_never_raises_whatever_the_operand(name: str, op: str, operand: Any) -> None:
    """A plan the schema refused never runs, but a check run directly (or by a plugin) must still
    answer with a verdict, not a traceback."""
    problem = judge(VALUES[name], {op: operand})
    assert problem is None or isinstance(problem, str)


def test_messages_are_bounded_whatever_the_value() -> None:
    huge = "x" * 100_000
    problem = judge(huge, {"matches": "^y"})
    assert problem is not None and len(problem) < 200 and problem.endswith("expected matching '^y'")
    assert judge(list(range(10_000)), {"length": {"<=": 3}}) == "has length 10000, expected of length <= 3"
    kept = bounded({"rows": [{"id": i, "name": "n" * 500} for i in range(100)]})
    assert len(kept["rows"]) == 11 and kept["rows"][-1] == "... 90 more"
    assert len(kept["rows"][0]["name"]) == 200 and len(json.dumps(kept)) < 5000


def test_equality_is_json_equality() -> None:
    assert judge(1, True) is not None and judge(True, 1) is not None and judge(0, False) is not None
    assert judge(1, 1.0) is None and judge(Decimal("2.50"), 2.5) is None
    assert judge({"a": [1, True]}, {"==": {"a": [1, True]}}) is None
    assert judge({"a": [1, 1]}, {"==": {"a": [1, True]}}) is not None
    assert judge("1", 1) == "is '1', expected 1"


@pytest.mark.parametrize(("path", "parts"), [
    ("status", ["status"]), ("checks.db", ["checks", "db"]), ("rows.4.id", ["rows", "4", "id"]),
    ("", []), (r"a\.b.c", ["a.b", "c"]), (r"a\\.b", ["a\\", "b"]), ("a..b", ["a", "", "b"]),
    (r"x\y", [r"x\y"]), ("0", ["0"]),
])
def test_field_paths(path: str, parts: list[str]) -> None:
    assert parse_path(path) == parts


DOC = {"rows": [{"id": 1}, {"id": 2, "tags": []}], "a.b": {"c": 3}, "7": "seven", "n": None}


@pytest.mark.parametrize(("path", "value"), [
    ("rows.0.id", 1), ("rows.1.id", 2), ("rows.-1.id", 2), ("rows.-2.id", 1), ("rows.2.id", MISSING),
    ("rows.-3", MISSING), ("rows.x", MISSING), ("rows.1.tags", []), (r"a\.b.c", 3), ("a.b.c", MISSING),
    ("7", "seven"), ("n", None), ("n.x", MISSING), ("", DOC), ("rows.0.id.deeper", MISSING),
])
def test_lookup(path: str, value: Any) -> None:
    assert lookup(DOC, path) == value if value is not MISSING else lookup(DOC, path) is MISSING


# -- a real server ------------------------------------------------------------------------------

SERVED = {"status": "ok", "version": "1.4.2", "name": "shop-eu-1", "rows": [{"n": 5200, "id": 7}],
          "count": 5200, "tags": [], "ratio": 0.25, "flag": True, "meta": {"region": "eu", "a.b": 1}}

CASES = [
    ({"status": "ok", "count": {">=": 5000}, "rows": {"length": {">=": 1}}, "rows.0.n": {">": 5000},
      "version": {"version": ">=1.0,<2"}, "name": {"matches": "^shop-"}, "meta.region": {"in": ["eu", "us"]},
      "ratio": {"between": [0, 0.5]}, "tags": {"empty": True}, "rows.0.id": {"exists": True},
      "gone": {"exists": False}, r"meta.a\.b": 1, "flag": {"!=": False}, "meta": {"==": {"region": "eu", "a.b": 1}}},
     None),
    ({"count": {">=": 6000}}, "JSON field 'count' is 5200, expected >= 6000"),
    ({"status": {">=": 1}}, "JSON field 'status' is 'ok' (a string, not a number), expected >= 1"),
    ({"rows": {"length": {">=": 2}}}, "JSON field 'rows' has length 1, expected of length >= 2"),
    ({"version": {"version": ">=2"}}, "JSON field 'version' is '1.4.2', expected a version within >=2"),
    ({"name": {"matches": "^web"}}, "JSON field 'name' is 'shop-eu-1', expected matching '^web'"),
    ({"rows.3.n": {">=": 1}}, "JSON field 'rows.3.n' is missing, expected >= 1"),
    ({"tags": {"empty": False}}, "JSON field 'tags' is [], expected not empty"),
    ({"flag": 1}, "JSON field 'flag' is true, expected 1"),
]


@pytest.mark.parametrize(("fields", "message"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_health_json_against_a_real_server(http_url: str, tmp_path: Path, fields: dict[str, Any],
                                           message: str | None) -> None:
    path = "/echo?json=" + urllib.parse.quote(json.dumps(SERVED))
    result = run_check("health", {"url": http_url}, tmp_path, path=path, json=fields)
    assert result.passed == (message is None), result.summary
    if message is not None:
        assert result.summary.endswith(message)
        assert f"json={fields}" not in result.summary  # the expectation is described, not dumped
    for field in fields:  # what each field held is measured, passing or not
        if lookup(SERVED, field) is not MISSING:
            assert f"json.{field}" in result.measured


def test_a_list_body_and_the_whole_document(http_url: str, tmp_path: Path) -> None:
    path = "/echo?json=" + urllib.parse.quote(json.dumps([{"n": 5001}, {"n": 3}]))
    result = run_check("health", {"url": http_url}, tmp_path, path=path,
                       json={"0.n": {">=": 5000}, "": {"length": 2}, "-1.n": {"<": 5}})
    assert result.passed, result.summary
    assert result.measured["json.0.n"] == 5001 and result.measured["json."] == [{"n": 5001}, {"n": 3}]


def test_compatibility_json_beside_the_version(http_url: str, tmp_path: Path) -> None:
    ok = run_check("compatibility", {"url": http_url}, tmp_path, version=">=1.2,<2",
                   json={"build.version": {"version": "~=1.2"}})
    assert ok.passed, ok.summary
    assert ok.measured == {"version": "1.2.3", "json.build.version": "1.2.3"}
    bad = run_check("compatibility", {"url": http_url}, tmp_path, version=">=2",
                    json={"build.version": {"matches": "^9"}})
    assert not bad.passed
    assert bad.summary.endswith("reports version 1.2.3, outside >=2 (+1 more)")
    assert bad.details[1] == "JSON field 'build.version' is '1.2.3', expected matching '^9'"


def test_a_plan_with_comparisons_passes_and_fails_with_measured_against_expected(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str) -> None:
    doc = {"status": "ok", "count": 5200, "rows": [{"id": 7}], "name": "shop", "version": "1.4.2"}
    path = "/echo?json=" + urllib.parse.quote(json.dumps(doc, separators=(",", ":")))
    write_plan(plan_with(f"""\
        - name: service
          targets: [api]
          checks:
            - health: {{name: good, path: "{path}", json: {{count: {{">=": 5000}}, rows: {{length: {{">=": 1}}}},
                        name: {{matches: "^shop"}}, version: {{version: ">=1.0,<2"}}, rows.0.id: {{exists: true}}}}}}
            - health: {{name: wrong, path: "{path}", json: {{status: {{">=": 5000}}, count: {{between: [0, 10]}}}}}}
        """, targets=f"api: {{url: '{http_url}'}}"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 1
    out = result.stdout.str()
    assert "Traceback" not in out and "TypeError" not in out
    result.stdout.fnmatch_lines([
        "*_ pre_release::service::health-wrong?api? _*",
        "*JSON field 'status' is 'ok' (a string, not a number), expected >= 5000; *",
        "*measured: status=200, *json.status=ok, json.count=5200*",
        "*expected: status=200, json=*",
        "  JSON field 'status' is 'ok' (a string, not a number), expected >= 5000",
        "  JSON field 'count' is 5200, expected between 0 and 10",
    ])
    records = read_lines(next((pytester.path / "evidence/release/validation/gates").glob("*/pre_release/service/records.jsonl")))
    good = next(r for r in records if "good" in r["check"])
    assert good["verdict"] == "passed"
    assert good["measured"]["json.count"] == 5200 and good["measured"]["json.rows.0.id"] == 7
    assert good["measured"]["json.rows"] == [{"id": 7}]


# -- plan errors --------------------------------------------------------------------------------

BAD = [
    ('{health: {json: {count: {gte: 5}}}}', "'gte' is not a comparison", "did you mean '>='"),
    ('{health: {json: {count: {">=": "5k"}}}}', "'5k' is a string, expected a number", ""),
    ('{health: {json: {rows: {length: {matches: x}}}}}', "is not a length", ""),
    ('{health: {json: {name: {matches: "(unclosed"}}}}', "json.name: matches: '(unclosed' is not a regular "
                                                         "expression", ""),
    ('{health: {json: {v: {version: ">>1"}}}}', "json.v: version: '>>1' is not a PEP 440 version specifier", ""),
    ('{health: {json: {n: {between: [9, 1]}}}}', "json.n: between: [9, 1] is empty", ""),
    ('{health: {json: {n: {between: [1]}}}}', "expected", ""),
    ('{health: {json: {meta: {region: eu}}}}', "'region' is not a comparison", "{==: {...}}"),
    ('{compatibility: {json: {api: {"=>": 3}}}}', "'=>' is not a comparison", "did you mean"),
    ('{consistency: {queries: [{sql: "select 1", value: {gte: 1}}]}}', "'gte' is not a comparison", ""),
    ('{consistency: {queries: [{sql: "select 1", rows: {empty: yes}, value: 1}]}}', "exactly one of value, rows,"
                                                                                    " expect", ""),
    ('{consistency: {queries: [{sql: "select 1", compare: ">=", value: {">=": 1}}]}}', "expected a number", ""),
    ('{consistency: {queries: [{sql: "select 1", value: {matches: "["}}]}}', "queries[0].value: matches: '['", ""),
]


def test_a_wrong_comparison_is_a_plan_error_at_its_line(pytester: pytest.Pytester,
                                                        write_plan: Callable[..., Path], http_url: str) -> None:
    gates = "".join(f"- name: g{i}\n  targets: [{'db' if 'consistency' in check else 'api'}]\n"
                    f"  checks:\n    - {check}\n" for i, (check, _, _) in enumerate(BAD))
    text = plan_with(gates, targets=f"api: {{url: '{http_url}'}}\ndb: {{sqlite: app.db}}")
    write_plan(text)
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 4
    err = result.stderr.str() + result.stdout.str()
    assert "Traceback" not in err
    lines = text.splitlines()
    for check, message, hint in BAD:
        line = next(n for n, text_line in enumerate(lines, 1) if check in text_line)
        found = [e for e in err.splitlines() if e.startswith(f"release-plan.yaml:{line}:") and message in e]
        assert found, (check, message, err)
        assert hint in found[0]


# -- consistency --------------------------------------------------------------------------------


def test_consistency_in_the_same_vocabulary_keeps_what_each_query_returned(
        pytester: pytest.Pytester, write_plan: Callable[..., Path]) -> None:
    conn = sqlite3.connect(pytester.path / "app.db")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.5) for i in range(1, 6001)])
    conn.commit()
    conn.close()
    write_plan(plan_with("""\
        - name: data
          targets: [db]
          checks:
            - consistency:
                name: good
                queries:
                  - {sql: "SELECT count(*) FROM items", value: {">=": 5000}}
                  - {sql: "SELECT count(*) FROM items", compare: ">=", value: 1}
                  - {sql: "SELECT name FROM items WHERE id = 1", value: {matches: "^item"}}
                  - {sql: "SELECT id FROM items WHERE price < 0", expect: empty}
                  - {sql: "SELECT id, name FROM items ORDER BY id LIMIT 2", rows: [[1, item 1], [2, item 2]]}
                  - {sql: "SELECT id FROM items WHERE id > 5990", rows: {length: {between: [1, 10]}}}
            - consistency:
                name: bad
                queries:
                  - {sql: "SELECT name FROM items WHERE id = 1", value: {">=": 1}}
                  - {sql: "SELECT count(*) FROM items", value: {"<": 100}}
                  - {sql: "SELECT id FROM items", rows: {empty: true}}
        """, targets="db: {sqlite: app.db}"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 1
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*consistency-bad?db?*query 1: value is 'item 1' (a string, not a number), "
                                 "expected >= 1: SELECT name FROM items WHERE id = 1*"])
    result.stdout.fnmatch_lines(["*query 2: value is 6000, expected < 100: SELECT count(*) FROM items*"])
    folder = next((pytester.path / "evidence/release/validation/gates").glob("*/pre_release/data"))
    checks = {r["check"]: r for r in read_lines(folder / "records.jsonl")}
    good = checks["consistency-good[db]"]
    assert good["verdict"] == "passed"
    assert {k: v for k, v in good["measured"].items() if k.startswith("query.")} == {
        "query.1": 6000, "query.2": 6000, "query.3": "item 1", "query.4": {"rows": 0, "first_rows": []},
        "query.5": {"rows": 2, "first_rows": [[1, "item 1"], [2, "item 2"]]},
        "query.6": {"rows": 10, "first_rows": [[5991], [5992], [5993], [5994], [5995]]}}
    bad = checks["consistency-bad[db]"]
    assert bad["measured"]["query.3"]["rows"] == 6000 and len(bad["measured"]["query.3"]["first_rows"]) == 5
