"""Bounded time and memory against hostile servers and programs, with real processes.

Every network check kind meets every hostile server mode of ``servers.py``: a server that never
answers, one that drips its headers or its body a byte a second, one that streams without end and
one that sends a 1 GiB body. Each case must end as a failed check that says what happened, within
its budget (or its ``request_timeout``) plus a small grace. A program that writes without end is
killed at its timeout with its output bounded. A whole pytest run against all of them at once
stays within a memory bound above an idle run.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import plan_with, run_check
from pytest_release.checks.command import run_program
from pytest_release.checks.limits import MAX_BODY, MAX_OUTPUT

KINDS = ["health", "performance", "security", "compatibility"]
MODES = ["hang", "drip-headers", "drip-body", "endless", "huge"]
#: Checks end by their own timeouts; this much is allowed past them on a loaded machine.
GRACE = 1.5
#: A run against every hostile server at once may use at most this much more memory than an idle one.
RSS_BOUND_MIB = 256

PARAMS = {"performance": {"requests": 20, "concurrency": 4}, "compatibility": {"path": "/version"}}

#: What each kind must say about each mode (a regular expression searched in its summary).
SAYS = {
    ("health", "hang"): r"gave no answer within 1\.\d+s \(the 1\.5s budget of gate pre_release::g ran out\)",
    ("health", "drip-headers"): r"gave no answer within 1\.\d+s \(the 1\.5s budget",
    ("health", "drip-body"): r"answered 200 but its body did not arrive within 1\.\d+s \(the 1\.5s budget",
    ("health", "endless"): rf"answered 200 with a body larger than {MAX_BODY} bytes \(1 MiB\): stopped reading",
    ("health", "huge"): rf"answered 200 with a body larger than {MAX_BODY} bytes \(1 MiB\) "
                        r"\(Content-Length 1073741824\): not read",
    ("performance", "hang"): r"no request was answered: 4 of 4 had no complete answer when the 1\.5s budget",
    ("performance", "drip-headers"): r"no request was answered: 4 of 4 had no complete answer when the 1\.5s",
    ("performance", "drip-body"): r"no request was answered: 4 of 4 had no complete answer when the 1\.5s",
    ("performance", "endless"): r"error rate 100\.0% > 0\.0% \(20 of 20 failed\)",
    ("performance", "huge"): r"error rate 100\.0% > 0\.0% \(20 of 20 failed\)",
    ("security", "hang"): r"GET / gave no answer within 1\.\d+s \(the 1\.5s budget",
    ("security", "drip-headers"): r"GET / gave no answer within 1\.\d+s \(the 1\.5s budget",
    ("security", "drip-body"): r"GET / lacks header\(s\) X-Content-Type-Options \(\+3 more\)",
    ("security", "endless"): r"GET / lacks header\(s\) X-Content-Type-Options \(\+3 more\)",
    ("security", "huge"): r"GET / lacks header\(s\) X-Content-Type-Options \(\+3 more\)",
    ("compatibility", "hang"): r"/version gave no answer within 1\.\d+s \(the 1\.5s budget",
    ("compatibility", "drip-headers"): r"/version gave no answer within 1\.\d+s \(the 1\.5s budget",
    ("compatibility", "drip-body"): r"/version answered 200 but its body did not arrive within 1\.\d+s",
    ("compatibility", "endless"): rf"/version answered 200 with a body larger than {MAX_BODY} bytes",
    ("compatibility", "huge"): rf"/version answered 200 with a body larger than {MAX_BODY} bytes",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_network_check_ends_within_its_budget_against_a_hostile_server(
        kind: str, mode: str, server_factory: Callable[[str], int], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server_factory(mode)}"
    started = time.monotonic()
    result = run_check(kind, {"url": url}, tmp_path, budget=1.5, **PARAMS.get(kind, {}))
    took = time.monotonic() - started
    assert not result.passed
    assert took < 1.5 + GRACE, (took, result.summary)
    assert re.search(SAYS[kind, mode], result.summary), result.summary
    assert len(result.summary) < 400 and "\n" not in result.summary


def test_security_records_the_status_of_each_path_it_tried(server_factory: Callable[[str], int],
                                                           tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server_factory('drip-body')}"
    result = run_check("security", {"url": url}, tmp_path, budget=3)
    assert result.measured["GET /.env"] == 200 and result.measured["exposed_paths"] == DEFAULT_FORBIDDEN


DEFAULT_FORBIDDEN = ["/.git/config", "/.env", "/debug"]

#: (kind, requests a hang costs it at request_timeout each)
HANG_COST = {"health": 1, "performance": 1, "security": 4, "compatibility": 1}


@pytest.mark.parametrize("where", ["check", "target"])
@pytest.mark.parametrize("kind", KINDS)
def test_request_timeout_finds_a_hang_in_seconds_not_at_the_budget(
        kind: str, where: str, hang_url: str, tmp_path: Path) -> None:
    spec: dict[str, object] = {"url": hang_url}
    params = dict(PARAMS.get(kind, {}))
    (params if where == "check" else spec)["request_timeout"] = "400ms"
    started = time.monotonic()
    result = run_check(kind, spec, tmp_path, budget=30, **params)
    took = time.monotonic() - started
    assert not result.passed
    assert took < 0.4 * HANG_COST[kind] + GRACE, (took, result.summary)
    assert f"{'the check' if where == 'check' else 'the target'}'s request_timeout 400ms" in result.summary, \
        result.summary
    if kind == "performance":
        assert "no request was answered: 4 of 4 timed out; 16 of 20 not sent (the service answers nothing" \
            in result.summary
        assert result.measured["answered"] == 0 and result.measured["errors.timeout"] == 4


def test_request_timeout_is_never_longer_than_the_budget_left(hang_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check("health", {"url": hang_url}, tmp_path, budget=0.5, request_timeout="20s")
    assert time.monotonic() - started < 0.5 + GRACE
    assert "the 500ms budget of gate pre_release::g ran out" in result.summary


@pytest.mark.parametrize("kind", ["health", "performance", "compatibility"])
def test_max_body_is_settable_per_check(kind: str, http_url: str, tmp_path: Path) -> None:
    path = {"compatibility": "/version"}.get(kind, "/healthz")
    params = {**PARAMS.get(kind, {}), "path": path}
    assert run_check(kind, {"url": http_url}, tmp_path, **params).passed
    small = run_check(kind, {"url": http_url}, tmp_path, max_body=10, **params)
    assert not small.passed
    if kind == "performance":
        assert small.details == ["errors: 20 x body larger than 10 bytes"]
    else:
        assert "answered 200 with a body larger than 10 bytes (Content-Length " in small.summary


def test_security_calls_a_failing_service_failing_not_exposed(http_url: str, tmp_path: Path) -> None:
    result = run_check("security", {"url": http_url}, tmp_path, headers=[], forbidden_paths=["/fail", "/.env"])
    assert not result.passed
    assert result.summary == (f"{http_url}: GET /fail answered 503: the service failed, not a verdict on "
                              "exposure")
    assert "exposed" not in result.summary.replace("exposure", "")
    assert result.measured == {"GET /fail": 503, "GET /.env": 404, "exposed_paths": [],
                               "unjudged_paths": ["/fail"]}


@pytest.mark.parametrize("cause", ["refused", "hang"])
def test_performance_against_a_service_that_never_answered_says_so(
        cause: str, hang_url: str, free_port: int, tmp_path: Path) -> None:
    url = hang_url if cause == "hang" else f"http://127.0.0.1:{free_port}"
    result = run_check("performance", {"url": url}, tmp_path, budget=30, requests=20, concurrency=4,
                       request_timeout="300ms", p95="100ms")
    assert not result.passed
    said = {"refused": "no request was answered: 20 of 20 could not connect (Connection refused)",
            "hang": "no request was answered: 4 of 4 timed out; 16 of 20 not sent"}[cause]
    assert said in result.summary, result.summary
    assert "not measured" not in result.summary and "0 of 0" not in result.summary


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- programs --------------------------------------------------------------------------------------

ENDLESS = "import sys\nwhile True: sys.{stream}.write('y' * 65536)"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_program_that_writes_without_end_is_killed_at_its_timeout_and_kept_bounded(
        stream: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check("command", None, tmp_path, budget=1.0,
                       argv=[sys.executable, "-c", ENDLESS.format(stream=stream)])
    assert time.monotonic() - started < 1.0 + GRACE
    assert not result.passed and "did not finish within 1.0s; killed" in result.summary
    assert result.measured["output_bytes"] > 2 * MAX_OUTPUT
    assert result.measured["output_dropped"] == result.measured["output_bytes"] - MAX_OUTPUT


@pytest.mark.parametrize("limit", [1, 100, 4096])
def test_run_program_keeps_the_first_and_last_of_its_output(limit: int, tmp_path: Path) -> None:
    """The command check and the command rollback action share this reader."""
    code = "print('first'); print('x' * 100000); print('last')"
    done = run_program({"argv": [sys.executable, "-c", code], "max_output": limit}, tmp_path, 10)
    assert done.returncode == 0
    assert done.output_bytes == 100000 + len("first\nlast\n") + 1
    assert done.output_dropped == done.output_bytes - limit
    assert f"[... {done.output_dropped} bytes not kept ...]" in done.stdout
    if limit >= 100:
        assert done.stdout.startswith("first\n") and done.stdout.endswith("last\n")


def test_yes_as_a_command_check_and_as_a_rollback_step_is_bounded(tmp_path: Path) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = run_program({"argv": ["yes"], "max_output": 1000}, tmp_path, 1.0)
    assert done.returncode is None and "killed" in done.error
    assert len(done.stdout) < 1100 and done.output_bytes > 10 * 1024 * 1024
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


# -- a whole run against all of them, memory measured ------------------------------------------------

LAUNCH = ("import resource, sys, pytest\n"
          "code = pytest.main(sys.argv[1:])\n"
          "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
          "sys.exit(code)\n")


def _hostile_plan(urls: dict[str, str], command: list[str]) -> str:
    targets = "\n".join(f"{mode}: {{url: '{url}', health: /healthz}}" for mode, url in urls.items())
    checks = json.dumps(["health", {"performance": PARAMS["performance"]}, "security",
                         {"compatibility": {"path": "/version"}}])
    return plan_with(f"""\
        - name: hostile
          concurrency: 32
          checks: {checks}
        - name: program
          checks: [{{command: {{argv: {json.dumps(command)}, name: endless}}}}]
        """, targets=targets, timeout="3s")


def _peak_rss_kib(pytester: pytest.Pytester) -> tuple[int, pytest.RunResult, float]:
    started = time.monotonic()
    result = pytester.run(sys.executable, "-c", LAUNCH, "-p", "no:cacheprovider", "--release-plan",
                          "release-plan.yaml", timeout=120)
    took = time.monotonic() - started
    found = re.search(r"PEAK_RSS_KIB (\d+)", result.stdout.str())
    assert found, result.stdout.str()
    return int(found.group(1)), result, took


def test_a_run_against_every_hostile_server_stays_within_its_time_and_memory_bounds(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], server_factory: Callable[[str], int]) -> None:
    idle_url = f"http://127.0.0.1:{server_factory('http')}"
    write_plan(_hostile_plan({mode: idle_url for mode in MODES}, ["true"]))
    idle, idle_result, _ = _peak_rss_kib(pytester)
    assert idle_result.ret == 0, idle_result.stdout.str()

    write_plan(_hostile_plan({mode: f"http://127.0.0.1:{server_factory(mode)}" for mode in MODES}, ["yes"]))
    hostile, result, took = _peak_rss_kib(pytester)
    out = result.stdout.str()
    assert result.ret == 1, out
    # two gates of 3s each, and the run's own start and end
    assert took < 2 * 3 + 15, out
    assert (hostile - idle) / 1024 < RSS_BOUND_MIB, (hostile, idle)
    result.stdout.fnmatch_lines(["*21 failed*"])
    assert "did not finish within the 3s budget" not in out  # each check ended by itself, none was stopped
    assert "Traceback" not in out and "MemoryError" not in out


@pytest.mark.parametrize("mode", MODES)
def test_a_prometheus_query_against_a_hostile_server_ends_within_its_timeout(
        mode: str, server_factory: Callable[[str], int]) -> None:
    """Monitoring reads HTTP too: the same total deadline holds while headers drip in."""
    from pytest_release.prometheus import PrometheusError, instant_query

    started = time.monotonic()
    with pytest.raises(PrometheusError) as raised:
        instant_query(f"http://127.0.0.1:{server_factory(mode)}", "up", timeout=1.0)
    assert time.monotonic() - started < 1.0 + GRACE, str(raised.value)
    said = {"hang": "gave no answer", "drip-headers": "gave no answer", "drip-body": "did not arrive",
            "endless": "larger than 16 MiB", "huge": "larger than 16 MiB"}[mode]
    assert said in str(raised.value)


def test_a_targets_request_timeout_finds_a_hang_in_a_real_run_long_before_the_budget(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], hang_url: str) -> None:
    write_plan(plan_with("""\
        - name: service_validation
          checks: [health, {performance: {requests: 10, concurrency: 2}}, security, compatibility]
        """, targets=f"api: {{url: '{hang_url}', request_timeout: 500ms}}", timeout="120"))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 1
    assert time.monotonic() - started < 30  # four checks fanned out; the budget was two minutes
    result.stdout.fnmatch_lines([
        "FAILED*health[[]api[]]: GET * gave no answer within 5*ms (the target's request_timeout 500ms)",
        "FAILED*performance[[]api[]]: GET *: no request was answered: 2 of 2 timed out; 8 of 10 not sent*",
        "*4 failed*"])


@pytest.mark.parametrize("target", ["{sqlite: app.db}", "{files: [a.yaml]}", "{manifest: SHA256SUMS}"])
def test_request_timeout_on_a_target_that_makes_no_requests_is_a_plan_error(
        target: str, pytester: pytest.Pytester, write_plan: Callable[..., Path]) -> None:
    spec = target[:-1] + ", request_timeout: 1s}"
    write_plan(plan_with("- name: g\n  checks: [integrity]\n", targets=f"t: {spec}"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["release-plan.yaml:*:*: targets.t.request_timeout: 'request_timeout' applies to "
                                 "url or tcp targets only"])
