"""Unit tests of the pure modules, over generated cases: durations (``units``), the redaction of
JSON-like values and the run's active secrets (``secrets``), the expansion of a target's URL
ranges, a gate's verdict from its checks', and the result every check report carries (``result``). No process, no pytest run: each runs in
milliseconds."""

from __future__ import annotations

import itertools
import json
import math
import re

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_release import secrets
from pytest_release.items import check_properties
from pytest_release.model import MAX_INSTANCES, count_urls, expand_urls
from pytest_release.records import VERDICTS, gate_verdict
from pytest_release.result import ATTRIBUTE, Blocked, Cause, ItemResult, Verdict, json_safe, result_of, verdict_of
from pytest_release.secrets import MASK, MIN_LENGTH, Redactor, redact, redact_value
from pytest_release.units import (DURATION_SCHEMA, FORMAT_CHECKER, MAX_DURATION, THRESHOLD_SCHEMA, format_duration,
                                  parse_duration)

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)
#: A redactor compiles an expression per secret (tens of milliseconds): fewer secrets, each in many places.
FEW = settings(max_examples=20, deadline=None, derandomize=True, database=None)
FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# -- units: durations -----------------------------------------------------------------------------


@FAST
@given(number=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(["", *FACTORS]),
       space=st.sampled_from(["", " "]), pad=st.sampled_from(["", " ", "\t"]))
def test_a_number_with_a_unit_is_that_many_units(number: int, unit: str, space: str, pad: str) -> None:
    seconds = number * FACTORS[unit or "s"]
    text = f"{pad}{number}{space}{unit}{pad}"
    if seconds > MAX_DURATION:
        with pytest.raises(ValueError, match="longer than the longest duration a plan may give, 366d"):
            parse_duration(text)
        return
    assert parse_duration(text) == pytest.approx(seconds)
    jsonschema.validate(text, DURATION_SCHEMA, format_checker=FORMAT_CHECKER)


@FAST
@given(seconds=st.floats(min_value=0, max_value=MAX_DURATION, allow_nan=False))
def test_a_bare_number_is_seconds_and_the_schema_agrees(seconds: float) -> None:
    assert parse_duration(seconds) == seconds
    jsonschema.validate(seconds, DURATION_SCHEMA, format_checker=FORMAT_CHECKER)


@FAST
@given(value=st.one_of(st.floats(max_value=-1e-9), st.integers(max_value=-1)))
def test_a_negative_duration_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, DURATION_SCHEMA, format_checker=FORMAT_CHECKER)


@pytest.mark.parametrize("value", [MAX_DURATION + 1, 10**30, math.inf, "367d", "31622401s", "99999999999999999999d"])
def test_past_the_longest_duration_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="longer than the longest duration"):
        parse_duration(value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, DURATION_SCHEMA, format_checker=FORMAT_CHECKER)


@pytest.mark.parametrize("value", [True, False, None, [], {}, "", "5 minutes", "1e3s", "-5s", "5sec", "s", "1.s",
                                   ".5s", "5ms5", "0x10"])
def test_what_is_not_a_duration_says_so(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


def test_nan_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="is not a number"):
        parse_duration(math.nan)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(math.nan, DURATION_SCHEMA, format_checker=FORMAT_CHECKER)


@FAST
@given(seconds=st.one_of(st.integers(min_value=0, max_value=int(MAX_DURATION)).map(float),
                         st.integers(min_value=1, max_value=999).map(lambda ms: ms / 1000)))
def test_a_formatted_duration_parses_back(seconds: float) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(r"[0-9.e+]+(ms|s|m|h|d)", text), text
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-5)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (0.25, "250ms"), (2.5, "2.5s"), (300, "5m"),
                                               (5400, "90m"), (7200, "2h"), (90 * 86400, "90d")])
def test_format_duration_examples(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("value", "valid"), [(0, True), (1, True), (0.99, True), (-0.01, False), (1.01, False),
                                              ("0.5", False)])
def test_thresholds_are_fractions(value: object, valid: bool) -> None:
    errors = list(jsonschema.Draft202012Validator(THRESHOLD_SCHEMA).iter_errors(value))
    assert (not errors) is valid


# -- secrets: values and the run's active set ------------------------------------------------------

SECRET = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_categories=("Cs",)),
                 min_size=MIN_LENGTH, max_size=30)
