"""What must hold after a rollback: how the verify judges each check against the previous release.

A check of a validation gate says it with ``after_rollback`` (else its gate does):

* ``judge``: judged again exactly as written;
* ``skip``: not judged again (it judges the new release only); the verify says so;
* a mapping: these parameters, merged into the written ones (see ``plan.merge_params``), are what
  the previous release must meet (``{version: "==1.0.0"}``, ``{json: {version: 1.0.0}}``).

Without either, a check is judged again without the parameters that pin the *new* release's
version, since the previous release cannot meet them and a correct rollback must not fail on
them: ``compatibility``'s ``version``; in ``json``, every field whose last part ends in
``version`` (``version``, ``build.version``, ``schema_version``) or whose expected value is the
release's version; ``contains`` and ``output`` when they hold the release's version. Everything
else is judged as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import CheckSpec, Gate, merge_params

__all__ = ["Expectation", "after_rollback", "unpin"]


@dataclass(frozen=True)
class Expectation:
    """How the verify judges one check: ``how`` is ``judge``, ``skip``, ``unpinned`` (judged
    without ``dropped``) or ``override``; ``params`` are the parameters it is judged with."""

    how: str
    params: Mapping[str, Any]
    why: str
    dropped: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"after_rollback": self.how, "why": self.why}
        if self.how == "override":
            entry["params"] = dict(self.params)
        if self.dropped:
            entry["dropped"] = list(self.dropped)
        return entry


def after_rollback(gate: Gate, spec: CheckSpec, version: str) -> Expectation:
    """How ``spec`` of ``gate`` is judged after a rollback of release ``version``."""
    given = spec.after_rollback if spec.after_rollback is not None else gate.after_rollback
    source = "" if spec.after_rollback is not None or given is None else f" (gate {gate.name})"
    if given == "skip":
        return Expectation("skip", spec.params, f"after_rollback: skip{source}: it judges the new release only")
    if given == "judge":
        return Expectation("judge", spec.params, f"after_rollback: judge{source}: as written")
    if isinstance(given, Mapping):
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        return Expectation("override", merge_params(spec.params, given),
                           f"after_rollback: the previous release's expectation {shown}")
    params, dropped = unpin(spec.kind, spec.params, version)
    if dropped:
        return Expectation("unpinned", params, f"without {', '.join(dropped)}: it pins the new release's version "
                                               "(the default; say after_rollback: judge to keep it)", tuple(dropped))
    return Expectation("judge", spec.params, "as written")


def unpin(kind: str, params: Mapping[str, Any], version: str) -> tuple[dict[str, Any], list[str]]:
    """``params`` without what pins the release's version, and the names of what was left out."""
    kept = dict(params)
    dropped: list[str] = []
    if kind == "compatibility" and "version" in kept:
        del kept["version"]
        dropped.append("version")
    fields = kept.get("json")
    if isinstance(fields, Mapping):
        left = {}
        for name, want in fields.items():
            if str(name).rpartition(".")[2].lower().endswith("version") or (version and want == version):
                dropped.append(f"json.{name}")
            else:
                left[name] = want
        if left:
            kept["json"] = left
        else:
            del kept["json"]
    for key in ("contains", "output"):
        if version and isinstance(kept.get(key), str) and version in kept[key]:
            del kept[key]
            dropped.append(key)
    return kept, dropped
