"""pytest-release: validate software releases with pytest.

A YAML release plan (its ``release``, ``targets``, ``strategy``, ``validation``, ``rollback``,
``monitoring``, ``analytics``, ``automation`` and ``notify`` sections) becomes pytest items, one
per check and target, that run real checks within each gate's budget.

The public names load on first use (``from pytest_release import CheckKind`` works as ever): pytest
imports this package on every run through the plugin's entry point, and a run without a plan must
not pay for the plan loader, the checks and their libraries.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checks import BUILTIN_KINDS, CheckContext, CheckKind, CheckResult, NotBuilt
    from .loader import load_plan
    from .model import Plan
    from .problems import PlanError, Problem
    from .rollback.actions import StepContext, StepResult

__all__ = [
    "BUILTIN_KINDS",
    "CheckContext",
    "CheckKind",
    "CheckResult",
    "NotBuilt",
    "Plan",
    "PlanError",
    "Problem",
    "StepContext",
    "StepResult",
    "__version__",
    "load_plan",
]

#: The package's version: its one source (pyproject.toml reads it from here without importing).
__version__ = "0.1.0"

#: Each public name and the module it comes from.
_LAZY = {
    "BUILTIN_KINDS": ".checks",
    "CheckContext": ".checks",
    "CheckKind": ".checks",
    "CheckResult": ".checks",
    "NotBuilt": ".checks",
    "Plan": ".model",
    "load_plan": ".loader",
    "PlanError": ".problems",
    "Problem": ".problems",
    "StepContext": ".rollback.actions",
    "StepResult": ".rollback.actions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
