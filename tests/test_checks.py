"""The first checks against real things: an HTTP server process, real files, real SQLite
databases, real subprocesses. Each is made to pass and made to fail."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_check

# -- health -------------------------------------------------------------------------------------


def test_health_passes_on_status_json_and_body(http_url: str, tmp_path: Path) -> None:
    result = run_check("health", {"url": http_url, "health": "/healthz"}, tmp_path,
                       json={"status": "ok", "checks.db": "up"}, contains='"version"')
    assert result.passed, result.summary
    assert result.measured["status"] == 200 and result.measured["json.status"] == "ok"


def test_health_fails_on_status_with_measured_and_expected(http_url: str, tmp_path: Path) -> None:
    result = run_check("health", {"url": http_url}, tmp_path, path="/fail")
    assert not result.passed
    assert result.summary == f"GET {http_url}/fail answered 503, expected 200"
    assert result.measured["status"] == 503 and result.expected == {"status": 200}
    assert any("database unreachable" in d for d in result.details)


def test_health_fails_on_json_field(http_url: str, tmp_path: Path) -> None:
    result = run_check("health", {"url": http_url}, tmp_path, path="/healthz", json={"version": "2.0.0"})
    assert not result.passed
    assert "JSON field 'version' is '1.2.3', expected '2.0.0'" in result.summary


def test_health_accepts_a_list_of_statuses(http_url: str, tmp_path: Path) -> None:
    assert run_check("health", {"url": http_url}, tmp_path, path="/fail", status=[200, 503]).passed


def test_health_refused_connection(tmp_path: Path, free_port: int) -> None:
    result = run_check("health", {"url": f"http://127.0.0.1:{free_port}"}, tmp_path)
    assert not result.passed and "failed" in result.summary


def test_health_retries_until_the_budget_runs_out(tmp_path: Path, free_port: int) -> None:
    started = time.monotonic()
    result = run_check("health", {"url": f"http://127.0.0.1:{free_port}"}, tmp_path, budget=1.0,
                       retries=100, delay="200ms")
    took = time.monotonic() - started
    assert not result.passed
    assert 2 <= result.measured["attempts"] <= 6
    assert took < 1.5
    assert "attempts" in result.summary


def test_health_retry_succeeds_when_the_service_comes_up(tmp_path: Path, free_port: int) -> None:
    import subprocess
    import sys

    later = subprocess.Popen([sys.executable, "-c",
                              "import time, http.server as h; time.sleep(0.6); "
                              f"h.ThreadingHTTPServer(('127.0.0.1', {free_port}), h.SimpleHTTPRequestHandler)"
                              ".serve_forever()"], cwd=tmp_path)
    try:
        result = run_check("health", {"url": f"http://127.0.0.1:{free_port}"}, tmp_path, budget=10,
                           retries=50, delay="100ms")
    finally:
        later.kill()
        later.wait()
    assert result.passed, result.summary
    assert result.measured["attempts"] > 1


def test_health_tcp(http_url: str, tmp_path: Path, free_port: int) -> None:
    assert run_check("health", {"tcp": http_url.removeprefix("http://")}, tmp_path).passed
    closed = run_check("health", {"tcp": f"127.0.0.1:{free_port}"}, tmp_path)
    assert not closed.passed and "TCP connect" in closed.summary


def test_health_hang_stops_at_the_budget(hang_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check("health", {"url": hang_url}, tmp_path, budget=0.5)
    assert not result.passed
    assert time.monotonic() - started < 1.5
    assert "gave no answer" in result.summary and "the 500ms budget of gate pre_release::g ran out" in result.summary


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTPS server for 127.0.0.1 with a certificate from a CA the test makes; (url, CA file)."""
    import subprocess
    import sys

    import trustme

    base = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(base / "server.pem"))
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "servers.py"), "https",
                             str(base / "server.pem"), str(base / "server.pem")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield f"https://127.0.0.1:{port}", base / "ca.pem"
    proc.kill()
    proc.wait()


