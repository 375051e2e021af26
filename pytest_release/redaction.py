"""Where values leave pytest: the run's secrets are masked there, once, not at each message.

Registered in ``pytest_configure`` (on the controller and on every xdist worker) when the plan
holds a secret:

* every report, as it is made and before anything reads it (the terminal, ``-rA``, JUnit XML with
  ``junit_logging``, pytest-html, the evidence recorder; on a worker before it is sent to the
  controller): its long representation (whatever ``--tb``, ``-l``, ``--full-trace`` made of it),
  its sections (captured stdout, stderr and log: urllib3's own debug lines too), its user
  properties and its warning-gate reason;
* the terminal: pytest's terminal reporter writes to ``sys.stdout`` as it was when the reporter
  was created, after this module's ``pytest_configure`` (which runs first): a stream that masks
  whatever is written to it, live logging (``log_cli``) included;
* files: every evidence file, the rollback journal, the history store and the GitHub step
  summary call :func:`~pytest_release.secrets.scrub_bytes` (or its text and value variants).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterable
from typing import Any, TextIO

import pytest

from .secrets import Redactor, activate, active, deactivate, parse_variables

__all__ = ["NAME", "Redaction", "RedactingStream", "install", "plan_variables"]

NAME = "pytest-release-redaction"


class RedactingStream:
    """A text stream that masks the secrets in everything written to it, then passes it on
    (everything else is the wrapped stream's)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(active().text(text))  # the run's secrets now (a signing key may join late)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def scrub_report(report: pytest.TestReport | pytest.CollectReport, redactor: Redactor) -> None:
    """Mask the secrets in everything a report carries that reaches an output."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        report.longrepr = tuple(redactor.text(p) if isinstance(p, str) else p for p in longrepr)  # type: ignore[assignment]
    elif isinstance(longrepr, str):
        report.longrepr = redactor.text(longrepr)
    elif longrepr is not None:
        text = str(longrepr)
        masked = redactor.text(text)
        if masked != text:  # then its text, masked, stands for it (its colours and parts are lost)
            report.longrepr = masked
    report.sections = [(redactor.text(title), redactor.text(content)) for title, content in report.sections]
    if isinstance(report, pytest.TestReport):
        report.user_properties = [(name, _value(value, redactor)) for name, value in report.user_properties]
        reason = getattr(report, "wasxfail", None)
        if isinstance(reason, str):
            report.wasxfail = redactor.text(reason)
        fspath, line, domain = report.location
        report.location = (redactor.text(fspath), line, redactor.text(domain))


def _value(value: object, redactor: Redactor) -> object:
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = str(value)
    masked = redactor.text(text)
    return value if masked == text else masked


class Redaction:
    """The hooks that mask the run's secrets in every report (see the module's docstring); the
    secrets are those active in this process when a report is made (see ``secrets.activate``)."""

    @property
    def redactor(self) -> Redactor:
        return active()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        scrub_report(report, self.redactor)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        report = yield
        scrub_report(report, self.redactor)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller of an xdist run: reports as they arrive from the workers.
        scrub_report(report, self.redactor)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        scrub_report(report, self.redactor)


def install(config: pytest.Config, secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in every output of this run (called again, it adds to them): registers
    :class:`Redaction`, makes them what ``scrub_*`` mask, and puts :class:`RedactingStream` in front of ``sys.stdout`` and
    ``sys.stderr`` (so the terminal reporter, created after this, writes through it)."""
    redactor = activate(secrets)
    if not redactor or config.pluginmanager.has_plugin(NAME):
        return
    config.pluginmanager.register(Redaction(), NAME)
    streams = (sys.stdout, sys.stderr)
    sys.stdout = RedactingStream(sys.stdout)
    sys.stderr = RedactingStream(sys.stderr)

    def restore() -> None:
        if isinstance(sys.stdout, RedactingStream):
            sys.stdout = streams[0]
        if isinstance(sys.stderr, RedactingStream):
            sys.stderr = streams[1]
        deactivate()

    config.add_cleanup(restore)


def plan_variables(config: pytest.Config) -> dict[str, str]:
    """The plain variables for ``${var:NAME}``: the ini key ``release_vars``, then
    ``--release-var`` (the flag wins), and ``release_version`` from ``--release-version``. A name
    not given here is looked up in the environment (see :mod:`pytest_release.yamldoc`)."""
    try:
        variables = parse_variables(config.getini("release_vars"), "release_vars")
        variables.update(parse_variables(config.getoption("release_var") or (), "--release-var"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("release_version"):
        variables["release_version"] = str(config.getoption("release_version"))
    return variables
