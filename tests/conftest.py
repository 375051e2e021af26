"""Fixtures: real server processes on 127.0.0.1, and plans written into pytester's directory. Plain
functions the tests share are in helpers.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import HERE, Example

# Plans and tests run `python3` and `python` by name: they must be the interpreter running these
# tests (the one with this package installed), never whatever a machine has first on PATH.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
EXAMPLE = HERE.parent / "example_project"
# The runs these tests start must not depend on where the suite runs: pytest prints whole failure
# messages in its short summary when CI or BUILD_NUMBER is set, and pytest-release annotates and
# writes a step summary under GitHub Actions. Whether this is CI is kept for the fixtures that must
# fail (not skip) there; tests that need a CI variable set it themselves.
ON_CI = bool(os.environ.get("CI"))
for _name in ("CI", "BUILD_NUMBER", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE",
              "GITHUB_OUTPUT", "GITHUB_ENV"):
    os.environ.pop(_name, None)
# The hundreds of pytest runs these tests start each import this package through pytest's
# assertion rewriting (it is a plugin); with PYTHONDONTWRITEBYTECODE set (as on some machines,
# this one among them) each run parsed, rewrote and compiled every module again, about a quarter
# of a second a run. The runs may cache their bytecode (in __pycache__, ignored by git).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(scope="session", autouse=True)
def _child_runs_without_hypothesis_plugin() -> Iterator[None]:
    """The pytest runs these tests start go without hypothesis's pytest plugin: installed, it imports
    all of hypothesis in every run's terminal summary (about 1.5 s of CPU a run, more than pytest and
    pytest-release together), though those runs hold no hypothesis test. Set in each worker after its
    own start-up, so this suite's own hypothesis tests keep the plugin."""
    before = os.environ.get("PYTEST_ADDOPTS")
    os.environ["PYTEST_ADDOPTS"] = f"{before or ''} -p no:hypothesispytest".strip()
    yield
    if before is None:
        os.environ.pop("PYTEST_ADDOPTS", None)
    else:
        os.environ["PYTEST_ADDOPTS"] = before


def _start(mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "servers.py"), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


@pytest.fixture(scope="session")
def server_factory() -> Iterator[Callable[[str], int]]:
    """Start a server of a mode from ``servers.py`` (once per mode and session); its port."""
    started: dict[str, tuple[subprocess.Popen[str], int]] = {}

    def get(mode: str) -> int:
        if mode not in started:
            started[mode] = _start(mode)
        return started[mode][1]

    yield get
    for proc, _ in started.values():
        proc.kill()
        proc.wait()


@pytest.fixture
def http_url(server_factory: Callable[[str], int]) -> str:
    return f"http://127.0.0.1:{server_factory('http')}"


@pytest.fixture
def hang_url(server_factory: Callable[[str], int]) -> str:
    return f"http://127.0.0.1:{server_factory('hang')}"


@pytest.fixture
def trickle_url(server_factory: Callable[[str], int]) -> str:
    return f"http://127.0.0.1:{server_factory('trickle')}"


@pytest.fixture
def slow_headers_url(server_factory: Callable[[str], int]) -> str:
    return f"http://127.0.0.1:{server_factory('slow-headers')}"


