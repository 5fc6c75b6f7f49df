"""The notification dispatcher: route, group, then each group's alerts through the stages.

It follows Alertmanager's model (dispatch/ and notify/), so its behaviour is the one
on-call people expect:

- **route**: each firing or resolved alert goes down the route tree to one or more
  receivers (``routing.Router``, pure); pending alerts are not announced.
- **group wait**: alerts with the same route, receiver and ``group_by`` labels form a
  group. A new group waits ``group_wait`` so that alerts firing together arrive together;
  then it is looked at every ``group_interval``.
- then, at each look, the stages of ``stages.py``: **inhibit** and **silence** leave out
  muted alerts (a ``suppressed`` row says so once); **dedup** sends to an integration only
  when an alert fires that was not announced, an announced one resolved, or
  ``repeat_interval`` passed (what was announced is kept in the notifications log, so a
  restart announces nothing twice); **deliver** runs on the integration's worker
  (``workers.py``: one thread per receiver integration in production, so a receiver that
  hangs delays nothing else); **retry** tries a failed delivery again with exponential
  backoff up to a bound, and one that never gets through is recorded as ``failed`` and
  logged at error level. Nothing is dropped silently.

Notices derived from an alert (a runbook's notice to the agent's owner, ``derive``) live
and die with it: they are muted by its silences, resolved when it resolves, and not sent
to a receiver that already gets the alert itself (one notification per alert per
receiver).

Time is injected: ``process(alerts, now)`` and ``tick(now)`` do everything that is due
at ``now`` and nothing else, so tests drive the clock and the notifier never sleeps:
retries wait for a later ``tick``. ``next_wakeup()`` says when one is due. The public
methods hold a lock, so the evaluator and a webhook receiver may share one notifier.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import NotifyConfig, load_notify_config
from agentwatch.alerts.notify.delivery import Delivery, DeliveryStage, Outcome
from agentwatch.alerts.notify.nflog import (
    BufferedLog,
    NotificationLog,
    NotificationRecord,
    StoreLog,
    delivery_record,
    suppressed_record,
)
from agentwatch.alerts.notify.receivers import Integration, Notification
from agentwatch.alerts.notify.routing import ContactLookup, Router, RouteTarget, catalog_contacts
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.notify.stages import (
    Announced,
    InhibitStage,
    RetryStage,
    SilenceStage,
    needs_update,
    resolved_notice,
)
from agentwatch.alerts.notify.workers import InlineWorkers, Workers
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import CATALOG_FILE

__all__ = [
    "NotificationRecord",
    "Notifier",
    "StoreLog",
    "catalog_contacts",
    "evaluation_sink",
]

log = logging.getLogger(__name__)

# What was announced to a group that no longer exists is forgotten after this long, as
# Alertmanager's notification log forgets (its default retention is 120 h).
SENT_RETENTION = dt.timedelta(days=5)
# How long stopping waits for deliveries still running on their workers.
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Channel:
    """One integration of one receiver; ``name`` is what the log's receiver column says."""

    receiver: str
    name: str
    integration: Integration


@dataclass
class _Group:
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
class _Derived:
    """A notice derived from a parent alert, and the receivers it is not sent to."""

    notice: Alert
    parent: Alert
    skip: frozenset[str]


def _channels(config: NotifyConfig) -> dict[str, list[_Channel]]:
    """Each receiver's integrations, named ``receiver/kind#n`` when it has several."""
    channels: dict[str, list[_Channel]] = {}
    for receiver, integrations in config.receivers.items():
        kinds = [i.kind for i in integrations]
        channels[receiver] = []
        for i, integ in enumerate(integrations):
            name = receiver
            if len(integrations) > 1:
                nth = kinds[:i].count(integ.kind)
                name = f"{receiver}/{integ.kind}" + (f"#{nth}" if nth else "")
            channels[receiver].append(_Channel(receiver, name, integ))
    return channels