def test_health_https_verifies_the_certificate(https_server: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = https_server
    trusted = run_check("health", {"url": url, "ca": str(ca)}, tmp_path, path="/healthz")
    assert trusted.passed, trusted.summary
    untrusted = run_check("health", {"url": url}, tmp_path, path="/healthz")
    assert not untrusted.passed and "CERTIFICATE_VERIFY_FAILED" in untrusted.summary
    unverified = run_check("health", {"url": url, "verify_tls": False}, tmp_path, path="/healthz")
    assert unverified.passed


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- syntax -------------------------------------------------------------------------------------


def _write(base: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")


def test_syntax_passes_on_every_format(tmp_path: Path) -> None:
    _write(tmp_path, {"conf/a.yaml": "a: 1\n", "conf/b.json": '{"b": [1]}', "conf/c.toml": "c = 1\n",
                      "conf/d.ini": "[s]\nk = v\n"})
    result = run_check("syntax", {"files": ["conf/*"]}, tmp_path)
    assert result.passed, result.details
    assert result.measured == {"files": 4, "errors": 0}


@pytest.mark.parametrize(("name", "content", "where"), [
    ("bad.yaml", "a: 1\nb: [1\n", "conf/bad.yaml:3:1:"),
    ("dup.yaml", "a: 1\na: 2\n", "conf/dup.yaml:2:1: duplicate key 'a'"),
    ("bad.json", '{"a": 1,\n "b": }', "conf/bad.json:2:7: Expecting value"),
    ("bad.toml", "a = 1\nb = \n", "conf/bad.toml:2:"),
    ("bad.ini", "[s]\nk = v\nnot a pair\n", "conf/bad.ini:3:1:"),
    ("nohead.ini", "k = v\n", "conf/nohead.ini:1:1:"),
    ("latin1.yaml", b"a: caf\xe9\n", "conf/latin1.yaml:1:7: not UTF-8"),
])
def test_syntax_errors_name_file_and_line(tmp_path: Path, name: str, content: str | bytes, where: str) -> None:
    _write(tmp_path, {"conf/ok.yaml": "a: 1\n", f"conf/{name}": content})
    result = run_check("syntax", {"files": ["conf/*"]}, tmp_path)
    assert not result.passed
    assert result.measured == {"files": 2, "errors": 1}
    assert result.details[0].startswith(where), result.details


def test_syntax_schema_errors_point_at_the_line(tmp_path: Path) -> None:
    _write(tmp_path, {
        "schema.json": '{"type": "object", "required": ["port"], "properties": {"port": {"type": "integer"}}}',
        "conf/good.yaml": "port: 8080\n",
        "conf/bad.yaml": "name: shop\nport: eighty\n",
        "conf/bad.json": '{\n  "port": "x"\n}\n',
    })
    result = run_check("syntax", {"files": ["conf/*.yaml", "conf/*.json"], "schema": "schema.json"}, tmp_path)
    assert not result.passed
    assert "conf/bad.yaml:2:7: port: 'eighty' is not of type 'integer'" in result.details
    assert "conf/bad.json:2:11: port: 'x' is not of type 'integer'" in result.details
    assert result.measured["errors"] == 2


def test_syntax_no_matching_file_fails(tmp_path: Path) -> None:
    result = run_check("syntax", {"files": ["conf/*.yaml"]}, tmp_path)
    assert not result.passed and result.summary == "no config file matches conf/*.yaml"


# -- integrity ----------------------------------------------------------------------------------


def _manifest(base: Path, files: dict[str, bytes]) -> None:
    lines = []
    for name, data in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (base / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_integrity_manifest_passes(tmp_path: Path) -> None:
    _manifest(tmp_path, {"app.tar": b"x" * 200_000, "lib/a.so": b"abc", "empty": b""})
    result = run_check("integrity", {"manifest": "SHA256SUMS"}, tmp_path)
    assert result.passed and result.measured == {"files": 3, "mismatches": 0, "missing": 0}


def test_integrity_manifest_changed_and_missing_files(tmp_path: Path) -> None:
    _manifest(tmp_path, {"app.tar": b"release 1", "gone": b"x", "lib/a.so": b"abc"})
    (tmp_path / "app.tar").write_bytes(b"release 2")
    (tmp_path / "gone").unlink()
    result = run_check("integrity", {"manifest": "SHA256SUMS"}, tmp_path)
    assert not result.passed
    assert result.measured == {"files": 3, "mismatches": 1, "missing": 1}
    assert any(d.startswith("app.tar: sha256 ") and "(line 1)" in d for d in result.details)
    assert "gone: missing (manifest line 2)" in result.details


def test_integrity_malformed_manifest(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    result = run_check("integrity", {"manifest": "SHA256SUMS"}, tmp_path)
    assert not result.passed and "line 1: not a sha256sum line" in result.summary


def test_integrity_sqlite_ok_and_corrupt(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE INDEX items_name ON items(name)")
    conn.executemany("INSERT INTO items(name) VALUES (?)", [(f"item {i}" * 20,) for i in range(2000)])
    conn.commit()
    conn.close()
    assert run_check("integrity", {"sqlite": "app.db"}, tmp_path).passed
    # Corrupt the index's pages: overwrite bytes in the middle of the file.
    data = bytearray(db.read_bytes())
    page_size = 4096
    for page in range(len(data) // page_size - 3, len(data) // page_size - 1):
        data[page * page_size + 100: page * page_size + 400] = b"\x17" * 300
    db.write_bytes(bytes(data))
    result = run_check("integrity", {"sqlite": "app.db"}, tmp_path)
    assert not result.passed
    assert "integrity_check of app.db" in result.summary


def test_integrity_sqlite_missing_or_not_a_database(tmp_path: Path) -> None:
    missing = run_check("integrity", {"sqlite": "nope.db"}, tmp_path)
    assert not missing.passed and missing.summary == "SQLite database nope.db does not exist"
    (tmp_path / "junk.db").write_bytes(b"this is not a database file at all" * 100)
    junk = run_check("integrity", {"sqlite": "junk.db"}, tmp_path)
    assert not junk.passed and "not a database" in junk.summary


# -- command ------------------------------------------------------------------------------------


def test_command_passes_and_matches_output(tmp_path: Path) -> None:
    result = run_check("command", None, tmp_path, argv=[sys.executable, "-c", "print('schema v42 ok')"],
                       output=r"v\d+ ok")
    assert result.passed and result.measured["exit_code"] == 0


def test_command_exit_code_and_output_fail(tmp_path: Path) -> None:
    result = run_check("command", None, tmp_path, argv=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                       output="ok")
    assert not result.passed
    assert "exited 3, expected 0; output does not match 'ok'" in result.summary
    assert "boom" in result.details


def test_command_runs_without_a_shell_unless_asked(tmp_path: Path) -> None:
    literal = run_check("command", None, tmp_path, argv=["echo", "$HOME", "&&", "false"], output=r"^\$HOME && false$")
    assert literal.passed, literal.summary
    shell = run_check("command", None, tmp_path, shell="echo one && exit 4", exit_code=4, output="one")
    assert shell.passed, shell.summary


def test_command_cwd_and_env(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    result = run_check("command", None, tmp_path, cwd="sub", env={"RELEASE": "1.2"},
                       argv=[sys.executable, "-c", "import os; print(os.getcwd(), os.environ['RELEASE'])"],
                       output=r"sub 1\.2")
    assert result.passed, result.details


def test_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check("command", None, tmp_path, budget=0.5, shell="sleep 30 & sleep 30")
    assert time.monotonic() - started < 2
    assert not result.passed and "did not finish" in result.summary


def test_command_not_found(tmp_path: Path) -> None:
    result = run_check("command", None, tmp_path, argv=["no-such-program-xyz"])
    assert not result.passed and "could not start" in result.summary
