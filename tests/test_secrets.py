"""No secret in any output: every place a ``${env:NAME}`` value can stand in a plan, every output
a run has, and every form a secret takes on its way out (escaped, quoted, encoded, cut).

The enumeration test runs a plan in which each placement has a secret of its own, in real pytest
runs against a real HTTP server, once per group of output options; then it searches the raw bytes
of every output for every form of every secret (and of every fragment of MIN_LENGTH characters).
"""

from __future__ import annotations

import html
import json
import random
import shlex
import sqlite3
import string
import textwrap
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape, quoteattr

import markupsafe
import pytest

from pytest_release.secrets import MASK, MIN_LENGTH, Redactor, parse_variables, redact

PlanWriter = Callable[..., Path]

# -- the forms of a secret ------------------------------------------------------------------------


def forms(secret: str) -> set[str]:
    """Every form in which ``secret`` could be read in an output (each at least MIN_LENGTH long)."""
    found = {
        secret,
        repr(secret)[1:-1],
        repr(repr(secret))[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(repr(secret))[1:-1],
        json.dumps(json.dumps(secret))[1:-1],
        shlex.quote(secret),
        secret.replace("'", "'\"'\"'"),
        shlex.quote("--x=" + secret)[len("'--x="):],
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(urllib.parse.quote(secret)),
        html.escape(secret),
        html.escape(secret, quote=False),
        html.escape(json.dumps(secret)[1:-1]),
        html.escape(repr(secret)[1:-1]),
        str(markupsafe.escape(secret)),
        str(markupsafe.escape(repr(secret)[1:-1])),
        xml_escape(secret),
        quoteattr(secret)[1:-1],
        xml_escape(repr(secret)[1:-1]),
    }
    return {f for f in found if len(f) >= MIN_LENGTH}


def fragments(secret: str) -> list[str]:
    """Every run of MIN_LENGTH characters of ``secret``: what a cut secret leaves."""
    return [secret[i:i + MIN_LENGTH] for i in range(len(secret) - MIN_LENGTH + 1)]


def needles(secret: str) -> dict[bytes, str]:
    """The bytes to look for, each with what it is (for the failure message)."""
    found: dict[bytes, str] = {}
    for piece in [secret, *fragments(secret)]:
        for form in forms(piece) | {piece}:
            found.setdefault(form.encode("utf-8"), f"{form!r} (a form of {'the secret' if piece == secret else 'a fragment ' + repr(piece)})")
    return found


# -- the redactor itself, over generated secrets -------------------------------------------------

ALPHABET = string.ascii_letters + string.digits + "'\\\"&<> %/#!$=+?:;@,é€\t"


def _secrets(seed: int, count: int = 4) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(MIN_LENGTH, 40))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(8))
def test_every_form_and_fragment_of_generated_secrets_is_masked(seed: int) -> None:
    secrets = _secrets(seed)
    redactor = Redactor(secrets)
    rng = random.Random(seed)
    for secret in secrets:
        wanted = needles(secret)
        cut = rng.randint(MIN_LENGTH, len(secret))
        start = rng.randint(0, len(secret) - MIN_LENGTH)
        pieces = [secret, secret[:cut], secret[len(secret) - cut:], secret[start:start + MIN_LENGTH]]
        for piece in pieces:
            for form in forms(piece) | {piece}:
                text = f"before 5000 {form} after"
                masked = redactor.text(text)
                leaks = [what for needle, what in wanted.items() if needle.decode() in masked]
                assert not leaks, (secret, form, masked, leaks)
                assert masked.startswith("before 5000 ") and masked.endswith(" after"), (form, masked)
                assert MASK in masked


def test_what_is_not_secret_stays() -> None:
    redactor = Redactor(["5000-and-more", "hunter2-secret"])
    text = "port 5000, 0.5000 s, JSON field '0.n' is 5000; secret hunter2 and more; password"
    assert redactor.text(text) == text
    assert redactor.text("a hunter2-sec cut") == f"a {MASK} cut"  # 11 characters of it: a fragment
    assert redact("x hunter2-secret y", []) == "x hunter2-secret y"


