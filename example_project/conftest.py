"""The shop's own check kind: a complete custom check, validated, collected and reported like a
built-in one. pytest loads this file because `run.sh` runs pytest in this folder."""

from __future__ import annotations

import sqlite3

from pytest_release import CheckContext, CheckKind, CheckResult


def run_catalogue(ctx: CheckContext) -> CheckResult:
    """Is the catalogue sane? Enough items, and no price above a ceiling."""
    assert ctx.target is not None
    db = ctx.path(ctx.target.spec["sqlite"])
    expected = {"min_items": ctx.params.get("min_items", 1), "max_price_cents": ctx.params["max_price_cents"]}
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=max(ctx.remaining(), 0.1))
        with conn:
            items, top = conn.execute("SELECT count(*), coalesce(max(price_cents), 0) FROM items").fetchone()
    except sqlite3.Error as exc:
        return CheckResult(False, f"cannot read the catalogue in {db.name}: {exc}", {}, expected)
    finally:
        conn.close()
    measured = {"items": items, "max_price_cents": top}
    problems = []
    if items < expected["min_items"]:
        problems.append(f"{items} items < {expected['min_items']}")
    if top > expected["max_price_cents"]:
        problems.append(f"highest price {top} cents > {expected['max_price_cents']}")
    if problems:
        return CheckResult(False, "catalogue: " + "; ".join(problems), measured, expected)
    return CheckResult(True, f"catalogue: {items} items, highest price {top} cents", measured, expected)


CATALOGUE = CheckKind(
    name="catalogue",
    judges=frozenset({"datastore"}),
    params={
        "type": "object",
        "additionalProperties": False,
        "required": ["max_price_cents"],
        "properties": {
            "min_items": {"type": "integer", "minimum": 0, "description": "the fewest items the shop sells"},
            "max_price_cents": {"type": "integer", "minimum": 1, "description": "the price ceiling, in cents"},
            "name": {"type": "string"},
        },
    },
    run=run_catalogue,
    description="the shop's catalogue: enough items, no price above a ceiling",
    judges_target=lambda target: "sqlite" in target.spec,
)


def pytest_release_check_kinds() -> list[CheckKind]:
    return [CATALOGUE]
