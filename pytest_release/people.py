"""The people around a release: the pytest glue of notifications, CI annotations and the history.

Registered on the controller only (never on an xdist worker), beside the recorder. It

* installs the run's :class:`notify.Notifier` (the plan's ``notify`` receivers) so that an alert
  that fires, a trigger that fires and a rollback that finishes reach people as they happen; an
  alert fired on an xdist worker reaches the controller in its item's report and is sent then;
* at the end of the session (inside the recorder's ``pytest_sessionfinish``, before the seal)
  writes the run's delivery facts (``runs/RUN_ID/delivery.json``), sends the verdict, waits for
  deliveries still in flight at most the longest receiver timeout, and writes every attempt
  (``runs/RUN_ID/notifications.json``);
* in the terminal summary, prints one line about the notifications and, on GitHub Actions, the
  workflow commands that put failures on the plan's lines (see :mod:`ci`).

The history page is written by :func:`history_after_seal`, which the recorder calls once the run
is sealed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from . import ci, notify
from .delivery import run_facts
from .secrets import redact

__all__ = ["People", "history_after_seal"]


class People:
    def __init__(self, config: pytest.Config, plan: Any, kinds: dict[str, Any], tree: Any, recorder: Any,
                 *, manual: bool) -> None:
        self.config, self.plan, self.kinds, self.tree, self.recorder = config, plan, kinds, tree, recorder
        self.manual = manual
        self.notifier: notify.Notifier | None = None
        self.waited = 0.0
        receivers = getattr(plan, "notify", None) or []
        if receivers:
            self.notifier = notify.Notifier(receivers, release={"name": plan.name, "version": plan.version},
                                            run_id=tree.run_id, plan={"path": plan.display, "sha256": plan.sha256},
                                            secrets=plan.secrets)
            notify.install(self.notifier)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if notify.current() is self.notifier:
            notify.install(None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """An alert fired on an xdist worker (which has no notifier): sent once its report arrives
        (one sent already by this process is not sent again)."""
        if self.notifier is None or report.when != "teardown":
            return
        props = {k: v for k, v in report.user_properties}
        if props.get("release_check") != "monitoring_metric":
            return
        try:
            measured = json.loads(str(props.get("measured") or "{}"))
        except ValueError:
            return
        for alert in measured.get("alerts") or []:
            if isinstance(alert, dict) and alert.get("fired"):
                notify.alert_fired(f"{props.get('release_stage')}::monitoring_gate", alert)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Runs inside the recorder's wrapper: after the verdict is known, before the seal."""
        summary = self.recorder._summary(session)
        rollback = self.recorder.rollback
        facts = run_facts(self.plan, self.tree.run_id, summary, self.recorder.outcomes.values(), rollback,
                          self.recorder.started, time.time(), self.manual,
                          getattr(self.recorder, "rollback_timing", None))
        self.recorder.write(self.tree.run_dir / "delivery.json",
                            {**self.recorder.envelope("delivery"), **facts.as_record()})
        if self.notifier is None:
            return
        failed = [c.nodeid.partition("::")[2] for c in summary.attention() if c.verdict == "failed"]
        text = f"{summary.banner}: {summary.title}"
        if failed:
            text += f"; failed: {', '.join(failed[:5])}" + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        if rollback is not None:
            text += f"; rollback {rollback.trigger}: {rollback.outcome.replace('_', ' ')}"
        self.notifier.emit("verdict", text, {
            "outcome": summary.outcome, "banner": summary.banner, "exit_status": summary.exit_status,
            "stages": [{"name": s.name, "verdict": s.verdict} for s in summary.stages], "failed": failed,
            "rollback": rollback.outcome if rollback else None,
            "time_to_restore_s": facts.as_record()["time_to_restore_s"],
            "evidence": str(self.tree.run_dir)}, key="verdict")
        self.waited = self.notifier.finish()
        self.recorder.write(self.tree.run_dir / "notifications.json",
                            {**self.recorder.envelope("notifications"), **self.notifier.record(),
                             "waited_s": round(self.waited, 3)})

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.notifier is not None:
            line = redact(self.notifier.line(), self.plan.secrets)
            tr.write_line(line, yellow="not delivered" in line)
        if not ci.enabled():
            return
        failed = [r for r in tr.stats.get("failed", []) if _release_report(r)]
        warned = [r for r in tr.stats.get("warned", []) if _release_report(r)]
        for line in ci.report_lines(self.plan, self.kinds, failed, warned, self.recorder.rollback,
                                             cwd=self.config.invocation_params.dir):
            tr.write_line(line)


def _release_report(report: Any) -> bool:
    keys = {k for k, _ in getattr(report, "user_properties", [])}
    return bool(keys & {"release_stage", "release_rollback"})


def history_after_seal(root: Path) -> str:
    """Rewrite the history page after a seal; the line to print (never raises: the history is a
    convenience, and the run's evidence is sealed already)."""
    from .history_page import write_index

    try:
        path = write_index(root)
    except Exception as exc:
        return f"pytest-release: history page not written: {type(exc).__name__}: {exc}"
    return f"pytest-release: history of every sealed run: {path}"