def test_bytes_that_are_not_utf8_pass_through() -> None:
    redactor = Redactor(["s3cr3t-T0ken"])
    data = b"\xff\xfe s3cr3t-T0ken \x80"
    assert redactor.bytes(data) == b"\xff\xfe *** \x80"


def test_release_vars_are_name_equals_value() -> None:
    assert parse_variables(["A=1", "B_2=x=y", "A=3"], "--release-var") == {"A": "3", "B_2": "x=y"}
    for bad in ("A", "=1", "1A=2", "A-B=1"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_variables([bad], "--release-var")


# -- real runs: placements x outputs --------------------------------------------------------------

#: One secret per place a secret can stand in the plan (each with ' and \ and what HTML, XML,
#: URLs and JSON escape).
PLACEMENTS = {
    "query": "Qy'7\\kT&z<M> 4\"w-query",      # a health path's query string (urllib3 logs the request line)
    "argv": "Av'8\\pX\"r&s<t> argv-zz",       # an argv element of a command (shlex.join in messages)
    "env": "Ev'9\\mL\"u&v<w> envv-zz",        # an env value of a command, printed by the program
    "header": "Hd'1\\qJ\"h&i<j> head-zz",     # a header the security check looks for
    "json": "Js'2\\rK\"j&k<l> json-zz",       # a JSON body expectation (repr in the message)
    "message": "Ms'3\\sQ\"m&n<o> mesg-zz",    # text the body must contain (repr in the message)
    "exception": "Xc'4\\tW\"p&q<r> excp-zz",  # a check that raises: traceback, locals (cut by saferepr)
    "step": "St'5\\uV\"s&t<u> step-zz",       # a rollback step's argv (journal, step records, summary)
    "version": "Vr'6\\vY\"x&y<z> vers-zz",    # release.version (records, history store)
}

LEAKY_KIND = '''
from pytest_release import CheckKind

def run(ctx):
    token = ctx.params["token"]
    words = {"padding": "w" * 150, "token": token, "after": "a" * 150}
    raise RuntimeError("the service refused the token " + repr(token) + " " + repr(words)[:200])

def pytest_release_check_kinds():
    return [CheckKind(name="leaky", judges=frozenset(), run=run, description="raises with a token",
                      params={"type": "object", "properties": {"token": {"type": "string"}}})]
'''


def secret_plan(url: str) -> str:
    fail = "raise SystemExit(3)"
    return textwrap.dedent(f"""\
        release: {{name: shop, version: "${{env:SECRET_VERSION}}"}}
        targets:
          api: {{url: "{url}"}}
        strategy:
          stages: [{{name: pre_release}}, {{name: post_release}}]
          gates:
            - {{name: validation_gate, timeout: 20}}
            - {{name: rollback_gate, timeout: 10}}
        rollback:
          triggers:
            - {{name: validation_failure, action: rollback, timeout: 60}}
          procedures:
            - name: service_rollback
              steps: [stop]
              actions:
                stop: {{command: {{argv: [python, -c, "raise SystemExit(1)", "--token=${{env:SECRET_STEP}}"]}}}}
        validation:
          gates:
            - name: data_validation
              checks: [{{command: {{name: fine, argv: [python, -c, "pass"]}}}}]
            - name: service_validation
              stages: [post_release]
              # One check at a time, each in its own item: its log lines are captured with it (a
              # check fanned out to a thread may log between two items, where nothing captures).
              concurrency: 1
              checks:
                - health: {{name: query, path: "/fail?token=${{env:SECRET_QUERY}}"}}
                - command: {{name: argv, argv: [python, -c, "{fail}", "--password=${{env:SECRET_ARGV}}"]}}
                - command:
                    name: envvar
                    argv: [python, -c, "import os; print('token is', os.environ['TOKEN']); {fail}"]
                    env: {{TOKEN: "${{env:SECRET_ENV}}"}}
                - security: {{name: header, headers: ["X-${{env:SECRET_HEADER}}"], forbidden_paths: []}}
                - health: {{name: json, path: /healthz, json: {{status: "${{env:SECRET_JSON}}"}}}}
                - health: {{name: message, path: /healthz, contains: "${{env:SECRET_MESSAGE}}"}}
                - leaky: {{token: "${{env:SECRET_EXCEPTION}}"}}
        analytics:
          metrics: [{{name: system_metrics, retention: 90d}}]
          analysis: [{{name: system_analysis, retention: 90d}}]
        """)


#: Groups of output options; every run also writes the evidence (JSON records, journal, JUnit
#: XML and HTML report copies, summary.json, manifest), the history store and the step summary.
RUNS = {
    "quiet": ["-q"],
    "default-junit-logging-all": ["--junitxml", "mine.xml", "-o", "junit_logging=all", "--log-level=DEBUG"],
    "vv-long-locals-rA": ["-vv", "--tb=long", "-l", "-rA"],
    "full-trace-log-cli-debug": ["--full-trace", "-l", "-o", "log_cli=true", "--log-cli-level=DEBUG",
                                 "--log-level=DEBUG"],
    "xdist-v-rA": ["-n", "2", "-v", "-rA", "--log-level=DEBUG", "--junitxml", "mine.xml", "-o", "junit_logging=all"],
}


def outputs(pytester: pytest.Pytester, result: pytest.RunResult) -> Iterator[tuple[str, bytes]]:
    yield "terminal stdout", result.stdout.str().encode("utf-8")
    yield "terminal stderr", result.stderr.str().encode("utf-8")
    yield "step summary", (pytester.path / "step-summary.md").read_bytes()
    if (pytester.path / "mine.xml").exists():
        yield "--junitxml", (pytester.path / "mine.xml").read_bytes()
    for path in sorted((pytester.path / "evidence").rglob("*")):
        if path.is_file():
            yield f"evidence {path.relative_to(pytester.path / 'evidence')}", path.read_bytes()


@pytest.mark.parametrize("run", list(RUNS))
def test_no_form_of_any_secret_in_any_output(pytester: pytest.Pytester, write_plan: PlanWriter,
                                            server_factory: Callable[[str], int], monkeypatch: pytest.MonkeyPatch,
                                            run: str) -> None:
    write_plan(secret_plan(f"http://127.0.0.1:{server_factory('http')}"))
    pytester.makeconftest(LEAKY_KIND)
    for placement, secret in PLACEMENTS.items():
        monkeypatch.setenv(f"SECRET_{placement.upper()}", secret)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "step-summary.md"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider",
                                           *RUNS[run])
    assert result.ret == 20, result.stdout.str()[-3000:]  # checks failed, and the rollback step failed
    seen = dict(outputs(pytester, result))
    # The outputs are there and speak of the failures (with the secrets masked).
    stdout = seen["terminal stdout"].decode()
    assert "ROLLBACK FAILED" in stdout and MASK in stdout
    assert any(name.endswith("journal.jsonl") for name in seen), sorted(seen)
    assert any(name.endswith("report.html") for name in seen) and any(name.endswith("junit.xml") for name in seen)
    assert any(name.endswith("history.sqlite") for name in seen)
    store = next((pytester.path / "evidence").rglob("history.sqlite"))
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT version FROM release_runs").fetchall() == [(MASK,)]
    if "log_cli=true" in RUNS[run] or "junit_logging=all" in RUNS[run]:
        # urllib3's own debug line of the request is there, its token masked.
        logged = seen["terminal stdout"] if "log_cli=true" in RUNS[run] else seen["--junitxml"]
        assert b'"GET /fail?token=***' in logged, logged.decode()[-3000:]
    leaks = [f"{output}: {placement}: {what}"
             for placement, secret in PLACEMENTS.items()
             for needle, what in needles(secret).items()
             for output, data in seen.items() if needle in data]
    assert not leaks, "\n".join(leaks[:40])