@pytest.fixture
def write_plan(pytester: pytest.Pytester) -> Callable[..., Path]:
    """Write a plan (dedented YAML) into the pytester directory; its path."""

    def write(text: str, name: str = "release-plan.yaml") -> Path:
        path = pytester.path / name
        path.write_text(textwrap.dedent(text), "utf-8")
        return path

    return write


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Example]:
    """A copy of the example project whose plan uses a free port; the service stopped after."""
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("var", "evidence", "__pycache__"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan = project / "release-plan.yaml"
    plan.write_text(plan.read_text().replace("18080", str(port)))
    # The plan's commands run python3: the one running these tests, with PyYAML.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # The plan's webhook receiver (notify): the example's own, on a free port, as run.sh starts it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        hook_port = sock.getsockname()[1]
    plan.write_text(plan.read_text().replace("18081", str(hook_port)))
    monkeypatch.setenv("SHOP_WEBHOOK_SECRET", "example-test-secret")
    (project / "var").mkdir(exist_ok=True)
    receiver = subprocess.Popen([sys.executable, str(project / "receiver.py"), str(hook_port),
                                 str(project / "var" / "notifications.log")],
                                env={**os.environ, "SHOP_WEBHOOK_SECRET": "example-test-secret"})
    example = Example(project, port)
    example.ctl("init-db")
    example.ctl("deploy", "1.0.0")
    example.ctl("start", "--port", str(port))
    yield example
    subprocess.run([sys.executable, str(project / "ctl.py"), "stop"], capture_output=True)
    receiver.kill()
    receiver.wait()


# -- PostgreSQL: a private server for the session --------------------------------------------------


def _pg_bin() -> Path | None:
    import glob as _glob
    import shutil as _shutil

    found = sorted(_glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = _shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _pg_unavailable(message: str) -> None:
    if ON_CI:
        pytest.fail(f"{message} (CI is set: .ci/run must install PostgreSQL)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL server on 127.0.0.1 and a free port; the DSN of its ``postgres`` database.

    initdb into a fresh directory, run as the ``postgres`` OS user when the tests run as root
    (PostgreSQL refuses root); stopped at the end of the session.
    """
    import os as _os
    import shutil as _shutil
    import socket as _socket
    import tempfile

    try:
        import psycopg  # noqa: F401
    except ImportError:
        _pg_unavailable("psycopg is not installed: pip install -e '.[test]'")
    bindir = _pg_bin()
    if bindir is None:
        _pg_unavailable("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin): "
                        "apt-get install postgresql")
    assert bindir is not None
    base = Path(tempfile.mkdtemp(prefix="pytest-release-pg-"))
    as_root = _os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        _shutil.chown(base, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with _socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = base / "data"

    def run(*argv: str) -> None:
        done = subprocess.run(prefix + list(argv), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
        "--locale=C", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
        "-o", f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off "
              "-c full_page_writes=off -c shared_buffers=16MB -c max_connections=40", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        _shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL server; its DSN."""
    import re as _re

    import psycopg

    name = "t_" + _re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:40] + f"_{time.monotonic_ns() % 10**8}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


# -- Prometheus: a private server per test, scraping the targets it is given ------------------------

PROMETHEUS = Path("/usr/bin/prometheus")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``start(targets, scrape_interval="200ms")``: a private Prometheus (Debian's, /usr/bin/prometheus)
    on 127.0.0.1 and a free port, job ``shop`` scraping ``targets`` (``host:port``); its base URL.

    It answers queries as soon as it is ready (about 0.2 s), but scrapes nothing for about 5 s:
    Prometheus hands new targets to its scrape manager on a fixed 5 s tick, whatever the scrape
    interval. Use :func:`wait_for_data`. Stopped (SIGTERM, then SIGKILL) after the test.
    """
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(f"{PROMETHEUS} is missing: run bash tests/run.sh, which installs Debian's prometheus "
                    "package (or apt-get install prometheus)", pytrace=False)
    started: list[subprocess.Popen[bytes]] = []

    def start(targets: list[str], scrape_interval: str = "200ms") -> str:
        base = tmp_path / f"prometheus-{len(started)}"
        base.mkdir()
        config = base / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "shop", "static_configs": [{"targets": list(targets)}]}],
        }, indent=2))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = base / "prometheus.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={base / 'data'}",
                                     f"--web.listen-address=127.0.0.1:{port}"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with code {proc.returncode} at start-up:\n"
                            f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return url
            except OSError:  # refused while it starts; 503 until the storage is ready
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus on {url} was not ready within 30s:\n"
                            f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
            time.sleep(0.02)

    yield start
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
