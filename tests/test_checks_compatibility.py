"""compatibility against real config files of two releases and a real service's /version."""

from __future__ import annotations

from pathlib import Path

from helpers import run_check


def _files(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)


PREVIOUS = {
    "prev/app.yaml": "service: {name: shop, port: 8080}\ndb: {path: var/app.db, pool: 5}\nfeatures: [a]\n",
    "prev/flags.json": '{"checkout": true, "timeout": 2}\n',
}


def test_added_keys_are_compatible(tmp_path: Path) -> None:
    _files(tmp_path, {**PREVIOUS,
                      "conf/app.yaml": "service: {name: shop, port: 8080, workers: 4}\n"
                                       "db: {path: var/app.db, pool: 5}\nfeatures: [a, b]\ncache: {ttl: 60}\n",
                      "conf/flags.json": '{"checkout": false, "timeout": 2.5}\n'})
    result = run_check("compatibility", {"files": ["conf/*"]}, tmp_path, previous="prev")
    assert result.passed, result.details
    assert result.measured == {"files": 2, "previous_files": 2, "compared": 2, "breaking": 0, "added": 2}
    assert result.details == ["conf/app.yaml: service.workers: added (number)", "conf/app.yaml: cache: added (object)"]
    assert "compatible with prev (2 file(s) compared, 2 key(s) added)" in result.summary


def test_removed_key_and_changed_type_are_breaking(tmp_path: Path) -> None:
    _files(tmp_path, {**PREVIOUS,
                      "conf/app.yaml": "service: {name: shop, port: '8080'}\nfeatures: [a]\n",
                      "conf/flags.json": '{"checkout": true, "timeout": 2}\n'})
    result = run_check("compatibility", {"files": ["conf/*"]}, tmp_path, previous="prev/*.yaml")
    assert not result.passed
    assert result.measured["breaking"] == 2 and result.measured["compared"] == 1
    assert "conf/app.yaml: service.port: type changed from number to string" in result.details
    assert "conf/app.yaml: db: removed (was object)" in result.details
    assert result.summary.startswith("2 breaking change(s) in 2 config file(s): conf/app.yaml: ")


def test_removed_file_is_breaking(tmp_path: Path) -> None:
    _files(tmp_path, {**PREVIOUS, "conf/app.yaml": PREVIOUS["prev/app.yaml"]})
    result = run_check("compatibility", {"files": ["conf/*"]}, tmp_path, previous="prev")
    assert not result.passed and "flags.json: removed (the previous release had prev/flags.json)" in result.summary


def test_no_previous_files_fails(tmp_path: Path) -> None:
    _files(tmp_path, {"conf/app.yaml": "a: 1\n"})
    result = run_check("compatibility", {"files": ["conf/*"]}, tmp_path, previous="nothing-here/*.yaml")
    assert not result.passed and "previous config nothing-here/*.yaml: no file found" in result.summary


def test_schema_of_the_check_or_the_target(tmp_path: Path) -> None:
    _files(tmp_path, {"schema.json": '{"type": "object", "required": ["port"], '
                                     '"properties": {"port": {"type": "integer"}}}',
                      "conf/good.yaml": "port: 8080\n", "conf/bad.yaml": "port: eighty\n"})
    result = run_check("compatibility", {"files": ["conf/*"], "schema": "schema.json"}, tmp_path)
    assert not result.passed
    assert result.details == ["conf/bad.yaml: port: 'eighty' is not of type 'integer'"]
    assert run_check("compatibility", {"files": ["conf/good.yaml"]}, tmp_path, schema="schema.json").passed
    nothing = run_check("compatibility", {"files": ["conf/good.yaml"]}, tmp_path)
    assert not nothing.passed and nothing.summary.startswith("nothing to compare with")


def test_service_version_within_the_specifier(http_url: str, tmp_path: Path) -> None:
    result = run_check("compatibility", {"url": http_url}, tmp_path, version=">=1.0,<2")
    assert result.passed and result.summary == f"{http_url}/version reports version 1.2.3, within >=1.0,<2"
    nested = run_check("compatibility", {"url": http_url}, tmp_path, field="build.version", version="~=1.2")
    assert nested.passed, nested.summary
    assert run_check("compatibility", {"url": http_url}, tmp_path).passed  # any valid version


def test_service_version_too_old_or_missing(server_factory, http_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = f"http://127.0.0.1:{server_factory('insecure')}"
    result = run_check("compatibility", {"url": old}, tmp_path, version=">=1.0,<2")
    assert not result.passed
    assert result.summary == f"{old}/version reports version 0.9.1, outside >=1.0,<2"
    assert result.measured == {"version": "0.9.1"} and result.expected == {"version": ">=1.0,<2"}
    missing = run_check("compatibility", {"url": http_url}, tmp_path, path="/healthz", field="build")
    assert not missing.passed and "no JSON field 'build'" in missing.summary


def test_bad_specifier_is_a_plan_error() -> None:
    from pytest_release.checks import BUILTIN_KINDS

    problem = BUILTIN_KINDS["compatibility"].param_problem({"version": ">>1"}, {"url": "http://x"})  # type: ignore[misc]
    assert problem is not None and "not a PEP 440 version specifier" in problem
