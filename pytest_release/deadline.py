"""Running plain Python (a check, a rollback action) with a hard deadline, outside pytest items.

Checks run as pytest items are stopped by pytest-timeout's signal method. A check judged again
by a rollback's verify, or an action of a rollback, runs on the controller after the test loop:
there it runs in a daemon thread, and the caller stops waiting when the deadline passes (the
thread cannot be killed; it is left behind and cannot hold the process open).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["call_with_deadline"]

T = TypeVar("T")


def call_with_deadline(function: Callable[[], T], timeout: float) -> tuple[bool, T | None, BaseException | None]:
    """``(finished, result, exception)`` of ``function()`` given at most ``timeout`` seconds."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = function()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="pytest-release-deadline", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if thread.is_alive():
        return False, None, None
    return True, box.get("result"), box.get("error")  # type: ignore[return-value]
