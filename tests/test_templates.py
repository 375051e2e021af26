"""HTML from templates: the release summary and the trends come from Jinja2 templates with
autoescaping (``pytest_release/templates``, package data). Text from a plan, a check or a service
shows as text wherever it lands (element text, attribute values, SVG titles), the rendered content
is what the report showed before, and every template ships in the wheel's package data."""

from __future__ import annotations

import dataclasses
import fnmatch
import html.parser
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_release import analytics, summary
from pytest_release.model import MONITOR, Analysis
from pytest_release.rollback.actions import StepResult
from pytest_release.rollback.runner import RollbackResult, StepOutcome
from pytest_release.yamldoc import Mark

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

#: Text that would be markup, an attribute break-out, an entity or a template if not escaped.
HOSTILE = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "' onmouseover='alert(1)",
           "{{ 7*7 }}{% raw %}", "&amp; &lt;b&gt;"]


class _Parsed(html.parser.HTMLParser):
    """Start tags with their attributes, and the text, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def rows(self) -> str:
        return "".join(self.text)


def _check(name: str = "health[api]", **changes: Any) -> summary.CheckOutcome:
    check = summary.CheckOutcome(
        f"plan.yaml::pre_release::service::{name}", name, "pre_release", "service", "health", "api", True,
        verdict="failed", summary="GET /healthz answered 503, expected 200", message="answered 503",
        measured={"status": 503, "latency_ms": 1.5, "latency_histogram": [[5.0, 3], [10.0, 7], [25.0, 1]],
                  "p50_ms": 4.0, "p95_ms": 9.5, "p99_ms": 20.0},
        expected={"status": 200}, start=10.0, end=10.75, record="records/api.json")
    return dataclasses.replace(check, **changes)


def _monitor(**changes: Any) -> summary.CheckOutcome:
    samples = [{"t_s": 0.5, "source": "probe", "check": "health", "good": True, "summary": "200 in 3ms", "value": None},
               {"t_s": 1.5, "source": "probe", "check": "health", "good": False, "summary": "503", "value": None}]
    alert = {"alert": "health_alert", "fired": True, "at_s": 1.5, "share": 0.5, "threshold": 0.9, "window_s": 2}
    check = summary.CheckOutcome(
        "plan.yaml::post_release::watch::service_health", "service_health", "post_release", "watch", MONITOR, None,
        True, verdict="failed", summary="1 of 2 samples good", measured={"samples_detail": samples, "alerts": [alert]},
        expected={"window_s": 2.0}, start=20.0, end=22.0)
    return dataclasses.replace(check, **changes)


def _summary(**changes: Any) -> summary.RunSummary:
    checks = [_check(), _check("health[web]", verdict="passed")]
    gates = [summary.GateSummary("service", True, 10.0, "failed", checks),
             summary.GateSummary("smoke", False, 5.0, "warning", [_check("smoke", verdict="warning", measured={})])]
    watch = summary.GateSummary("watch", True, 5.0, "failed", [_monitor()])
    steps = [StepOutcome("service_rollback::revert", "service_rollback", "revert", "command", "passed",
                         StepResult(True, "reverted to 1.0.0"), 30.0, 31.25),
             StepOutcome("verify", "rollback", "verify", "verify", "failed", StepResult(False, "1 check still fails"),
                         31.25, 32.0)]
    rollback = RollbackResult("validation_failure", "a required gate failed", ["service_rollback"], "rollback_failed",
                              steps, resumed_from="20261130T000000Z-abcdef")
    run = summary.RunSummary("shop 1.1.0", "rollback_failed",
                             [summary.StageSummary("pre_release", "failed", "a required gate failed", gates),
                              summary.StageSummary("post_release", "failed", "a required gate failed", [watch])],
                             20, rollback)
    return dataclasses.replace(run, **changes)


def _link(check: summary.CheckOutcome) -> str | None:
    return check.record


def _trends(**changes: Any) -> analytics.AnalyticsRun:
    analysis = Analysis("latency_trend", "latency", None, None, 0.1, True, Mark(1, 1))
    series = [analytics.SeriesTrend("health[api].latency_ms", 12.0, 10.0, "higher_is_worse", 0.2, True,
                                    [(0.0, 10.0, 1), (1.0, 11.0, 2), (2.0, 12.0, 1)]),
              analytics.SeriesTrend("health[web].latency_ms", 5.0, None, "higher_is_worse", None, False, [(0.0, 5.0, 1)])]
    outcome = analytics.AnalysisOutcome(analysis, "release 1.0.0", 3, series, ["health[api]"], ["smoke"])
    run = analytics.AnalyticsRun("history.sqlite", [], [outcome])
    return dataclasses.replace(run, **changes)


def _set_check(field: str) -> Callable[[Any], summary.RunSummary]:
    return lambda value: _summary(stages=[summary.StageSummary("pre_release", "failed", "", [
        summary.GateSummary("service", True, 10.0, "failed", [_check(**{field: value})])])])


def _set_monitor(change: Callable[[str], dict[str, Any]]) -> Callable[[str], summary.RunSummary]:
    return lambda text: _summary(stages=[summary.StageSummary("post_release", "failed", "", [
        summary.GateSummary("watch", True, 5.0, "failed", [_monitor(**change(text))])])])


def _set_rollback(**fields: Callable[[str], Any]) -> Callable[[str], summary.RunSummary]:
    def make(text: str) -> summary.RunSummary:
        base = _summary().rollback
        assert base is not None
        return _summary(rollback=dataclasses.replace(base, **{k: f(text) for k, f in fields.items()}))
    return make


def _step(text: str, field: str) -> list[StepOutcome]:
    step = StepOutcome("p::s", "p", "s", "command", "failed", StepResult(False, "failed"), 0.0, 1.0)
    if field == "summary":
        return [dataclasses.replace(step, result=StepResult(False, text))]
    return [dataclasses.replace(step, **{field: text})]


#: Every place plan or check text reaches the summary, as a function of that text.
SUMMARY_FIELDS: dict[str, Callable[[str], summary.RunSummary]] = {
    "plan title": lambda text: _summary(title=text),
    "stage name": lambda text: _summary(stages=[summary.StageSummary(text, "passed", "", [])]),
    "stage reason": lambda text: _summary(stages=[summary.StageSummary("s", "skipped", text, [])]),
    "gate name": lambda text: _summary(stages=[summary.StageSummary("s", "failed", "", [
        summary.GateSummary(text, False, 1.0, "failed", [_check()])])]),
    "check name": _set_check("name"),
    "check stage": _set_check("stage"),
    "check summary": _set_check("summary"),
    "check verdict": _set_check("verdict"),
    "measured value": lambda text: _set_check("measured")({"body": text}),
    "measured key": lambda text: _set_check("measured")({text: 1}),
    "percentile": lambda text: _set_check("measured")({"latency_histogram": [[5, 1]], "p95_ms": text}),
    "expected value": lambda text: _set_check("expected")({"body": text}),
    "record link": _set_check("record"),
    "sample summary": _set_monitor(lambda text: {"measured": {"samples_detail": [
        {"t_s": 1, "check": "c", "good": False, "summary": text}], "alerts": []}}),
    "sample check": _set_monitor(lambda text: {"measured": {"samples_detail": [
        {"t_s": 1, "check": text, "good": True, "summary": "ok"}], "alerts": []}}),
    "alert name": _set_monitor(lambda text: {"measured": {"samples_detail": [
        {"t_s": 1, "check": "c", "good": False, "summary": "bad"}],
        "alerts": [{"alert": text, "fired": True, "at_s": 1, "share": 0.0, "threshold": 0.9, "window_s": 1}]}}),
    "rollback trigger": _set_rollback(trigger=lambda text: text),
    "rollback reason": _set_rollback(reason=lambda text: text),
    "resumed from": _set_rollback(resumed_from=lambda text: text),
    "step key": _set_rollback(steps=lambda text: _step(text, "key")),
    "step action": _set_rollback(steps=lambda text: _step(text, "action")),
    "step summary": _set_rollback(steps=lambda text: _step(text, "summary")),
}


def _set_analysis(**changes: Callable[[str], Any]) -> Callable[[str], analytics.AnalyticsRun]:
    def make(text: str) -> analytics.AnalyticsRun:
        outcome = _trends().analyses[0]
        return _trends(analyses=[dataclasses.replace(outcome, **{k: f(text) for k, f in changes.items()})])
    return make


TRENDS_FIELDS: dict[str, Callable[[str], analytics.AnalyticsRun]] = {
    "store": lambda text: _trends(store=text),
    "store error": lambda text: _trends(error=text),
    "metric error": lambda text: _trends(metrics=[analytics.MetricOutcome(None, {}, text)]),
    "analysis error": _set_analysis(error=lambda text: text),
    "analysis name": _set_analysis(analysis=lambda text: Analysis(text, "m", None, None, 0.1, False, Mark(1, 1))),
    "series": _set_analysis(series=lambda text: [analytics.SeriesTrend(text, 1.0, 2.0, "higher_is_worse", -0.5,
                                                                       False, [(0.0, 1.0, 1)])]),
    "baseline": _set_analysis(baseline=lambda text: text),
    "regressed check": _set_analysis(regressed_checks=lambda text: [text]),
    "flaky check": _set_analysis(flaky_checks=lambda text: [text]),
}


def _assert_shown_as_text(rendered: str, text: str) -> None:
    parsed = _Parsed(rendered)
    injected = [tag for tag, attrs in parsed.tags if tag in ("script", "img")
                or any(name.startswith("on") for name in attrs)]
    assert not injected, f"markup from the text reached the page: {injected}"
    shown = parsed.rows() + "".join(v or "" for _, attrs in parsed.tags for v in attrs.values())
    assert text in shown or text.replace("_", " ") in shown, "the text is not shown as it was written"


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("field", sorted(SUMMARY_FIELDS))
def test_text_in_the_release_summary_is_escaped(field: str, text: str) -> None:
    _assert_shown_as_text(summary.render_html(SUMMARY_FIELDS[field](text), _link), text)


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("field", sorted(TRENDS_FIELDS))
def test_text_in_the_trends_is_escaped(field: str, text: str) -> None:
    _assert_shown_as_text(analytics.trends_html(TRENDS_FIELDS[field](text)), text)


def _rows(rendered: str, table: str | None = None) -> list[list[str]]:
    """The text of each cell of each row (badges and chart titles included), of the table with id
    ``table`` or of every table."""

    class Rows(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.inside = False
            self.rows: list[list[str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table":
                self.inside = table is None or ("id", table) in attrs
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag in ("td", "th") and self.rows:
                self.rows[-1].append("")

        def handle_endtag(self, tag: str) -> None:
            if tag == "table":
                self.inside = False

        def handle_data(self, data: str) -> None:
            if self.inside and self.rows and self.rows[-1]:
                self.rows[-1][-1] += data

    parser = Rows()
    parser.feed(rendered)
    return [[cell.strip() for cell in row] for row in parser.rows]


def test_the_summary_shows_what_the_report_showed() -> None:
    rendered = summary.render_html(_summary(), _link)
    parsed = _Parsed(rendered)
    assert parsed.rows().strip().startswith("ROLLBACK FAILED: shop 1.1.0")
    assert _rows(rendered, "release-stages") == [
        ["stage", "gate", "verdict", "duration", "checks"],
        ["pre_release", "", "failed", "", "a required gate failed"],
        ["", "service", "failed", "0.75s", "1 failed, 1 passed"],
        ["", "smoke (not required)", "warning", "0.75s", "1 warning"],
        ["post_release", "", "failed", "", "a required gate failed"],
        ["", "watch", "failed", "2.00s", "1 failed"]]
    assert _rows(rendered, "release-rollback") == [
        ["step", "action", "verdict", "duration", "summary"],
        ["service_rollback::revert", "command", "passed", "1.25s", "reverted to 1.0.0"],
        ["verify", "verify", "failed", "0.75s", "1 check still fails"]]
    assert _rows(rendered, "release-attention") == [
        ["check", "verdict", "measured", "expected", "summary"],
        ["pre_release::service::health[api]", "failed", "status=503, latency_ms=1.5, p50_ms=4.0, p95_ms=9.5, p99_ms=20.0",
         "status=200", "GET /healthz answered 503, expected 200"],
        ["pre_release::service::smoke", "warning", "-", "status=200", "GET /healthz answered 503, expected 200"],
        ["post_release::watch::service_health", "failed", "-", "window_s=2.0", "1 of 2 samples good"]]
    assert "Rollback: validation_failure (resumed from run 20261130T000000Z-abcdef)" in parsed.rows()
    assert "pre_release::service::health[api]: p50 4.0ms, p95 9.5ms, p99 20.0ms failed" in parsed.rows()
    assert "alert health_alert fired at 1.5s (50.0% good < 90.0% over 2s)" in parsed.rows()
    links = [attrs["href"] for tag, attrs in parsed.tags if tag == "a"]
    assert links == ["records/api.json", "records/api.json"]
    bars = [attrs for tag, attrs in parsed.tags if tag == "rect"]
    assert [b["height"] for b in bars] == ["45.0", "105.0", "15.0"] * 2 and all(b["fill"] == "#4a7fd1" for b in bars)
    dots = [attrs["fill"] for tag, attrs in parsed.tags if tag == "circle"]
    assert dots == ["#1a7f37", "#cf222e"]
    assert [tag for tag, attrs in parsed.tags if tag == "line" and attrs.get("class") == "release-alert"] == ["line"]


def test_the_trends_show_what_the_report_showed() -> None:
    rendered = analytics.trends_html(_trends())
    parsed = _Parsed(rendered)
    headings = [attrs for tag, attrs in parsed.tags if tag == "h4"]
    assert headings == [{"class": "release-analysis", "data-verdict": "regressed"}]
    text = parsed.rows()
    assert "History store: history.sqlite" in text
    assert "failing now, passed in release 1.0.0: health[api]" in text and "flaky in this version: smoke" in text
    polylines = [attrs["points"] for tag, attrs in parsed.tags if tag == "polyline"]
    assert polylines == ["4.0,24.0 70.0,14.0 136.0,4.0", "4.0,14.0"]
    assert _rows(rendered)[1:] == [["health[api].latency_ms", "12", "10", "+20.0%", "3 points, 10 to 12", "regression"],
                        ["health[web].latency_ms", "5", "-", "-", "1 points, 5 to 5", ""]]
    more = analytics.trends_html(_trends(), rows_per_analysis=1)
    assert "and 1 more series in the analysis record" in _Parsed(more).rows()


HOSTILE_PLAN = """\
release: {{name: "<script>alert('plan')</script>", version: 1.0.0}}
strategy:
  stages: [{{name: pre_release}}]
  gates: [{{name: validation_gate, timeout: 30}}]
