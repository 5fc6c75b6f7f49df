"""The stages a group's alerts pass through at each look, as in Alertmanager's notify/.

    group wait -> inhibit -> silence -> dedup (per integration) -> deliver -> retry

A stage (:class:`Stage`) is one small step over the dispatcher's clock-driven state: it
takes the look (``now``, the group and the state it reads) and the alerts so far, and
returns the alerts that go on, or ``None`` to end the chain for this look. It reads no
clock and never sleeps, so tests drive it with any ``now``. The dispatcher
(``notifier.Notifier``) owns the state (groups, what was announced, deliveries in
flight) and composes the chain; deliver (``delivery.py``, on the senders) takes its
output, and retry (:class:`RetryStage`) says when a failed delivery is tried again.
Table-driven tests pin each stage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import InhibitRule, RetryPolicy
from agentwatch.alerts.notify.receivers import DeliveryError
from agentwatch.alerts.notify.routing import RouteTarget, label_set_string
from agentwatch.alerts.notify.silences import SilenceError, SilenceStore

log = logging.getLogger(__name__)

At = TypeVar("At")
At_contra = TypeVar("At_contra", contravariant=True)


class Stage(Protocol[At_contra]):
    """Alertmanager's ``Stage.Exec``: the alerts that go on, or ``None`` to stop here."""

    def exec(self, at: At_contra, alerts: list[Alert], /) -> list[Alert] | None: ...


def run(stages: Iterable[Stage[At]], at: At, alerts: list[Alert]) -> list[Alert] | None:
    """Each stage's output is the next one's input; a stage that says ``None`` ends it."""
    for stage in stages:
        out = stage.exec(at, alerts)
        if out is None:
            return None
        alerts = out
    return alerts


@dataclass
class Group:
    """An aggregation group: one receiver's alerts under one group key, and its timers."""

    receiver: str
    key: str
    target: RouteTarget
    labels: dict[str, str]
    next_flush: dt.datetime
    alerts: dict[str, Alert] = field(default_factory=dict)
    muted: dict[str, str] = field(default_factory=dict)  # fingerprint -> recorded reason
    inflight: int = 0
    flush_ok: bool = True
    flushed_resolved: dict[str, Alert] = field(default_factory=dict)


@dataclass
class Look:
    """One look at one group at ``now``: what the group stages read, and what they muted."""

    now: dt.datetime
    group: Group
    firing: Mapping[str, Alert]  # every firing alert: the inhibition sources
    parents: Mapping[str, Alert]  # a derived notice's fingerprint -> the alert it derives from
    muted: dict[str, str] = field(default_factory=dict)  # fingerprint -> why, this look

    def unmuted(
        self, alerts: Sequence[Alert], reason: Callable[[Alert], str | None]
    ) -> list[Alert]:
        """``alerts`` but those ``reason`` gives a reason for, noted in ``muted`` instead."""
        kept = []
        for alert in alerts:
            why = reason(alert)
            if why is None:
                kept.append(alert)
            else:
                self.muted[alert.fingerprint] = why
        return kept


@dataclass(frozen=True)
class IntegrationLook:
    """The same look for one integration of the receiver, and what it last announced."""

    look: Look
    send_resolved: bool
    sent: Announced | None


class GroupWaitStage:
    """Dispatch's timers: a new group waits ``group_wait``, then looks every ``group_interval``.

    The wait lets alerts that fire together arrive in one notification. A look while the
    last one's deliveries are still running is skipped: the next comes an interval later.
    """

    def first_look(self, target: RouteTarget, now: dt.datetime) -> dt.datetime:
        return now + target.group_wait

    def exec(self, look: Look, alerts: list[Alert]) -> list[Alert] | None:
        group = look.group
        if group.next_flush > look.now:
            return None
        group.next_flush = look.now + group.target.group_interval
        return None if group.inflight else alerts


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

    def exec(self, look: Look, alerts: list[Alert]) -> list[Alert]:
        firing = list(look.firing.values())
        return look.unmuted(alerts, lambda a: self.reason(a, firing))


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

    def exec(self, look: Look, alerts: list[Alert]) -> list[Alert]:
        parents = look.parents
        return look.unmuted(alerts, lambda a: self.reason(a, look.now, parents.get(a.fingerprint)))


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
    """Dedup's decision: does this integration need a notification for this group now?"""
    if sent is None:
        return bool(firing)
    if not firing <= sent.firing:
        return True  # something fires that was not announced
    if not firing:
        return bool(sent.firing)  # everything announced has resolved
    if send_resolved and not resolved <= sent.resolved:
        return True
    return sent.ts + repeat <= now


class DedupStage:
    """Per integration: what it wants of the group, when :func:`needs_update` says so.

    That is the firing alerts, then the resolved ones if the integration sends resolved
    notices; an empty list still goes on (the group is then announced as empty).
    """

    def exec(self, at: IntegrationLook, alerts: list[Alert]) -> list[Alert] | None:
        firing = [a for a in alerts if a.state == "firing"]
        resolved = [a for a in alerts if a.state != "firing"] if at.send_resolved else []
        if not needs_update(
            at.sent,
            frozenset(a.fingerprint for a in firing),
            frozenset(a.fingerprint for a in resolved),
            at.send_resolved,
            at.look.group.target.repeat_interval,
            at.look.now,
        ):
            return None
        return firing + resolved


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
