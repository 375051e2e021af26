"""Any plan ends in a run or a plan error, never a traceback (property-based, seeded).

Valid plans (the example plan, the source document's sections, the README's plans) are mutated
(keys deleted, duplicated and renamed, values swapped for other types and for hostile scalars:
control characters, ``.inf``, NaN, huge numbers, huge URL ranges; deep nesting, aliases,
truncation, stray characters) and loaded. The property: ``load_plan`` returns a plan whose
every figure is bounded, or raises ``PlanError`` whose every problem reads
``FILE:LINE:COL: path: message``. Any other exception is a bug. A handful of the same plans go
through a real pytest run: exit 4 and no traceback.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from pytest_release.checks import BUILTIN_KINDS
from pytest_release.loader import load_plan
from pytest_release.model import MAX_INSTANCES, Plan
from pytest_release.problems import PlanError
from pytest_release.units import MAX_DURATION

HERE = Path(__file__).parent
ROOT = HERE.parent
PROBLEM = re.compile(r"^(?P<file>[^\n]+?):(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*): (?P<path>[^\n:][^\n]*?): \S")


def _readme_plans() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)
    return [b for b in blocks if re.search(r"^strategy:\n  stages:", b, flags=re.M)]


SEEDS = [(ROOT / "example_project" / "release-plan.yaml").read_text("utf-8"),
         (HERE / "data" / "seed-sections.yaml").read_text("utf-8")
         + 'targets:\n  api: {url: "http://127.0.0.1:{9001..9003}", health: /healthz}\n  db: {sqlite: app.db}\n'
         + '  conf: {files: ["conf/*.yaml"]}\n  dist: {manifest: SHA256SUMS}\n',
         *_readme_plans()]

def _example_kinds() -> dict[str, Any]:
    """The built-in check kinds and the example project's own (its conftest.py's catalogue)."""
    spec = importlib.util.spec_from_file_location("example_conftest", ROOT / "example_project" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {**BUILTIN_KINDS, **{k.name: k for k in module.pytest_release_check_kinds()}}


KINDS = _example_kinds()
SEED_DATA = [yaml.load(seed, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) for seed in SEEDS]
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
ENV = {"PYTEST_RELEASE_FUZZ_TOKEN": "s3cr3t-token-value", "SHOP_WEBHOOK_SECRET": "example-webhook-secret",
       "HOME": "/nonexistent"}

# Text placed verbatim where a placeholder string lands in the dumped YAML.
RAW = {
    "deep-flow-list": "[" * 1000 + "]" * 1000,
    "deep-flow-map": "{a: " * 600 + "1" + "}" * 600,
    "deep-block-map": "\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(200)) + " " * 201 + "x",
    "deep-block-list": "\n  " + "- " * 5000 + "x",
    "undefined-alias": "*nowhere",
    "alias-bomb": "&a [&b [&c [&d [&e [&f [&g [1,1,1,1,1,1,1,1,1,1],*g,*g,*g,*g,*g,*g,*g,*g,*g],*f,*f,*f,*f,*f,*f,"
                  "*f,*f,*f],*e,*e,*e,*e,*e,*e,*e,*e,*e],*d,*d,*d,*d,*d,*d,*d,*d,*d],*c,*c,*c,*c,*c,*c,*c,*c,*c],"
                  "*b,*b,*b,*b,*b,*b,*b,*b,*b]",
    "python-tag": "!!python/object/apply:os.system [true]",
    "merge-key": "{<<: [1, 2]}",
    "binary": "!!binary aGVsbG8=",
    "set": "!!set {a, b}",
}
CONTROL = ["\x00", "\x07", "\x0b", "\x1b", "\x7f", "\x85", "\ufeff", "\ud7ff", "\u2028", "\x0c", "\t", "\r"]
HOSTILE_STRINGS = [
    ".inf", "-.inf", ".nan", "99999999999999999999d", "1e400", "-5s", "0", "0s", "5 parsecs", "",
    "http://127.0.0.1:{1..1000000}", "http://127.0.0.1:{1..10}/{1..10}/{1..100000}", "http://x:{9..1}",
    "${env:PYTEST_RELEASE_FUZZ_TOKEN}", "${env:PYTEST_RELEASE_FUZZ_UNSET}", "a/b", "../../etc/passwd",
    "x" * 300, "health", "command", "validation_gate", "rollback", "é\u202e", "a=b", "a\x00b", "\x07bell",
]
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HOSTILE_STRINGS),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
# Keys whose values the loader interprets (durations, URLs, references, lists it walks): mutations
# aim at them half the time, so hostile values land where they matter.
INTERPRETED = {"timeout", "interval", "window", "retention", "delay", "url", "procedures", "checks", "actions",
               "steps", "targets", "stages", "gates", "metric", "name", "argv", "env", "source", "check"}
DURATIONS = [".inf", float("inf"), float("nan"), "99999999999999999999d", 10**20, 1e300, -5, "-5s", "0s", "367d"]
AIMED = {
    **{key: DURATIONS for key in ("timeout", "interval", "window", "retention", "delay")},
    "url": ["http://127.0.0.1:{1..1000000}", "http://127.0.0.1:{1..10}/{1..10}/{1..100000}", ["http://a:{1..2000}"],
            "http://127.0.0.1:{9..1}", []],
    "name": [None, "x" * 300, "a/b", 7, ["n"], "${env:PYTEST_RELEASE_FUZZ_TOKEN}"],
    "argv": [["a\x00b"], ["x", 7], "x", []],
    "env": [{"A=B": "1"}, {"": "1"}, {"A": "\x00"}, {"A": ["x"]}, ["A=1"]],
}
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.sampled_from(
    ["name", "checks", "steps", "procedures", "url", "timeout", "argv", "env", "x"]), SCALARS, max_size=3))


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _paths(value, prefix + (i,))
    return found


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def mutated_plans(draw: st.DrawFn) -> str:
    data = copy.deepcopy(draw(st.sampled_from(SEED_DATA)))
    raw: dict[str, str] = {}
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        aimed = [p for p in paths if p[-1] in INTERPRETED]
        path = draw(st.sampled_from(aimed if aimed and draw(st.booleans()) else paths))
        parent, key = _get(data, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "replace", "replace", "rename", "raw", "wrap", "copy"]))
        if op == "delete":
            del parent[key]
        elif op == "replace" and key in AIMED and draw(st.booleans()):
            parent[key] = copy.deepcopy(draw(st.sampled_from(AIMED[key])))
        elif op == "replace":
            parent[key] = draw(VALUES)
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["nme", "check", "x", "name", "timeout", 0, True]))] = parent.pop(key)
        elif op == "raw":
            marker = f"__RAW{len(raw)}__"
            raw[marker] = RAW[draw(st.sampled_from(sorted(RAW)))]
            parent[key] = marker
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"x": parent[key]}, [[[[parent[key]]]]]]))
        elif op == "copy":  # a sibling's value in place of this one: wrong shapes in plausible places
            parent[key] = copy.deepcopy(_get(data, draw(st.sampled_from(paths))))
    text = yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True, width=4096)
    for marker, snippet in raw.items():
        text = text.replace(marker, snippet)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(min_value=0, max_value=max(len(lines) - 1, 0)))
        edit = draw(st.sampled_from(["duplicate-line", "control", "truncate", "anchor"]))
        if edit == "duplicate-line" and lines:
            lines.insert(i, lines[i])
        elif edit == "control" and lines:
            at = draw(st.integers(min_value=0, max_value=len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(CONTROL)) + lines[i][at:]
        elif edit == "truncate":
            lines = lines[:i] + ([lines[i][: len(lines[i]) // 2]] if lines else [])
        elif edit == "anchor" and lines and ": " in lines[i]:
            lines[i] = lines[i].replace(": ", ": &x ", 1)
            lines.append("dup: *x\n")
        text = "".join(lines)
    return text


def _assert_bounded(plan: Plan) -> None:
    """A plan that loads holds only figures a run can use: finite, bounded durations, a bounded
    number of instances per target, and an effective plan that serialises."""
    durations = [g.timeout for g in plan.gates] + [t.timeout for t in plan.triggers.values()]
    durations += [p.timeout for p in plan.procedures] + [w.timeout for w in plan.workflows.values()]
    durations += [t for _, t in plan.strategy_gates.values()] + [plan.monitoring_window]
    durations += [m.interval for m in plan.monitors.values()] + [a.window for a in plan.alerts]
    durations += [m.window for m in plan.metrics.values()] + [t.interval for t in plan.tasks]
    for seconds in durations:
        assert math.isfinite(seconds) and 0 <= seconds <= MAX_DURATION, seconds
    for target in plan.targets.values():
        assert len(target.instances()) <= MAX_INSTANCES
    for stage in plan.stages:
        plan.stage_gates(stage)
    json.dumps(plan.effective(), default=str)


def _load(text: str, directory: Path) -> None:
    path = directory / "release-plan.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        plan = load_plan(path, KINDS, env=ENV, display="release-plan.yaml")
    except PlanError as exc:
        event("plan error")
        assert exc.problems, "a PlanError carries at least one problem"
        for problem in exc.problems:
            line = str(problem)
            assert PROBLEM.match(line), f"not FILE:LINE:COL: path: message: {line!r}"
            assert "\n" not in problem.path
            assert "s3cr3t-token-value" not in line
        return
    event("loaded")
    _assert_bounded(plan)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure shows its plan at once
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=mutated_plans())
def test_a_mutated_plan_loads_or_fails_with_positions(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _load(text, Path(directory))


def test_the_seeds_load() -> None:
    """The mutations start from plans that load (else the property says little)."""
    with tempfile.TemporaryDirectory() as directory:
        for seed in SEEDS:
            path = Path(directory) / "release-plan.yaml"
            path.write_text(seed, "utf-8")
            assert isinstance(load_plan(path, KINDS, env=ENV), Plan)


@settings(max_examples=4, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(text=mutated_plans())
def test_a_mutated_plan_in_a_real_run_exits_4_without_a_traceback(pytester: pytest.Pytester, text: str) -> None:
    """The same plans through pytest itself: a broken one stops with exit 4 and its problems,
    each ``FILE:LINE:COL: path: message``, and no traceback."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "release-plan.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            load_plan(path, KINDS, env=ENV, display="release-plan.yaml")
        except PlanError as exc:
            expected = [str(p) for p in exc.problems]
        else:
            assume(False)  # a plan that loads would run: the in-process property covers it
    (pytester.path / "release-plan.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    shutil.copy(ROOT / "example_project" / "conftest.py", pytester.path / "conftest.py")  # its check kind
    with pytest.MonkeyPatch.context() as env:  # the run sees the variables the plan was loaded with
        for name, value in ENV.items():
            env.setenv(name, value)
        result = pytester.runpytest_subprocess("--release-plan", "release-plan.yaml", "-p", "no:cacheprovider")
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, err
    assert "Traceback" not in err + result.stdout.str()
    lines = [line for line in result.stderr.lines if PROBLEM.match(line)]
    assert lines == expected[: len(lines)] and len(lines) == len(expected), (lines, expected)
