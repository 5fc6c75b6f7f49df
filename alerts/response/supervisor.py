"""The breaker supervisor: one loop for cooldowns, probes, confirmations and escalation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.audit import record_actions
from agentwatch.alerts.response.confirm import (
    DEFAULT_CONFIRM_TIMEOUT_S,
    ConfirmationTracker,
    ProbeVerdict,
)
from agentwatch.alerts.response.control import BreakerControl, Transition
from agentwatch.alerts.response.observations import ObservationSource
from agentwatch.clock import Clock
from agentwatch.processors.store.lake import LakeStore


@dataclass(frozen=True)
class CycleReport:
    """What one supervision cycle did."""

    transitions: list[Transition]
    verdicts: list[ProbeVerdict]
    alerts: list[Alert]
    actions: list[dict[str, Any]]


class BreakerSupervisor:
    """One loop for the control side: cooldowns, probes, confirmations and escalation.

    Call :meth:`cycle` periodically (the evaluator's tick). It learns every breaker
    message from the topic itself, so breakers opened by runbooks, by people or by
    another process are all tracked alike. Alerts go to the notifier; audit rows go to
    the ``actions`` table when a store is given.
    """

    def __init__(
        self,
        control: BreakerControl,
        source: ObservationSource,
        *,
        timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S,
        store: LakeStore | None = None,
        lookback_s: float = 3600.0,
        clock: Clock | None = None,
    ) -> None:
        self.control = control
        self.source = source
        self.store = store
        self.clock: Clock = clock or control.clock
        self.tracker = ConfirmationTracker(self.clock, timeout_s)
        self._since = self.clock() - dt.timedelta(seconds=lookback_s)

    def cycle(self) -> CycleReport:
        transitions = self.control.tick()
        self._learn()
        verdicts = self.tracker.observe(self.source.poll(self._since))
        for verdict in verdicts:
            detail = (
                f"probe {'succeeded' if verdict.ok else 'failed'} in session {verdict.session_id}"
            )
            transitions.append(self.control.probe_result(verdict.key, ok=verdict.ok, detail=detail))
        self._learn()
        alerts = self.tracker.check()
        actions = self.tracker.actions()
        if self.store is not None and actions:
            record_actions(self.store, actions)
        return CycleReport(transitions, verdicts, alerts, actions)

    def _learn(self) -> None:
        for status in self.control.status():
            applied = status.applied
            if applied is not None and not self.tracker.known(applied.message.id):
                self.tracker.expect(applied.message)