class Notifier:
    """Turns alert transitions into notifications; see the module doc for the stages."""

    def __init__(
        self,
        config: NotifyConfig,
        *,
        log_sink: NotificationLog | None = None,
        silences: SilenceStore | None = None,
        contact_lookup: ContactLookup | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config.route, list(config.receivers), contact_lookup)
        self.inhibit = InhibitStage(config.inhibit_rules)
        self.silence = SilenceStage(silences)
        self.delivery = DeliveryStage(RetryStage(config.retry), workers or InlineWorkers())
        self.silences = silences
        self._log = BufferedLog(log_sink)
        self.channels = _channels(config)
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._firing: dict[str, Alert] = {}  # every firing alert: the inhibition sources
        self._derived: dict[str, dict[str, _Derived]] = {}  # parent fp -> notice fp -> notice
        self._parent: dict[str, _Derived] = {}  # notice fp -> its derivation
        self._sent: dict[tuple[str, str], Announced] = {}
        self._pruned_at: dt.datetime | None = None

    @property
    def log_sink(self) -> NotificationLog | None:
        """Where notification rows are written (the ``notifications`` table)."""
        return self._log.sink

    @log_sink.setter
    def log_sink(self, sink: NotificationLog | None) -> None:
        self._log.sink = sink

    @classmethod
    def from_files(
        cls,
        config_path: Path,
        data_dir: Path,
        contact_lookup: ContactLookup | None = None,
        workers: Workers | None = None,
    ) -> Notifier:
        """A notifier over a data dir: its silences, and its notifications log (restored)."""
        store = LakeStore(data_dir / CATALOG_FILE)
        store_log = StoreLog(store)
        notifier = cls(
            load_notify_config(config_path, data_dir),
            log_sink=store_log,
            silences=SilenceStore(data_dir),
            contact_lookup=contact_lookup,
            workers=workers,
        )
        notifier.restore(store_log.read())
        return notifier

    def restore(self, records: Iterable[NotificationRecord]) -> None:
        """Resume dedup from the ``sent`` rows of an earlier run's log."""
        for r in sorted(records, key=lambda r: r.ts):
            if r.status != "sent":
                continue
            fps = r.alert_fingerprints
            self._sent[(r.receiver, r.group_key)] = Announced(
                frozenset(fps[: r.firing]), frozenset(fps[r.firing :]), r.ts
            )

    # -- the public surface --------------------------------------------------------------

    def process(self, alerts: Sequence[Alert], now: dt.datetime) -> list[NotificationRecord]:
        """Take alert transitions (pending ones are ignored), then do what is due at ``now``."""
        with self._lock:
            for alert in alerts:
                self._insert(alert, now)
            return self.tick(now)

    def derive(self, parent: Alert, notice: Alert, now: dt.datetime) -> list[NotificationRecord]:
        """Take a firing notice derived from ``parent`` (see the module doc), then tick."""
        with self._lock:
            parent_receivers = {t.receiver for t in self.router.targets(parent.labels)}
            skip = frozenset(
                t.receiver
                for t in self.router.targets(notice.labels)
                if t.receiver in parent_receivers
            )
            for receiver in sorted(skip):
                log.info(
                    "notice not sent: the receiver gets its alert",
                    extra={"receiver": receiver, "rule": notice.rule, "parent": parent.rule},
                )
            derived = _Derived(notice, parent, skip)
            self._derived.setdefault(parent.fingerprint, {})[notice.fingerprint] = derived
            self._parent[notice.fingerprint] = derived
            self._insert(notice, now, skip)
            return self.tick(now)

    def silenced(self, alert: Alert, now: dt.datetime) -> str | None:
        """Why ``alert`` is silenced at ``now`` (the silences naming it), or ``None``."""
        with self._lock:
            return self.silence.reason(alert, now)

    def tick(self, now: dt.datetime) -> list[NotificationRecord]:
        """Retry deliveries and flush groups that are due; return and log what happened."""
        with self._lock:
            records: list[NotificationRecord] = []
            self._collect(now, records)
            self.delivery.resubmit_due(now)
            self._collect(now, records)
            for group in sorted(self._groups.values(), key=lambda g: (g.next_flush, g.key)):
                if group.next_flush <= now:
                    self._flush(group, now, records)
            self._write(records)
            self._prune(now)
            return records

    def next_wakeup(self) -> dt.datetime | None:
        """The earliest moment at which ``tick`` has something to do."""
        with self._lock:
            times = [g.next_flush for g in self._groups.values()]
            retry = self.delivery.next_attempt()
            return min([*times, retry] if retry else times, default=None)

    def close(self, now: dt.datetime) -> list[NotificationRecord]:
        """Stop the workers; record deliveries not done by then as failed: nothing is lost."""
        with self._lock:
            records: list[NotificationRecord] = []
            for outcome in self.delivery.close(now, CLOSE_TIMEOUT_S):
                self._outcome(outcome, now, records)
            self._write(records)
            return records

    @property
    def pending_deliveries(self) -> int:
        """Deliveries waiting for a retry or running on a worker."""
        return self.delivery.pending

    # -- dispatch --------------------------------------------------------------------------

    def _insert(self, alert: Alert, now: dt.datetime, skip: frozenset[str] = frozenset()) -> None:
        if alert.state == "pending":
            return
        fp = alert.fingerprint
        if alert.state == "firing":
            self._firing[fp] = alert
        else:
            self._firing.pop(fp, None)
        derivation = self._parent.get(fp)
        if derivation is not None:
            skip = derivation.skip
        for target in self.router.targets(alert.labels):
            if target.receiver in skip:
                continue
            key = target.group_key(alert.labels)
            group = self._groups.get((target.receiver, key))
            if group is None:
                group = _Group(
                    receiver=target.receiver,
                    key=key,
                    target=target,
                    labels=target.group_labels(alert.labels),
                    next_flush=now + target.group_wait,
                )
                self._groups[(target.receiver, key)] = group
            group.alerts[fp] = alert
        if alert.state == "resolved":
            self._resolve_derived(alert, now)

    def _resolve_derived(self, parent: Alert, now: dt.datetime) -> None:
        """A parent that resolves takes its notices with it, with its value at resolution."""
        for derived in self._derived.pop(parent.fingerprint, {}).values():
            ended = dataclasses.replace(
                derived.notice, state="resolved", ends_at=now, value=parent.value
            )
            self._insert(ended, now)
            self._parent.pop(derived.notice.fingerprint, None)

    def _mute_reason(self, alert: Alert, now: dt.datetime) -> str | None:
        derivation = self._parent.get(alert.fingerprint)
        parent = derivation.parent if derivation is not None else None
        return self.inhibit.reason(alert, self._firing.values()) or self.silence.reason(
            alert, now, parent
        )

    def _prune(self, now: dt.datetime) -> None:
        """Forget old announcements of groups that are gone (at most once an hour)."""
        if self._pruned_at is not None and now - self._pruned_at < dt.timedelta(hours=1):
            return
        self._pruned_at = now
        live = {key for _, key in self._groups}
        self._sent = {
            k: v for k, v in self._sent.items() if k[1] in live or v.ts >= now - SENT_RETENTION
        }

    def _flush(self, group: _Group, now: dt.datetime, records: list[NotificationRecord]) -> None:
        group.next_flush = now + group.target.group_interval
        if group.inflight:
            return  # the last flush is still being delivered; look again next interval
        firing: list[Alert] = []
        resolved: list[Alert] = []
        for alert in sorted(group.alerts.values(), key=lambda a: (a.starts_at, a.fingerprint)):
            fp = alert.fingerprint
            reason = self._mute_reason(alert, now)
            if reason is not None:
                if group.muted.get(fp) != reason:
                    group.muted[fp] = reason
                    records.append(self._suppressed(group, alert, reason, now))
                continue
            group.muted.pop(fp, None)
            (firing if alert.state == "firing" else resolved).append(alert)
        group.flushed_resolved = {fp: a for fp, a in group.alerts.items() if a.state == "resolved"}
        group.flush_ok = True
        firing_fps = frozenset(a.fingerprint for a in firing)
        resolved_fps = frozenset(a.fingerprint for a in resolved)
        for channel in self.channels[group.receiver]:
            send_resolved = channel.integration.send_resolved
            wanted_resolved = resolved_fps if send_resolved else frozenset()
            sent = self._sent.get((channel.name, group.key))
            repeat = group.target.repeat_interval
            if not needs_update(sent, firing_fps, wanted_resolved, send_resolved, repeat, now):
                continue
            alerts = firing + ([resolved_notice(a) for a in resolved] if send_resolved else [])
            if not alerts:  # only resolved alerts, and this integration skips them
                self._sent[(channel.name, group.key)] = Announced(frozenset(), frozenset(), now)
                continue
            notification = Notification(
                receiver=group.receiver,
                group_key=group.key,
                group_labels=dict(group.labels),
                alerts=tuple(alerts),
                now=now,
                external_url=self.config.external_url,
                generator_url=self.config.generator_url,
            )
            group.inflight += 1
            self.delivery.submit(
                Delivery(
                    id=uuid.uuid4().hex[:16],
                    channel=channel.name,
                    integration=channel.integration,
                    notification=notification,
                    firing=firing_fps,
                    resolved=wanted_resolved,
                    group=group,
                )
            )
            self._collect(now, records)
        if group.inflight == 0:
            self._settle(group)

    # -- deliver and retry -----------------------------------------------------------------

    def _collect(self, now: dt.datetime, records: list[NotificationRecord]) -> None:
        """Record what the workers finished: announced, or failed for good."""
        for outcome in self.delivery.collect(now):
            self._outcome(outcome, now, records)

    def _outcome(
        self, outcome: Outcome, now: dt.datetime, records: list[NotificationRecord]
    ) -> None:
        d = outcome.delivery
        group = cast(_Group, d.group)
        record = delivery_record(
            d.notification, d.id, d.channel, group.key, d.attempts, outcome.status, now,
            outcome.error,
        )  # fmt: skip
        records.append(record)
        if outcome.status == "sent":
            self._sent[(d.channel, group.key)] = Announced(d.firing, d.resolved, now)
            log.info(
                "notification sent",
                extra={
                    "receiver": d.channel,
                    "group_key": group.key,
                    "status": d.notification.status,
                    "alerts": len(d.notification.alerts),
                    "attempts": d.attempts,
                },
            )
        else:
            log.error(
                "notification not delivered",
                extra={"receiver": d.channel, "group_key": group.key, "error": outcome.error},
            )
        self._finish(group, ok=outcome.status == "sent")

    def _finish(self, group: _Group, *, ok: bool) -> None:
        group.inflight -= 1
        group.flush_ok = group.flush_ok and ok
        if group.inflight == 0:
            self._settle(group)

    def _settle(self, group: _Group) -> None:
        """After a flush: drop resolved alerts it announced; drop the group once empty."""
        if group.flush_ok:
            for fp, alert in group.flushed_resolved.items():
                if group.alerts.get(fp) is alert:
                    del group.alerts[fp]
                    group.muted.pop(fp, None)
        group.flushed_resolved = {}
        if not group.alerts and self._groups.get((group.receiver, group.key)) is group:
            del self._groups[(group.receiver, group.key)]

    def _suppressed(
        self, group: _Group, alert: Alert, reason: str, now: dt.datetime
    ) -> NotificationRecord:
        log.info(
            "alert muted",
            extra={"receiver": group.receiver, "fingerprint": alert.fingerprint, "reason": reason},
        )
        return suppressed_record(alert, group.receiver, group.key, reason, now)

    def _write(self, records: list[NotificationRecord]) -> None:
        self._log.append(records)


def evaluation_sink(notifier: Notifier) -> Callable[[Evaluation], None]:
    """The evaluator's sink (``Callable[[Evaluation], None]``) that feeds ``notifier``.

    It passes alerts that start firing and firing alerts that resolve (a pending alert
    that cleared was never announced), and calls ``process`` after every evaluation so
    the notifier's timers run. The first evaluation also passes every firing alert: after
    a restart they reach the notifier again, and dedup (resumed from the notifications
    log) keeps those already announced quiet while their resolution is still announced.
    """
    primed = False

    def sink(evaluation: Evaluation) -> None:
        nonlocal primed
        alerts = [
            t.alert
            for t in evaluation.transitions
            if t.alert.state == "firing" or t.resolved_after_firing
        ]
        if not primed:
            primed = True
            seen = {a.fingerprint for a in alerts}
            alerts = [a for a in evaluation.firing if a.fingerprint not in seen] + alerts
        notifier.process(alerts, evaluation.at)

    return sink
