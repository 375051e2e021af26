"""The four check kinds in a real pytest run of a plan: collected, run, and failing with the measured
value against the threshold in the message."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import plan_with


def test_new_kinds_run_from_a_plan_and_say_measured_vs_threshold(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        server_factory: Callable[[str], int]) -> None:
    old_url = f"http://127.0.0.1:{server_factory('insecure')}"
    for name, rows in (("app.db", 3), ("backup.db", 2)):
        conn = sqlite3.connect(pytester.path / name)
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(rows)])
        conn.commit()
        conn.close()
    (pytester.path / "conf").mkdir()
    (pytester.path / "conf" / "app.yaml").write_text("port: '8080'\ndb: {password: hunter2-secret}\n")
    (pytester.path / "conf" / "app.yaml").chmod(0o600)
    (pytester.path / "prev").mkdir()
    (pytester.path / "prev" / "app.yaml").write_text("port: 8080\nworkers: 4\ndb: {password: ''}\n")
    write_plan(plan_with(
        """\
        - name: service
          targets: [api, old]
          checks:
            - performance: {path: "/delay?ms=60", requests: 8, concurrency: 4, p95: 20ms}
            - security: {name: headers, forbidden_paths: [/.git/config]}
            - compatibility: {version: ">=1.0,<2"}
        - name: data
          targets: [db]
          checks: [{consistency: {parity: backup, queries: [{sql: "SELECT count(*) FROM items", compare: ">=", value: 1}]}}]
        - name: config
          targets: [conf]
          checks: [security, {compatibility: {previous: prev}}]
        """,
        targets=f"""\
        api: {{url: '{http_url}'}}
        old: {{url: '{old_url}'}}
        db: {{sqlite: app.db}}
        backup: {{sqlite: backup.db}}
        conf: {{files: [conf/*.yaml]}}
        """, timeout="20"))
    collected = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "--collect-only", "-q")
    collected.stdout.fnmatch_lines([
        "release-plan.yaml::pre_release::service::performance?api?",
        "release-plan.yaml::pre_release::service::performance?old?",
        "release-plan.yaml::pre_release::service::security-headers?api?",
        "release-plan.yaml::pre_release::service::security-headers?old?",
        "release-plan.yaml::pre_release::service::compatibility?api?",
        "release-plan.yaml::pre_release::service::compatibility?old?",
        "release-plan.yaml::pre_release::data::consistency?db?",
        "release-plan.yaml::pre_release::config::security?conf?",
        "release-plan.yaml::pre_release::config::compatibility?conf?",
        "9 tests collected*",
    ])
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 1
    out = result.stdout.str()
    assert "hunter2-secret" not in out
    result.stdout.fnmatch_lines([
        "*p95 *ms > 20ms over 8 requests (GET http://127.0.0.1:*/delay?ms=60, concurrency 4)*",
        "*measured: *p95_ms=*",
        "*expected: *p95_ms=20*",
    ])
    result.stdout.fnmatch_lines([f"*{old_url}: GET / lacks header(s) X-Content-Type-Options (+1 more)*"])
    result.stdout.fnmatch_lines([f"*{old_url}/version reports version 0.9.1, outside >=1.0,<2*",
                                 "*measured: version=0.9.1*", "*expected: version=>=1.0,<2*"])
    result.stdout.fnmatch_lines(["*app.db: 1 problem(s) in 1 query, foreign keys, parity with backup: "
                                 "table items: 3 row(s) in app.db vs 2 in backup.db*",
                                 "*measured: *differing_tables=1*"])
    result.stdout.fnmatch_lines(["*1 problem(s) in 1 config file(s): conf/app.yaml:2: password = ******** "
                                 "(14 chars)*"])
    result.stdout.fnmatch_lines(["*2 breaking change(s) in 1 config file(s): conf/app.yaml: port: type changed "
                                 "from number to string*"])
    result.stdout.fnmatch_lines(["*7 failed, 2 passed*"])


def test_parity_naming_a_missing_target_is_a_plan_error(pytester: pytest.Pytester,
                                                         write_plan: Callable[..., Path]) -> None:
    write_plan(plan_with("- name: data\n  checks: [{consistency: {parity: bakup}}]\n",
                         targets="db: {sqlite: app.db}\nbackup: {sqlite: backup.db}\n"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert ("release-plan.yaml:13:39: validation.gates[0].checks[0].consistency.parity: no target named 'bakup' "
            "(did you mean 'backup'?)") in text
