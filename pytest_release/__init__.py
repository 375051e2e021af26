"""pytest-release: validate software releases with pytest.

A YAML release plan (the source document's strategy, rollback, validation, monitoring,
analytics and automation sections, plus ``release`` and ``targets``) becomes pytest items, one
per check and target, that run real checks within each gate's budget.
"""

from __future__ import annotations

from .checks import BUILTIN_KINDS, CheckContext, CheckKind, CheckResult, NotBuilt
from .plan import Plan, load_plan
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

__version__ = "0.1.0"