PLAIN = st.text(st.sampled_from("xyz 0123.,:"), max_size=20)  # text that cannot hold a fragment of SECRET...
JSONLIKE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), PLAIN),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(PLAIN, inner, max_size=4)),
    max_leaves=12)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *itertools.chain.from_iterable(_strings(v) for v in value.values())]
    if isinstance(value, (list, tuple)):
        return list(itertools.chain.from_iterable(_strings(v) for v in value))
    return []


@FEW
@given(secret=SECRET, value=JSONLIKE, where=st.integers(min_value=0, max_value=5))
def test_a_secret_anywhere_in_a_value_is_masked_and_the_rest_kept(secret: str, value: object, where: int) -> None:
    if any(c in "xyz0123.,: " for c in secret):  # ...unless the secret shares its characters
        secret = "Q" * MIN_LENGTH + secret.translate(str.maketrans("", "", "xyz0123.,: "))
    holder = {"k": [value, f"before {secret} after"], f"key-{secret}": where}
    masked = redact_value(holder, [secret])
    assert all(secret not in s for s in _strings(masked)), masked
    assert masked == {"k": [value, f"before {MASK} after"], f"key-{MASK}": where}
    assert redact_value(holder, []) is holder  # no secrets: the value itself, not a copy


@FEW
@given(secret=SECRET, text=PLAIN)
def test_redact_masks_the_secret_and_only_it(secret: str, text: str) -> None:
    if any(c in "xyz0123.,: " for c in secret):
        secret = "Q" * MIN_LENGTH + secret.translate(str.maketrans("", "", "xyz0123.,: "))
    assert redact(text, [secret]) == text
    assert redact(text + secret + text, [secret]) == text + MASK + text
    assert Redactor([secret]).bytes((text + secret).encode()) == (text + MASK).encode()


def test_the_active_secrets_add_up_until_deactivated() -> None:
    before = secrets.active()
    try:
        secrets.deactivate()
        assert secrets.scrub_text("token-number-one") == "token-number-one"
        secrets.activate(["token-number-one"])
        secrets.activate(["other-secret-two"])
        assert secrets.scrub_text("token-number-one other-secret-two") == f"{MASK} {MASK}"
        assert secrets.scrub_bytes(b"x other-secret-two") == f"x {MASK}".encode()
        assert secrets.scrub_value({"a": ["token-number-one"]}) == {"a": [MASK]}
        secrets.deactivate()
        assert secrets.scrub_text("token-number-one") == "token-number-one"
    finally:
        secrets.deactivate()
        secrets.activate(before.secrets)


# -- URL ranges: a target's instances ---------------------------------------------------------------


def _range(low: int, high: int) -> list[int]:
    return list(range(low, high + 1)) if high >= low else list(range(low, high - 1, -1))


@FAST
@given(low=st.integers(0, 30), high=st.integers(0, 30), low2=st.integers(0, 5), high2=st.integers(0, 5),
       two=st.booleans())
def test_a_range_expands_in_order_and_counts_without_expanding(low: int, high: int, low2: int, high2: int,
                                                               two: bool) -> None:
    url = f"http://node{{{low}..{high}}}:80" + (f"/shard{{{low2}..{high2}}}" if two else "")
    urls = expand_urls(url)
    wanted = [f"http://node{n}:80" + (f"/shard{m}" if two else "")
              for n in _range(low, high) for m in (_range(low2, high2) if two else [None])]
    assert urls == wanted
    assert count_urls(url) == len(urls)
    assert not any("{" in u for u in urls)


@FAST
@given(urls=st.lists(st.sampled_from(["http://a:1", "http://b:{1..3}", "http://c:{2..1}/x"]), max_size=4))
def test_a_list_expands_each_of_its_urls(urls: list[str]) -> None:
    assert expand_urls(urls) == list(itertools.chain.from_iterable(expand_urls(u) for u in urls))
    assert count_urls(urls) == len(expand_urls(urls))


@pytest.mark.parametrize("url", ["http://h:{1..1001}", "http://h{1..100}:{1..11}", ["http://h:{1..600}"] * 2])
def test_more_than_the_most_instances_is_refused_before_expanding(url: str | list[str]) -> None:
    assert count_urls(url) > MAX_INSTANCES
    with pytest.raises(ValueError, match=f"more than {MAX_INSTANCES} instances"):
        expand_urls(url)


def test_counting_a_huge_range_does_not_expand_it() -> None:
    assert count_urls("http://h:{1..1000000000}/{1..1000000000}") == 10**18


@pytest.mark.parametrize("url", ["http://h:80", "http://h:{a..b}", "http://h:{1...3}", "http://h:{1,2}"])
def test_a_url_without_a_range_is_itself(url: str) -> None:
    assert expand_urls(url) == [url] and count_urls(url) == 1


