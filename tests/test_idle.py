"""Free when idle: without a plan, the plugin imports nothing but its entry point and hook specs.

Every project that installs pytest-release pays for what its entry point imports on every pytest
run. These tests list ``sys.modules`` at the very end of real pytest runs (each xdist worker
included) rather than timing them; ``bench/idle.py`` measures the time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from collections.abc import Callable

import pytest

from helpers import plan_with

#: What the plugin may import in a run without a plan.
ALLOWED = {"pytest_release", "pytest_release.plugin", "pytest_release.hookspecs"}

#: Libraries of a release run that no ordinary pytest run needs (with their submodules).
HEAVY = ("yaml", "jsonschema", "urllib3", "cryptography", "sqlite3", "pytest_release.glue", "pytest_release.loader",
         "pytest_release.model", "pytest_release.checks", "pytest_release.recorder", "pytest_release.evidence",
         "pytest_release.redaction", "pytest_release.rollback")

#: Written into each run's directory: every process (controller, each xdist worker) lists the
#: modules it has imported once everything, pytest_unconfigure included, has run.
LISTER = '''\
import os, sys
import pytest

def _list(config):
    name = getattr(config, "workerinput", {}).get("workerid", "controller")
    loaded = config.pluginmanager.hasplugin("release")
    with open(os.path.join(str(config.rootpath), f"modules-{name}.txt"), "w") as out:
        out.write(f"plugin-loaded={loaded}\\n" + "\\n".join(sorted(sys.modules)))

# Listed once configured (an xdist worker ended early on a loaded machine still leaves its list),
# then again at the end, which replaces it (what the whole run imported).
@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    _list(config)

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    _list(config)
'''

INI = {
    "no ini": "",
    # release_* keys without release_plan leave the run idle.
    "release keys but no plan": "[pytest]\nrelease_stages = pre_release\nrelease_time_scale = 0.5\n"
                                "release_evidence_dir = elsewhere\n",
}

RUNS = {
    "plain": [],
    "collect-only": ["--collect-only"],
    "xdist": ["-n", "2"],
    "options of the plugin": ["--release-stage", "pre_release", "--release-time-scale", "0.1"],
    "help": ["--help"],
}


def _listed(directory: Path) -> dict[str, tuple[bool, set[str]]]:
    found = {}
    for path in directory.glob("modules-*.txt"):
        first, _, rest = path.read_text().partition("\n")
        found[path.stem.removeprefix("modules-")] = (first == "plugin-loaded=True", set(rest.split("\n")))
    return found


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY)))


@pytest.mark.parametrize("ini", INI.values(), ids=INI.keys())
@pytest.mark.parametrize("args", RUNS.values(), ids=RUNS.keys())
def test_no_plan_imports_nothing_heavy(pytester: pytest.Pytester, args: list[str], ini: str) -> None:
    pytester.makeconftest(LISTER)
    if ini:
        pytester.makeini(ini)
    pytester.makepyfile(test_unit="def test_one():\n    assert 1\n\ndef test_two():\n    assert 1\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    listed = _listed(pytester.path)
    # Each worker lists its modules as it unconfigures; xdist may end a worker before it has
    # written them, so the controller and at least one worker (every one that listed is checked).
    assert "controller" in listed and (len(set(listed) & {"gw0", "gw1"}) >= 1 if "-n" in args else len(listed) == 1)
    for process, (loaded, modules) in listed.items():
        assert loaded, f"{process}: the plugin was not loaded, so this run proves nothing"
        assert _heavy(modules) == [], f"{process} imported them without a plan"
        assert {m for m in modules if m.startswith("pytest_release")} == ALLOWED, process


@pytest.mark.parametrize("given", ["flag", "ini key"])
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_plan_loads_the_glue(pytester: pytest.Pytester, write_plan: Callable[..., Path],
                               given: str, workers: list[str]) -> None:
    """The counterpart: a plan, by flag or ini key, loads the glue in every process and runs."""
    pytester.makeconftest(LISTER)
    write_plan(plan_with(f"""\
        - name: tools
          checks: [{{command: {{argv: ['{sys.executable}', -c, "print('ok')"], output: ok, name: probe}}}}]
        """))
    args = ["--release-plan", "release-plan.yaml"] if given == "flag" else []
    if given == "ini key":
        pytester.makeini("[pytest]\nrelease_plan = release-plan.yaml\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, *workers)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["pytest-release *: shop 1.0.0 from release-plan.yaml *", "*1 passed*"])
    assert list((pytester.path / "evidence" / "release").glob("runs/*/junit.xml")), "the default reports moved"
    listed = _listed(pytester.path)
    assert "controller" in listed and (len(set(listed) & {"gw0", "gw1"}) >= 1 if workers else len(listed) == 1)
    for process, (_, modules) in listed.items():
        assert {"yaml", "jsonschema", "pytest_release.glue", "pytest_release.loader", "pytest_release.model",
                "pytest_release.checks"} <= modules, process


def test_public_names_load_on_first_use(tmp_path: Path) -> None:
    """``import pytest_release`` is cheap; each public name still loads (from the module that
    defines it), ``from pytest_release import *`` too, and a wrong name is an AttributeError."""
    script = textwrap.dedent(f"""\
        import importlib, sys
        import pytest_release
        heavy = {HEAVY!r}
        assert not [m for m in sys.modules if m.split(".")[0] in heavy or m in heavy], "eager import"
        for name in pytest_release.__all__:
            value = getattr(pytest_release, name)
            if name != "__version__":
                module = importlib.import_module(pytest_release._LAZY[name], "pytest_release")
                assert value is getattr(module, name), name
        assert set(pytest_release._LAZY) | {{"__version__"}} == set(pytest_release.__all__)
        assert set(pytest_release.__all__) <= set(dir(pytest_release))
        namespace = {{}}
        exec("from pytest_release import *", namespace)
        assert set(pytest_release.__all__) <= set(namespace)
        from pytest_release import CheckKind, StepResult
        try:
            pytest_release.NoSuchName
        except AttributeError as exc:
            assert "NoSuchName" in str(exc)
        else:
            raise AssertionError("no AttributeError")
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_default_evidence_in_the_help_is_the_plans() -> None:
    from pytest_release import model, plugin

    assert plugin.DEFAULT_EVIDENCE == model.DEFAULT_EVIDENCE
