"""The notification dispatcher: route, group, then each group's alerts through the stages.

It follows Alertmanager's model (dispatch/ and notify/), so its behaviour is the one
on-call people expect:

- **route**: each firing or resolved alert goes down the route tree to one or more
  receivers (``routing.Router``, pure); pending alerts are not announced.
- **group wait**: alerts with the same route, receiver and ``group_by`` labels form a
  group. A new group waits ``group_wait`` so that alerts firing together arrive together;
  then it is looked at every ``group_interval``.
- then, at each look, the rest of the chain of ``stages.py``: **inhibit** and **silence**
  leave out muted alerts (a ``suppressed`` row says so once); for each integration of the
  receiver, **dedup** sends only when an alert fires that was not announced, an announced
  one resolved, or ``repeat_interval`` passed (what was announced is kept in the
  notifications log, so a restart announces nothing twice); **deliver** runs on the
  integration's sender (``senders.py``: one thread per receiver integration in
  production, so a receiver that hangs delays nothing else); **retry** tries a failed
  delivery again with exponential backoff up to a bound, and one that never gets through
  is recorded as ``failed`` and logged at error level. Nothing is dropped silently.

The chain is composed in one place, ``Notifier.__init__``, group wait being its first
stage; the state the stages decide over (groups, firing alerts, what was announced)
stays here, and each stage is handed it with ``now`` at each look.

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
from dataclasses import dataclass
from pathlib import Path

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import NotifyConfig, load_notify_config
from agentwatch.alerts.notify.delivery import Channel, Delivery, DeliveryStage, Outcome, channels
from agentwatch.alerts.notify.nflog import (
    BufferedLog,
    NotificationLog,
    NotificationRecord,
    StoreLog,
    delivery_record,
    suppressed_record,
)
from agentwatch.alerts.notify.receivers import Notification
from agentwatch.alerts.notify.routing import ContactLookup, Router, catalog_contacts
from agentwatch.alerts.notify.senders import InlineSenders, Senders
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.notify.stages import (
    Announced,
    DedupStage,
    Group,
    GroupWaitStage,
    InhibitStage,
    IntegrationLook,
    Look,
    RetryStage,
    SilenceStage,
    Stage,
    resolved_notice,
    run,
)
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE

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
# How long stopping waits for deliveries still running on their senders.
CLOSE_TIMEOUT_S = 5.0


@dataclass
class _Derived:
    """A notice derived from a parent alert, and the receivers it is not sent to."""

    notice: Alert
    parent: Alert
    skip: frozenset[str]


class Notifier:
    """Turns alert transitions into notifications; see the module doc for the stages."""

    def __init__(
        self,
        config: NotifyConfig,
        *,
        log_sink: NotificationLog | None = None,
        silences: SilenceStore | None = None,
        contact_lookup: ContactLookup | None = None,
        senders: Senders | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config.route, list(config.receivers), contact_lookup)
        self.group_wait = GroupWaitStage()
        self.silence = SilenceStage(silences)
        # The chain, in Alertmanager's order: the group's timers and muting, then for each
        # integration of its receiver dedup; deliver and retry take what comes out.
        self.group_stages: tuple[Stage[Look], ...] = (
            self.group_wait,
            InhibitStage(config.inhibit_rules),
            self.silence,
        )
        self.integration_stages: tuple[Stage[IntegrationLook], ...] = (DedupStage(),)
        self.delivery = DeliveryStage(RetryStage(config.retry), senders or InlineSenders())
        self.silences = silences
        self._log = BufferedLog(log_sink)
        self.channels = channels(config)
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, str], Group] = {}
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
        senders: Senders | None = None,
    ) -> Notifier:
        """A notifier over a data dir: its silences, and its notifications log (restored)."""
        store = LakeStore(data_dir / METADATA_FILE)
        store_log = StoreLog(store)
        notifier = cls(
            load_notify_config(config_path, data_dir),
            log_sink=store_log,
            silences=SilenceStore(data_dir),
            contact_lookup=contact_lookup,
            senders=senders,
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
        """Retry deliveries that are due and look at each group; return and log what happened."""
        with self._lock:
            records: list[NotificationRecord] = []
            self._collect(now, records)
            self.delivery.resubmit_due(now)
            self._collect(now, records)
            parents = {fp: derived.parent for fp, derived in self._parent.items()}
            for group in sorted(self._groups.values(), key=lambda g: (g.next_flush, g.key)):
                self._look(Look(now, group, self._firing, parents), records)
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
        """Stop the senders; record deliveries not done by then as failed: nothing is lost."""
        with self._lock:
            records: list[NotificationRecord] = []
            for outcome in self.delivery.close(now, CLOSE_TIMEOUT_S):
                self._outcome(outcome, now, records)
            self._write(records)
            return records

    @property
    def pending_deliveries(self) -> int:
        """Deliveries waiting for a retry or running on a sender."""
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
                group = Group(
                    receiver=target.receiver,
                    key=key,
                    target=target,
                    labels=target.group_labels(alert.labels),
                    next_flush=self.group_wait.first_look(target, now),
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

    def _prune(self, now: dt.datetime) -> None:
        """Forget old announcements of groups that are gone (at most once an hour)."""
        if self._pruned_at is not None and now - self._pruned_at < dt.timedelta(hours=1):
            return
        self._pruned_at = now
        live = {key for _, key in self._groups}
        self._sent = {
            k: v for k, v in self._sent.items() if k[1] in live or v.ts >= now - SENT_RETENTION
        }

    def _look(self, look: Look, records: list[NotificationRecord]) -> None:
        """The group's alerts through the chain; each integration's share to its sender."""
        group, now = look.group, look.now
        ordered = sorted(group.alerts.values(), key=lambda a: (a.starts_at, a.fingerprint))
        alerts = run(self.group_stages, look, ordered)
        if alerts is None:
            return
        for alert in ordered:  # a muted alert is recorded once per reason
            fp = alert.fingerprint
            reason = look.muted.get(fp)
            if reason is None:
                group.muted.pop(fp, None)
            elif group.muted.get(fp) != reason:
                group.muted[fp] = reason
                records.append(self._suppressed(group, alert, reason, now))
        group.flushed_resolved = {fp: a for fp, a in group.alerts.items() if a.state == "resolved"}
        group.flush_ok = True
        for channel in self.channels[group.receiver]:
            sent_key = (channel.name, group.key)
            integration = IntegrationLook(
                look, channel.integration.send_resolved, self._sent.get(sent_key)
            )
            wanted = run(self.integration_stages, integration, alerts)
            if wanted is None:
                continue
            if not wanted:  # only resolved alerts, and this integration skips them
                self._sent[sent_key] = Announced(frozenset(), frozenset(), now)
                continue
            self._deliver(group, channel, wanted, now)
            self._collect(now, records)
        if group.inflight == 0:
            self._settle(group)

    # -- deliver and retry -----------------------------------------------------------------

    def _deliver(
        self, group: Group, channel: Channel, alerts: list[Alert], now: dt.datetime
    ) -> None:
        notification = Notification(
            receiver=group.receiver,
            group_key=group.key,
            group_labels=dict(group.labels),
            alerts=tuple(resolved_notice(a) for a in alerts),
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
                group=group,
            )
        )

    def _collect(self, now: dt.datetime, records: list[NotificationRecord]) -> None:
        """Record what the senders finished: announced, or failed for good."""
        for outcome in self.delivery.collect(now):
            self._outcome(outcome, now, records)

    def _outcome(
        self, outcome: Outcome, now: dt.datetime, records: list[NotificationRecord]
    ) -> None:
        d = outcome.delivery
        group = d.group
        record = delivery_record(
            d.notification, d.id, d.channel, group.key, d.attempts, outcome.status, now,
            outcome.error,
        )  # fmt: skip
        records.append(record)
        if outcome.status == "sent":
            firing = frozenset(a.fingerprint for a in d.notification.firing)
            resolved = frozenset(a.fingerprint for a in d.notification.resolved)
            self._sent[(d.channel, group.key)] = Announced(firing, resolved, now)
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

    def _finish(self, group: Group, *, ok: bool) -> None:
        group.inflight -= 1
        group.flush_ok = group.flush_ok and ok
        if group.inflight == 0:
            self._settle(group)

    def _settle(self, group: Group) -> None:
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
        self, group: Group, alert: Alert, reason: str, now: dt.datetime
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