validation:
  gates:
    - name: checks
      stages: [pre_release]
      checks:
        - command: {{name: "<script>alert('check')</script>", argv: ["{python}", "-c", "{program}"]}}
"""


def test_a_hostile_plan_name_and_check_output_are_text_in_the_report(pytester: pytest.Pytester) -> None:
    """A real run: the plan's name, a check's name and what it printed reach the HTML report as
    text, in the release summary and everywhere else in the page."""
    program = "print('<script>alert(1)</script>'); raise SystemExit(3)"
    (pytester.path / "release-plan.yaml").write_text(HOSTILE_PLAN.format(python=sys.executable, program=program))
    result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    assert result.ret == 1, result.stdout.str()
    evidence = pytester.path / "evidence" / "release"
    report = (evidence / "runs" / (evidence / "LATEST").read_text().strip() / "report.html").read_text("utf-8")
    assert "<script>alert" not in report
    start = report.index('<section id="release-summary"')
    section = report[start:report.index("</section>", start)]
    parsed = _Parsed(section)
    assert not [tag for tag, _ in parsed.tags if tag == "script"]
    assert "BLOCKED: <script>alert('plan')</script> 1.0.0" in parsed.rows()
    assert "pre_release::checks::command[<script>alert('check')</script>]" in parsed.rows()


def _package_data() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    return list(config["tool"]["setuptools"]["package-data"]["pytest_release"])


@pytest.mark.parametrize("pattern", _package_data())
def test_each_package_data_pattern_matches_a_file(pattern: str) -> None:
    package = ROOT / "pytest_release"
    assert list(package.glob(pattern)), f"package-data pattern {pattern!r} matches no file in pytest_release/"


def test_every_data_file_of_the_package_is_package_data() -> None:
    """A template (or any file the package reads that is not Python) that no pattern names would be
    missing from the wheel, and the report would fail only once installed."""
    package = ROOT / "pytest_release"
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "templates/summary.html.j2" in data and "templates/trends.html.j2" in data
    unshipped = [f for f in data if not any(fnmatch.fnmatch(f, pattern) for pattern in _package_data())]
    assert not unshipped


def test_the_version_has_one_source() -> None:
    import pytest_release

    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pytest_release.__version__"}
    assert pytest_release.__version__.count(".") == 2