# -- refusing short secrets; plain variables ---------------------------------------------------------


def _health_plan(url: str, timeout: str) -> str:
    """One stage, one gate of one health check of the target ``api`` at ``url``."""
    return textwrap.dedent(f"""\
        release: {{name: shop, version: 1.0.0}}
        targets:
          api: {{url: "{url}"}}
        strategy:
          stages: [{{name: pre_release}}]
          gates: [{{name: validation_gate, timeout: {timeout}}}]
        validation:
          gates: [{{name: g, checks: [health]}}]
        """)


@pytest.mark.parametrize("value", ["5000", "a'b\\c", "1234567"])
def test_a_secret_too_short_to_mask_is_a_plan_error(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                     monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SHOP_PORT", value)
    write_plan(_health_plan("http://127.0.0.1:${env:SHOP_PORT}", "5"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"*release-plan.yaml:3:*: targets.api.url: environment variable SHOP_PORT is too short for a secret "
        f"({len(value)} characters; a secret needs at least {MIN_LENGTH} *write ${{var:SHOP_PORT}}"])
    for form in {value, repr(value)[1:-1]}:
        assert f":{form}" not in result.stderr.str() + result.stdout.str()


def test_plain_variables_fill_the_plan_and_are_never_masked(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                             server_factory: Callable[[str], int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    port = server_factory("http")
    monkeypatch.setenv("SHOP_HOST", "127.0.0.1")  # ${var:...} from the environment
    monkeypatch.setenv("SHOP_TOKEN", "tok-5000-secret")
    write_plan(textwrap.dedent("""\
        release: {name: shop, version: 1.2.3}
        targets:
          api: {url: "http://${var:SHOP_HOST}:${var:SHOP_PORT}"}
        strategy:
          stages: [{name: pre_release}]
          gates: [{name: validation_gate, timeout: 10}]
        validation:
          gates:
            - name: g
              checks:
                - health: {name: version, path: /healthz, json: {version: "${var:release_version}"}}
                - health: {name: secret, path: "/fail?token=${env:SHOP_TOKEN}&port=${var:SHOP_PORT}"}
        """))
    ini = pytester.makeini("[pytest]\nrelease_vars =\n    SHOP_PORT=1\n")
    assert ini.exists()
    # --release-var wins over the ini key; release_version is the plan's release.version...
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "--release-var",
                                           f"SHOP_PORT={port}")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*::g::health-version?api? PASSED*",
        f"*GET http://127.0.0.1:{port}/fail?token=***&port={port} answered 404*",  # only the secret masked
    ])
    assert "tok-5000-secret" not in result.stdout.str()
    # ... or --release-version's.
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-v", "--release-var",
                                           f"SHOP_PORT={port}", "--release-version", "9.9.9")
    result.stdout.fnmatch_lines(["*JSON field 'version' is '1.2.3', expected '9.9.9'*"])


@pytest.mark.parametrize("args, message", [
    (["--release-var", "SHOP_PORT"], "*--release-var 'SHOP_PORT': write NAME=VALUE*"),
    ([], "*targets.api.url: variable SHOP_PORT is not set (${var:SHOP_PORT}): give --release-var SHOP_PORT=VALUE*"),
])
def test_a_missing_or_malformed_variable_is_a_clear_error(pytester: pytest.Pytester, write_plan: PlanWriter,
                                                           args: list[str], message: str) -> None:
    write_plan(_health_plan("http://127.0.0.1:${var:SHOP_PORT}", "5"))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_a_secret_in_a_plan_error_is_masked_in_its_escaped_forms(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  write_plan: PlanWriter) -> None:
    secret = "pw'with\\back-slash"
    monkeypatch.setenv("SHOP_PASSWORD", secret)
    write_plan(_health_plan("http://127.0.0.1:9", '"${env:SHOP_PASSWORD}"'))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = (result.stdout.str() + result.stderr.str()).encode()
    assert b"strategy.gates[0].timeout" in text
    assert [what for needle, what in needles(secret).items() if needle in text] == []
