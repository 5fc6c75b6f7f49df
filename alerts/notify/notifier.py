"""The notification pipeline: route, group, inhibit, silence, dedup, deliver.

It follows Alertmanager's model, so its behaviour is the one on-call people expect:

- **route**: each firing or resolved alert goes down the route tree to one or more
  receivers (``routing.Router``); pending alerts are not announced.
- **group**: alerts with the same route, receiver and ``group_by`` labels form a group.
  A new group waits ``group_wait`` so that alerts firing together arrive together; then
  it is looked at every ``group_interval``.
- **inhibit** and **silence**: at each look, alerts muted by a firing source alert (an
  inhibit rule, e.g. a critical alert mutes warnings for the same agent) or by an active
  silence are left out, and a ``suppressed`` row says so once.
- **dedup**: per receiver integration and group, a notification goes out only when an
  alert fires that was not announced, when an announced alert resolved, or when
  ``repeat_interval`` has passed since the last one. What was announced is kept in the
  ``notifications`` log, so a restart announces nothing twice.
- **deliver**: a failed delivery is retried with exponential backoff up to a bound; one
  that never gets through is recorded with status ``failed`` and its error, and logged
  at error level. It is never dropped silently.

Time is injected: ``process(alerts, now)`` and ``tick(now)`` do everything that is due
at ``now`` and nothing else, so tests drive the clock and the notifier never sleeps:
retries wait for a later ``tick``. ``next_wakeup()`` says when one is due. A notifier is
used from one thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import polars as pl

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import (
    InhibitRule,
    NotifyConfig,
    RetryPolicy,
    load_notify_config,
)
from agentwatch.alerts.notify.receivers import DeliveryError, Integration, Notification
from agentwatch.alerts.notify.routing import (
    CONTACT_FIELDS,
    ContactLookup,
    Router,
    RouteTarget,
    label_set_string,
)
from agentwatch.alerts.notify.silences import SilenceError, SilenceStore
from agentwatch.processors.store.segments import SegmentStore
from agentwatch.processors.store.tables import NOTIFICATIONS_SCHEMA

log = logging.getLogger(__name__)

NotificationStatus = Literal["sent", "failed", "suppressed"]
NOTIFICATIONS_TABLE = "notifications"
# What was announced to a group that no longer exists is forgotten after this long, as
# Alertmanager's notification log forgets (its default retention is 120 h).
SENT_RETENTION = dt.timedelta(days=5)


@dataclass(frozen=True)
class NotificationRecord:
    """One row of the ``notifications`` log.

    ``alert_fingerprints`` lists the firing alerts first, then the resolved ones; the
    ``firing`` count says where the split is, which is what lets dedup resume after a
    restart. For ``suppressed`` rows, ``error`` holds the reason (silence or inhibition).
    """

    ts: dt.datetime
    notification_id: str
    receiver: str
    group_key: str
    status: NotificationStatus
    attempts: int
    alert_fingerprints: tuple[str, ...]
    firing: int
    resolved: int
    error: str | None = None


def records_frame(records: Sequence[NotificationRecord]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [r.ts for r in records],
            "notification_id": [r.notification_id for r in records],
            "receiver": [r.receiver for r in records],
            "group_key": [r.group_key for r in records],
            "status": [r.status for r in records],
            "attempts": [r.attempts for r in records],
            "alert_fingerprints": [json.dumps(list(r.alert_fingerprints)) for r in records],
            "firing": [r.firing for r in records],
            "resolved": [r.resolved for r in records],
            "error": [r.error for r in records],
        },
        schema=NOTIFICATIONS_SCHEMA,
    )


def frame_records(frame: pl.DataFrame) -> list[NotificationRecord]:
    return [
        NotificationRecord(
            ts=row["ts"],
            notification_id=row["notification_id"],
            receiver=row["receiver"],
            group_key=row["group_key"],
            status=row["status"],
            attempts=row["attempts"],
            alert_fingerprints=tuple(json.loads(row["alert_fingerprints"] or "[]")),
            firing=row["firing"],
            resolved=row["resolved"],
            error=row["error"],
        )
        for row in frame.iter_rows(named=True)
    ]


class NotificationLog(Protocol):
    def append(self, records: Sequence[NotificationRecord]) -> None: ...


class StoreLog:
    """The ``notifications`` log table of a data dir (one segment per append)."""

    def __init__(self, store: SegmentStore) -> None:
        self.store = store

    def append(self, records: Sequence[NotificationRecord]) -> None:
        if records:
            self.store.append_log(NOTIFICATIONS_TABLE, records_frame(records))

    def read(self) -> list[NotificationRecord]:
        return frame_records(self.store.read_log(NOTIFICATIONS_TABLE))


@dataclass(frozen=True)
class _Sent:
    """What one integration last announced for one group (Alertmanager's nflog entry)."""

    firing: frozenset[str]
    resolved: frozenset[str]
    ts: dt.datetime


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
class _Delivery:
    id: str
    group: _Group
    channel: _Channel
    notification: Notification
    firing: frozenset[str]
    resolved: frozenset[str]
    next_attempt: dt.datetime
    attempts: int = 0
    last_error: str = ""


def _needs_update(
    sent: _Sent | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    send_resolved: bool,
    repeat: dt.timedelta,
    now: dt.datetime,
) -> bool:
    """Alertmanager's dedup decision for one integration and group."""
    if sent is None:
        return bool(firing)
    if not firing <= sent.firing:
        return True  # something fires that was not announced
    if not firing:
        return bool(sent.firing)  # everything announced has resolved
    if send_resolved and not resolved <= sent.resolved:
        return True
    return sent.ts + repeat <= now


class Notifier:
    """Turns alert transitions into notifications; see the module doc for the stages."""

    def __init__(
        self,
        config: NotifyConfig,
        *,
        log_sink: NotificationLog | None = None,
        silences: SilenceStore | None = None,
        contact_lookup: ContactLookup | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config.route, list(config.receivers), contact_lookup)
        self.retry: RetryPolicy = config.retry
        self.inhibit_rules: list[InhibitRule] = list(config.inhibit_rules)
        self.silences = silences
        self.log_sink = log_sink
        self.channels: dict[str, list[_Channel]] = {}
        for receiver, integrations in config.receivers.items():
            kinds = [i.kind for i in integrations]
            channels = []
            for i, integ in enumerate(integrations):
                name = receiver
                if len(integrations) > 1:
                    nth = kinds[:i].count(integ.kind)
                    name = f"{receiver}/{integ.kind}" + (f"#{nth}" if nth else "")
                channels.append(_Channel(receiver, name, integ))
            self.channels[receiver] = channels
        self._groups: dict[tuple[str, str], _Group] = {}
        self._firing: dict[str, Alert] = {}  # every firing alert: the inhibition sources
        self._sent: dict[tuple[str, str], _Sent] = {}
        self._retrying: list[_Delivery] = []
        self._unlogged: list[NotificationRecord] = []
        self._silence_error: str | None = None
        self._pruned_at: dt.datetime | None = None

    @classmethod
    def from_files(
        cls,
        config_path: Path,
        data_dir: Path,
        contact_lookup: ContactLookup | None = None,
    ) -> Notifier:
        """A notifier over a data dir: its silences, and its notifications log (restored)."""
        store = SegmentStore(data_dir)
        store_log = StoreLog(store)
        notifier = cls(
            load_notify_config(config_path, data_dir),
            log_sink=store_log,
            silences=SilenceStore(data_dir),
            contact_lookup=contact_lookup,
        )
        notifier.restore(store_log.read())
        return notifier

    def restore(self, records: Iterable[NotificationRecord]) -> None:
        """Resume dedup from the ``sent`` rows of an earlier run's log."""
        for r in sorted(records, key=lambda r: r.ts):
            if r.status != "sent":
                continue
            fps = r.alert_fingerprints
            self._sent[(r.receiver, r.group_key)] = _Sent(
                frozenset(fps[: r.firing]), frozenset(fps[r.firing :]), r.ts
            )

    # -- the public surface --------------------------------------------------------------

    def process(self, alerts: Sequence[Alert], now: dt.datetime) -> list[NotificationRecord]:
        """Take alert transitions (pending ones are ignored), then do what is due at ``now``."""
        for alert in alerts:
            self._insert(alert, now)
        return self.tick(now)

    def tick(self, now: dt.datetime) -> list[NotificationRecord]:
        """Retry deliveries and flush groups that are due; return and log what happened."""
        records: list[NotificationRecord] = []
        due, self._retrying = (
            [d for d in self._retrying if d.next_attempt <= now],
            [d for d in self._retrying if d.next_attempt > now],
        )
        for delivery in due:
            self._attempt(delivery, now, records)
        for group in sorted(self._groups.values(), key=lambda g: (g.next_flush, g.key)):
            if group.next_flush <= now:
                self._flush(group, now, records)
        self._write(records)
        self._prune(now)
        return records

    def _prune(self, now: dt.datetime) -> None:
        """Forget old announcements of groups that are gone (at most once an hour)."""
        if self._pruned_at is not None and now - self._pruned_at < dt.timedelta(hours=1):
            return
        self._pruned_at = now
        live = {key for _, key in self._groups}
        self._sent = {
            k: v for k, v in self._sent.items() if k[1] in live or v.ts >= now - SENT_RETENTION
        }

    def next_wakeup(self) -> dt.datetime | None:
        """The earliest moment at which ``tick`` has something to do."""
        times = [g.next_flush for g in self._groups.values()]
        times += [d.next_attempt for d in self._retrying]
        return min(times, default=None)

    def close(self, now: dt.datetime) -> list[NotificationRecord]:
        """Record deliveries still waiting for a retry as failed: stopping loses nothing."""
        records = []
        for d in self._retrying:
            error = f"notifier stopped after {d.attempts} attempt(s); last error: {d.last_error}"
            records.append(self._record(d, "failed", now, error))
            log.error(
                "notification not delivered",
                extra={"receiver": d.channel.name, "group_key": d.group.key, "error": error},
            )
        self._retrying = []
        self._write(records)
        return records

    @property
    def pending_deliveries(self) -> int:
        return len(self._retrying)

    # -- stages ----------------------------------------------------------------------------

    def _insert(self, alert: Alert, now: dt.datetime) -> None:
        if alert.state == "pending":
            return
        fp = alert.fingerprint
        if alert.state == "firing":
            self._firing[fp] = alert
        else:
            self._firing.pop(fp, None)
        for target in self.router.targets(alert.labels):
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

    def _mute_reason(self, alert: Alert, now: dt.datetime) -> str | None:
        fp = alert.fingerprint
        for rule in self.inhibit_rules:
            for source in self._firing.values():
                if source.fingerprint != fp and rule.inhibits(source.labels, alert.labels):
                    return (
                        f"inhibited by {source.rule} {label_set_string(source.labels)} "
                        f"({source.fingerprint})"
                    )
        if self.silences is None:
            return None
        try:
            muting = self.silences.muting(alert.labels, now)
        except SilenceError as exc:
            # Unreadable silences mute nothing: better a notification too many than none.
            if str(exc) != self._silence_error:
                self._silence_error = str(exc)
                log.error("silences unreadable; not muting", extra={"error": str(exc)})
            return None
        self._silence_error = None
        if muting:
            return "silenced by " + ", ".join(s.id for s in muting)
        return None

    def _flush(self, group: _Group, now: dt.datetime, records: list[NotificationRecord]) -> None:
        group.next_flush = now + group.target.group_interval
        if group.inflight:
            return  # the last flush is still being retried; look again next interval
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
            if not _needs_update(sent, firing_fps, wanted_resolved, send_resolved, repeat, now):
                continue
            alerts = firing + (resolved if send_resolved else [])
            if not alerts:  # only resolved alerts, and this integration skips them
                self._sent[(channel.name, group.key)] = _Sent(frozenset(), frozenset(), now)
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
            delivery = _Delivery(
                id=uuid.uuid4().hex[:16],
                group=group,
                channel=channel,
                notification=notification,
                firing=firing_fps,
                resolved=wanted_resolved,
                next_attempt=now,
            )
            group.inflight += 1
            self._attempt(delivery, now, records)
        if group.inflight == 0:
            self._settle(group)

    def _attempt(
        self, delivery: _Delivery, now: dt.datetime, records: list[NotificationRecord]
    ) -> None:
        delivery.attempts += 1
        channel = delivery.channel
        retryable = False
        retry_after: float | None = None
        try:
            channel.integration.send(delivery.notification)
        except DeliveryError as exc:
            error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after
        except Exception as exc:  # a bug in an integration must not lose the notification
            log.exception("notification integration crashed", extra={"receiver": channel.name})
            error = f"{type(exc).__name__}: {exc}"
        else:
            self._sent[(channel.name, delivery.group.key)] = _Sent(
                delivery.firing, delivery.resolved, now
            )
            records.append(self._record(delivery, "sent", now))
            log.info(
                "notification sent",
                extra={
                    "receiver": channel.name,
                    "group_key": delivery.group.key,
                    "status": delivery.notification.status,
                    "alerts": len(delivery.notification.alerts),
                    "attempts": delivery.attempts,
                },
            )
            self._finish(delivery, ok=True)
            return
        delivery.last_error = error
        if retryable and delivery.attempts < self.retry.attempts:
            wait = self.retry.delay(delivery.attempts)
            if retry_after is not None:
                wait = max(wait, min(dt.timedelta(seconds=retry_after), self.retry.max_backoff))
            delivery.next_attempt = now + wait
            self._retrying.append(delivery)
            log.warning(
                "notification delivery failed; will retry",
                extra={
                    "receiver": channel.name,
                    "attempt": delivery.attempts,
                    "retry_in_s": wait.total_seconds(),
                    "error": error,
                },
            )
            return
        why = "" if retryable else " (not retryable)"
        final = f"after {delivery.attempts} attempt(s){why}: {error}"
        records.append(self._record(delivery, "failed", now, final))
        log.error(
            "notification not delivered",
            extra={"receiver": channel.name, "group_key": delivery.group.key, "error": final},
        )
        self._finish(delivery, ok=False)

    def _finish(self, delivery: _Delivery, *, ok: bool) -> None:
        group = delivery.group
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

    # -- records ---------------------------------------------------------------------------

    def _record(
        self,
        delivery: _Delivery,
        status: NotificationStatus,
        now: dt.datetime,
        error: str | None = None,
    ) -> NotificationRecord:
        n = delivery.notification
        firing = [a.fingerprint for a in n.firing]
        resolved = [a.fingerprint for a in n.resolved]
        return NotificationRecord(
            ts=now,
            notification_id=delivery.id,
            receiver=delivery.channel.name,
            group_key=delivery.group.key,
            status=status,
            attempts=delivery.attempts,
            alert_fingerprints=(*firing, *resolved),
            firing=len(firing),
            resolved=len(resolved),
            error=error,
        )

    def _suppressed(
        self, group: _Group, alert: Alert, reason: str, now: dt.datetime
    ) -> NotificationRecord:
        log.info(
            "alert muted",
            extra={"receiver": group.receiver, "fingerprint": alert.fingerprint, "reason": reason},
        )
        firing = alert.state == "firing"
        return NotificationRecord(
            ts=now,
            notification_id=uuid.uuid4().hex[:16],
            receiver=group.receiver,
            group_key=group.key,
            status="suppressed",
            attempts=0,
            alert_fingerprints=(alert.fingerprint,),
            firing=int(firing),
            resolved=int(not firing),
            error=reason,
        )

    def _write(self, records: list[NotificationRecord]) -> None:
        if self.log_sink is None:
            return
        pending = self._unlogged + records
        if not pending:
            return
        try:
            self.log_sink.append(pending)
        except Exception:
            # Keep them and try again on the next tick rather than lose the audit trail.
            log.exception("cannot write the notifications log", extra={"rows": len(pending)})
            self._unlogged = pending
        else:
            self._unlogged = []


def catalog_contacts(catalog: Catalog) -> ContactLookup:
    """The catalog's ``owner`` and ``oncall`` of an agent, as receiver names for routing."""

    def lookup(agent_id: str, fieldname: str) -> str | None:
        entry = catalog.get(agent_id)
        if entry is None or fieldname not in CONTACT_FIELDS:
            return None
        value: str = getattr(entry, fieldname)
        return value or None

    return lookup


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
