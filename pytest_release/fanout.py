"""Fan-out: the target checks of a gate run concurrently, each still its own pytest item.

When the first item of a gate starts, the checks of all the gate's target items that this
process will run are started on a pool of daemon threads (at most the gate's ``concurrency`` at
once). Each item then takes its own result in its turn, so verdicts, reports and evidence stay
per item, while the wall time is that of the slowest checks, not of their sum. HTTP checks share
one keep-alive pool (urllib3). Checks without a target (``command``) are never started early:
they may change things, and run exactly when their item does.

Under pytest-xdist a worker does not know in advance which items it will be sent, so there the
parallelism is the workers'; each item runs its own check.

Readiness: a gate's readiness checks (``ready: true``, or a first check with ``retries``) run on
their own, first; the gate's other checks start (and fan out) only after them. When one failed,
each other check fails at once with "not run: the service never became ready" (under xdist it
waits, within the gate's budget, for the readiness verdict from whichever worker runs it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .checks import CheckResult

if TYPE_CHECKING:
    from .runstate import RunState

__all__ = ["Fanout"]


class Fanout:
    """Starts the checks of a gate's items early, and hands each item its result."""

    def __init__(self) -> None:
        self._futures: dict[str, Future[Any]] = {}
        self._started: set[tuple[str, str]] = set()
        self._ready: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def start(self, gate_key: tuple[str, str], jobs: Sequence[tuple[str, Callable[[], Any]]], limit: int) -> None:
        """Run ``jobs`` (node id, callable) on at most ``limit`` daemon threads, once per gate."""
        with self._lock:
            if gate_key in self._started:
                return
            self._started.add(gate_key)
            work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
            for nodeid, job in jobs:
                future: Future[Any] = Future()
                self._futures[nodeid] = future
                work.put((future, job))
        for _ in range(min(limit, len(jobs))):
            threading.Thread(target=_drain, args=(work,), name="pytest-release-fanout", daemon=True).start()

    def started(self, gate_key: tuple[str, str]) -> bool:
        with self._lock:
            return gate_key in self._started

    def not_ready(self, gate_id: str, ready: Callable[[], list[str]], state: RunState,
                  max_wait: float) -> Future[Any] | None:
        """For a check of gate ``gate_id`` that is not a readiness check: a finished future with
        its failure when a readiness check of the gate (node ids from ``ready()``, asked once per
        gate) failed; ``None`` when they passed (or none ran: then the check runs as usual)."""
        with self._lock:
            if gate_id not in self._ready:
                self._ready[gate_id] = ready()
            nodeids = self._ready[gate_id]
        if not nodeids:
            return None
        failure, _ = state.earlier_failure(f"{gate_id}::ready", nodeids, max_wait)
        if failure is None:
            return None
        future: Future[Any] = Future()
        future.set_result(CheckResult(False, f"not run: the service never became ready "
                                             f"({failure.nodeid.rpartition('::')[2]} failed: {failure.summary})",
                                      {"run": False}, {"ready": True}))
        return future

    def take(self, nodeid: str) -> Future[Any] | None:
        """The future of ``nodeid``'s check if it was started early (each is taken once)."""
        with self._lock:
            return self._futures.pop(nodeid, None)


def _drain(work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]]) -> None:
    while True:
        try:
            future, job = work.get_nowait()
        except queue.Empty:
            return
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(job())
        except BaseException as exc:  # handed to the item that takes the future
            future.set_exception(exc)
