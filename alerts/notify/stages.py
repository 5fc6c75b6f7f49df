"""The stages a group's alerts pass through at each flush, as in Alertmanager's notify/.

    inhibit -> silence -> (group wait: the dispatcher) -> dedup -> deliver -> retry

Each stage is small and decides from its inputs and ``now`` only; the dispatcher
(``notifier.Notifier``) owns the state (groups, what was announced, deliveries in
flight) and the clock, and calls them in order. Table-driven tests pin each one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import InhibitRule, RetryPolicy
from agentwatch.alerts.notify.receivers import DeliveryError
from agentwatch.alerts.notify.routing import label_set_string
from agentwatch.alerts.notify.silences import SilenceError, SilenceStore

log = logging.getLogger(__name__)


class InhibitStage:
    """Mutes an alert while a firing source alert matches one of the inhibit rules."""

    def __init__(self, rules: Sequence[InhibitRule]) -> None:
        self.rules = tuple(rules)

    def reason(self, alert: Alert, firing: Iterable[Alert]) -> str | None:
        sources = list(firing)
        for rule in self.rules:
            for source in sources:
                if source.fingerprint != alert.fingerprint and rule.inhibits(
                    source.labels, alert.labels
                ):
                    return (
                        f"inhibited by {source.rule} {label_set_string(source.labels)} "
                        f"({source.fingerprint})"
                    )
        return None


class SilenceStage:
    """Mutes an alert an active silence matches, and what derives from a silenced alert.

    A notice derived from an alert (a runbook's notice to the owner) is muted by the
    silences that match either its own labels or its parent's. Unreadable silences mute
    nothing, logged once per distinct error: better a notification too many than none.
    """

    def __init__(self, store: SilenceStore | None) -> None:
        self.store = store
        self._error: str | None = None

    def reason(self, alert: Alert, now: dt.datetime, parent: Alert | None = None) -> str | None:
        if self.store is None:
            return None
        try:
            muting = self.store.muting(alert.labels, now)
            if not muting and parent is not None:
                muting = self.store.muting(parent.labels, now)
        except SilenceError as exc:
            if str(exc) != self._error:
                self._error = str(exc)
                log.error("silences unreadable; not muting", extra={"error": str(exc)})
            return None
        self._error = None
        if muting:
            return "silenced by " + ", ".join(s.id for s in muting)
        return None


@dataclass(frozen=True)
class Announced:
    """What one integration last announced for one group (Alertmanager's nflog entry)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    ts: dt.datetime


def needs_update(
    sent: Announced | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    send_resolved: bool,
    repeat: dt.timedelta,
    now: dt.datetime,
) -> bool:
    """The dedup stage: does this integration need a notification for this group now?"""
    if sent is None:
        return bool(firing)
    if not firing <= sent.firing:
        return True  # something fires that was not announced
    if not firing:
        return bool(sent.firing)  # everything announced has resolved
    if send_resolved and not resolved <= sent.resolved:
        return True
    return sent.ts + repeat <= now


class RetryStage:
    """When to try a failed delivery again, or ``None`` when it has failed for good."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def next_attempt(
        self, attempts: int, error: BaseException, now: dt.datetime
    ) -> dt.datetime | None:
        if not isinstance(error, DeliveryError) or not error.retryable:
            return None
        if attempts >= self.policy.attempts:
            return None
        wait = self.policy.delay(attempts)
        if error.retry_after is not None:
            asked = dt.timedelta(seconds=error.retry_after)
            wait = max(wait, min(asked, self.policy.max_backoff))
        return now + wait


def resolved_notice(alert: Alert) -> Alert:
    """A resolved alert as notifications show it: it says resolved, with its last value.

    The annotations were rendered while it fired (``54.9% of policy checks failed``);
    repeating them under a resolved status reads as if it still failed. The firing
    summary is kept as ``firing_summary``.
    """
    if alert.state != "resolved":
        return alert
    text = f"Resolved: {alert.rule}" + (f" on {alert.agent_id}" if alert.agent_id else "")
    if alert.value is not None:
        text += f"; value at resolution: {alert.value:.4g}"
    annotations = dict(alert.annotations)
    if "summary" in annotations:
        annotations["firing_summary"] = annotations["summary"]
    annotations["summary"] = text
    return dataclasses.replace(alert, annotations=annotations)