# -- a gate's verdict from its checks' -------------------------------------------------------------


def _expected(verdicts: list[str], required: bool) -> str:
    if "failed" in verdicts or "warning" in verdicts:
        return "failed" if required else "warning"
    return "passed" if "passed" in verdicts else "not_run"


@pytest.mark.parametrize("required", [True, False], ids=["required", "not-required"])
@pytest.mark.parametrize("verdicts", [list(v) for n in range(4) for v in itertools.product(VERDICTS, repeat=n)],
                         ids=lambda v: "+".join(v) or "none")
def test_gate_verdict_over_every_combination_of_up_to_three_checks(verdicts: list[str], required: bool) -> None:
    got = gate_verdict(verdicts, required)
    assert got == _expected(verdicts, required)
    # Order and repetition never matter; a generator is read like a list.
    assert gate_verdict(reversed(verdicts * 2), required) == got
    assert gate_verdict(iter(verdicts), required) == got


def test_a_gate_of_skipped_checks_did_not_run_and_a_failure_outweighs_passes() -> None:
    assert gate_verdict(["skipped"] * 5, True) == "not_run"
    assert gate_verdict(["passed"] * 50 + ["failed"], True) == "failed"
    assert gate_verdict(["passed"] * 50 + ["failed"], False) == "warning"


# -- the result channel: what every check report carries ------------------------------------------

_TEXT = st.text(max_size=12)
_PLAIN = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                      max_leaves=8)
_RESULTS = st.builds(
    ItemResult, stage=_TEXT, gate=_TEXT, check=_TEXT, target=st.none() | _TEXT, required=st.booleans(),
    params=st.dictionaries(_TEXT, _PLAIN, max_size=3), verdict=st.sampled_from(list(Verdict)), summary=_TEXT,
    measured=st.dictionaries(_TEXT, _PLAIN, max_size=3), expected=st.dictionaries(_TEXT, _PLAIN, max_size=3),
    blocked=st.none() | st.builds(Blocked, st.sampled_from(list(Cause)), _TEXT), not_checked=_TEXT,
    ran=st.none() | st.tuples(st.floats(0, 2e9), st.floats(0, 2e9)), lost=_TEXT)
ALWAYS = {"stage", "gate", "check", "target", "required", "params", "verdict"}


@FAST
@given(_RESULTS)
def test_a_result_goes_through_a_report_unchanged_and_without_its_defaults(result: ItemResult) -> None:
    data = result.as_dict()
    assert ItemResult.from_dict(data) == result
    assert ItemResult.from_dict(json.loads(json.dumps(data))) == result  # as xdist sends it
    defaults = ItemResult(stage="", gate="", check="", target=None, required=False)
    left_out = {name for name in ItemResult.__dataclass_fields__ if name not in ALWAYS
                and getattr(result, name) == getattr(defaults, name)}
    assert set(data) == (set(ItemResult.__dataclass_fields__) - left_out)
    # the reports share the result's dicts rather than copies of them
    assert data["params"] is result.params
    assert result_of(type("Report", (), {ATTRIBUTE: data})()) == result
    assert verdict_of(type("Report", (), {ATTRIBUTE: data})()) == result.verdict


@FAST
@given(_RESULTS)
def test_a_passed_check_has_one_property_and_another_all_of_its_figures(result: ItemResult) -> None:
    properties = dict(check_properties(result))
    assert properties["release_verdict"] == result.verdict.value
    if result.verdict == Verdict.PASSED:
        assert list(properties) == ["release_verdict"]
        return
    release = json.loads(properties["release"])
    assert release == json_safe({"stage": result.stage, "gate": result.gate, "check": result.check,
                                 "target": result.target, "required": result.required, "params": result.params,
                                 "summary": result.summary or (result.blocked.reason if result.blocked
                                                               else result.not_checked),
                                 "measured": result.measured,
                                 "expected": result.expected})


class _Odd:
    def __str__(self) -> str:
        return "odd"


_ANY = st.recursive(_PLAIN | st.just(_Odd()) | st.sampled_from(list(Verdict)) | st.floats(),
                    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner)
                                   | st.dictionaries(_TEXT | st.integers() | st.booleans(), inner, max_size=3)),
                    max_leaves=10)


@FAST
@given(_ANY)
def test_json_safe_is_a_json_round_trip(value: object) -> None:
    expected = json.loads(json.dumps(value, default=str))
    got = json_safe(value)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert type(got) is type(expected)
