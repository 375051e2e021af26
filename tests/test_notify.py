"""Notifications: real webhook receiver processes (tests/servers.py ``receiver``), signed JSON and
Slack payloads, events as they happen, and receivers that hang or fail costing the run no more
than their timeout."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from pytest_release.notify import NOTIFICATION_SCHEMA, public_url
from pytest_release.records import RECORD_SCHEMA

HERE = Path(__file__).parent
SECRET = "whsec-7f3a9c-never-shown"
TOKEN = "tok-51d0e2-never-shown"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start a receiver process answering the given statuses in turn; (base URL, its log)."""
    procs: list[subprocess.Popen[str]] = []

    def start(*statuses: int) -> tuple[str, Path]:
        log = tmp_path / f"receiver-{len(procs)}.jsonl"
        proc = subprocess.Popen([sys.executable, str(HERE / "servers.py"), "receiver", str(log),
                                 *map(str, statuses)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        return f"http://127.0.0.1:{proc.stdout.readline().strip()}", log

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def received(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def plan(http_url: str, notify: str, *, fail: bool = True, extra: str = "") -> str:
    """A release stage whose gate fails (``fail``) after the deploy, a rollback, and ``notify``."""
    path = "/fail" if fail else "/healthz"
    return textwrap.dedent(f"""\
        release: {{name: shop, version: 2.0.0}}
        targets:
          api: {{url: "{http_url}", health: /healthz}}
        strategy:
          stages: [{{name: pre_release}}, {{name: release}}]
          gates: [{{name: validation_gate, timeout: 10}}]
        rollback:
          triggers:
            - {{name: validation_failure, action: rollback, procedures: [service_rollback]}}
          procedures:
            - name: service_rollback
              steps:
                - revert: {{command: {{argv: ["{sys.executable}", "-c", "pass"]}}}}
        validation:
          gates:
            - name: service_validation
              stages: [release]
              after_rollback: skip
              checks:
                - health
                - health: {{name: broken, path: "{path}"}}
        """) + extra + textwrap.dedent(notify)


def evidence_texts(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()
                     and p.suffix in (".json", ".xml", ".html", ".jsonl", ".yaml"))


def test_events_reach_a_real_receiver_signed_and_as_documented(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        receiver: Callable[..., tuple[str, Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    hook, log = receiver(200)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    write_plan(plan(http_url, f"""\
        notify:
          - name: oncall
            url: "{hook}/hook?token=${{env:HOOK_TOKEN}}"
            secret: ${{env:HOOK_SECRET}}
          - name: chat
            url: "{hook}/slack"
            format: slack
            events: [verdict]
        """))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["notify: 4 notification(s): 4 delivered"])
    posts = received(log)
    hooks = [p for p in posts if str(p["path"]).startswith("/hook")]
    assert [p["headers"]["X-Release-Event"] for p in hooks] == ["trigger_fired", "rollback_finished", "verdict"]
    validator = jsonschema.Draft202012Validator(NOTIFICATION_SCHEMA)
    for post in hooks:
        body = str(post["body"]).encode()
        # The signature, computed here independently: HMAC-SHA256 of the exact body with the secret.
        assert post["headers"]["X-Release-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body,
                                                                               hashlib.sha256).hexdigest()
        assert post["path"] == f"/hook?token={TOKEN}"  # the real URL is used, but shown nowhere
        document = json.loads(body)
        validator.validate(document)
        assert document["delivery"] == post["headers"]["X-Release-Delivery"]
        assert document["release"] == {"name": "shop", "version": "2.0.0"}
    trigger, finished, verdict = (json.loads(str(p["body"])) for p in hooks)
    assert trigger["data"]["trigger"] == "validation_failure" and trigger["data"]["procedures"] == ["service_rollback"]
    assert finished["data"]["outcome"] == "rolled_back" and finished["data"]["failed_step"] is None
    assert verdict["data"]["outcome"] == "rolled_back" and verdict["data"]["exit_status"] == 1
    assert verdict["data"]["failed"] == ["release::service_validation::health-broken[api]"]
    assert verdict["data"]["time_to_restore_s"] is not None
    slack = [p for p in posts if p["path"] == "/slack"]
    assert len(slack) == 1 and "X-Release-Signature" not in slack[0]["headers"]
    text = json.loads(str(slack[0]["body"]))
    assert list(text) == ["text"] and "ROLLED BACK: shop 2.0.0" in text["text"]

    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    record = json.loads((evidence / "runs" / run / "notifications.json").read_text())
    jsonschema.validate(record, RECORD_SCHEMA)
    assert record["counts"] == {"delivered": 4}
    assert {d["url"] for d in record["deliveries"]} == {f"{hook}/hook", f"{hook}/slack"}
    for delivery in record["deliveries"]:
        assert [a["status"] for a in delivery["attempts"]] == [200] and delivery["attempts"][0]["duration_s"] >= 0
    everything = evidence_texts(evidence) + result.stdout.str() + result.stderr.str()
    assert SECRET not in everything and TOKEN not in everything
    verify = pytester.run(sys.executable, "-m", "pytest_release", "verify", str(evidence))
    assert verify.ret == 0, verify.stdout.str()  # the notifications record is sealed with the run


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_an_alert_is_sent_as_it_fires_before_the_rollback_ends(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        receiver: Callable[..., tuple[str, Path]], workers: list[str]) -> None:
    hook, log = receiver(200)
    fault = pytester.path / "fault"
    fault.write_text("the new release fails")
    write_plan(textwrap.dedent(f"""\
        release: {{name: shop, version: 2.0.0}}
        targets:
          api: {{url: "{http_url}", health: "/unless?file={fault}"}}
        strategy:
          stages: [{{name: pre_release, monitoring: false}}, {{name: release}}]
          gates: [{{name: validation_gate, timeout: 10}}, {{name: monitoring_gate, timeout: 1s, window: 3s}}]
        rollback:
          triggers:
            - {{name: monitoring_failure, action: rollback, procedures: [service_rollback]}}
          procedures:
            - name: service_rollback
              steps:
                - revert: {{command: {{argv: ["{sys.executable}", "-c", "import os; os.remove('{fault}')"]}}}}
        validation:
          gates:
            - {{name: smoke, stages: [pre_release], checks: [{{health: {{path: /healthz}}}}]}}
        monitoring:
          metrics:
            - {{name: service_health, interval: 100ms, threshold: 0.9, source: {{targets: [api]}}}}
          alerts:
            - {{name: health_alert, threshold: 0.5, window: 1s}}
        notify:
          - name: oncall
            url: "{hook}/hook"
            events: [alert_fired, rollback_finished]
        """))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", *workers)
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["ROLLED BACK: monitoring_failure*"])
    posts = received(log)
    events = [p["headers"]["X-Release-Event"] for p in posts]
    assert events == ["alert_fired", "rollback_finished"], events  # sent once, under xdist too
    alert = json.loads(str(posts[0]["body"]))
    jsonschema.validate(alert, NOTIFICATION_SCHEMA)
    assert alert["data"]["alert"] == "health_alert" and alert["data"]["metric"] == "service_health"
    assert alert["data"]["stage"] == "release" and alert["data"]["share"] < 0.5
    assert "alert health_alert fired in release" in alert["summary"]


@pytest.mark.parametrize("kind", ["hangs", "answers 500"])
def test_a_receiver_that_hangs_or_fails_costs_no_more_than_its_timeout(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str, hang_url: str,
        receiver: Callable[..., tuple[str, Path]], kind: str) -> None:
    url = hang_url if kind == "hangs" else receiver(500)[0]
    timeout = 1.0
    write_plan(plan(http_url, ""), name="quiet.yaml")
    write_plan(plan(http_url, f"""\
        notify:
          - {{name: oncall, url: "{url}/hook", timeout: {timeout}s, retries: 2}}
        """))
    began = time.monotonic()
    quiet = pytester.runpytest_subprocess("--release-plan", "quiet.yaml", "--release-evidence-dir", "quiet")
    baseline = time.monotonic() - began
    began = time.monotonic()
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    took = time.monotonic() - began
    assert quiet.ret == result.ret == 1, result.stdout.str()  # the same verdict: never fails the run
    result.stdout.fnmatch_lines(["notify: 3 notification(s): *; not delivered: oncall (*"])
    evidence = pytester.path / "evidence" / "release"
    run = (evidence / "LATEST").read_text().strip()
    record = json.loads((evidence / "runs" / run / "notifications.json").read_text())
    assert record["waited_s"] <= timeout + 0.5, record["waited_s"]
    assert took - baseline < timeout + 2.0, (took, baseline)  # generous: the machine is noisy
    trigger = json.loads((evidence / "rollback" / "procedures" / run / "service_rollback" / "revert.json").read_text())
    assert trigger["duration_s"] < timeout  # the rollback never waited for a notification
    attempts = [a for d in record["deliveries"] for a in d["attempts"]]
    assert attempts and all(not a["ok"] for a in attempts)
    if kind == "hangs":
        assert all(a["status"] is None and a["error"] == f"no answer within {timeout:g}s" for a in attempts)
        assert all(a["duration_s"] < timeout + 0.5 for a in attempts)
    else:
        assert {a["status"] for a in attempts} == {500}
        assert max(len(d["attempts"]) for d in record["deliveries"]) >= 2  # retried (until the run ended)
    assert {d["outcome"] for d in record["deliveries"]} <= {"failed", "abandoned"}


def test_a_rejected_notification_is_not_retried(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str,
        receiver: Callable[..., tuple[str, Path]]) -> None:
    hook, log = receiver(401, 200)
    write_plan(plan(http_url, f"""\
        notify:
          - {{name: oncall, url: "{hook}/hook", events: [verdict]}}
        """))
    assert pytester.runpytest_subprocess("--release-plan", "release-plan.yaml").ret == 1
    assert len(received(log)) == 1
    evidence = pytester.path / "evidence" / "release"
    record = json.loads((evidence / "runs" / (evidence / "LATEST").read_text().strip() / "notifications.json").read_text())
    assert [d["outcome"] for d in record["deliveries"]] == ["rejected"]


@pytest.mark.parametrize("entry, message", [
    ('{name: a, url: "http://127.0.0.1:1/h", secret: literal-key}',
     "notify[0].secret: a signing secret must come from the environment: write ${env:NAME}*"),
    ('{name: a, url: "http://127.0.0.1:1/h?token=abc"}',
     "notify[0].url: the URL carries a password or query string written in the plan*"),
    ('{name: a, url: "http://u:pw@127.0.0.1:1/h"}', "notify[0].url: the URL carries a password*"),
    ('{name: a, url: "http://127.0.0.1:1/h", events: [deployed]}', "notify[0].events[0]: 'deployed' is not*"),
    ('{name: a, url: "ftp://127.0.0.1/h"}', "notify[0].url: *"),
    ('{name: a, url: "http://127.0.0.1:1/h", format: teams}', "notify[0].format: 'teams' is not*"),
    ('{name: a, url: "http://127.0.0.1:1/h", timeout: 0}', "notify[0].timeout*"),
    ('{name: a, url: "http://127.0.0.1:1/h", retries: -1}', "notify[0].retries*"),
    ('{name: a, url: "http://127.0.0.1:1/h", sign: yes}', "notify[0].sign: unknown key 'sign'*"),
    ('{name: a, url: "http://127.0.0.1:1/h"}\n  - {name: a, url: "http://127.0.0.1:1/i"}',
     "notify[1].name: duplicate name 'a' (first at line *)"),
])
def test_a_wrong_receiver_is_a_plan_error_at_its_line(tmp_path: Path, entry: str, message: str) -> None:
    from fnmatch import fnmatchcase

    from pytest_release.checks import BUILTIN_KINDS
    from pytest_release.loader import load_plan
    from pytest_release.problems import PlanError

    path = tmp_path / "release-plan.yaml"
    path.write_text(plan("http://127.0.0.1:1", f"notify:\n  - {entry}\n"))
    with pytest.raises(PlanError) as caught:
        load_plan(path, BUILTIN_KINDS, env={}, display="release-plan.yaml")
    line = len(plan("http://127.0.0.1:1", "").splitlines()) + 2 + entry.count("\n")
    problems = [str(p) for p in caught.value.problems]
    pattern = f"release-plan.yaml:{line}:*: " + message.replace("[", "[[]")
    assert any(fnmatchcase(p, pattern) for p in problems), problems


def test_a_wrong_receiver_stops_the_run_with_exit_code_4(
        pytester: pytest.Pytester, write_plan: Callable[..., Path], http_url: str) -> None:
    write_plan(plan(http_url, "notify:\n  - {name: a, url: 'http://127.0.0.1:1/x', secret: plain}\n"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["release-plan.yaml:*:*: notify[[]0[]].secret: a signing secret must come from *"])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize("url, secrets, shown", [
    ("https://hooks.example.com/services/T0/B1/XYZ", ("https://hooks.example.com/services/T0/B1/XYZ",), "***"),
    ("https://user:pw@hooks.example.com:8443/a/b?token=t&x=1#frag", (), "https://hooks.example.com:8443/a/b"),
    ("http://127.0.0.1:9/hook?sig=abc", (), "http://127.0.0.1:9/hook"),
    ("https://hooks.example.com/T0/SECRETPART", ("SECRETPART",), "https://hooks.example.com/T0/***"),
    ("http://[::1]:9/x", (), "http://[::1]:9/x"),
])
def test_urls_are_shown_without_their_secret_parts(url: str, secrets: tuple[str, ...], shown: str) -> None:
    assert public_url(url, secrets) == shown
