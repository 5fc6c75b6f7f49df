"""The notification log: one row per notification sent, failed or suppressed.

It is the audit trail (the ``notifications`` table) and what dedup resumes from after a
restart, as Alertmanager's nflog is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import polars as pl

from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.receivers import Notification
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.tables import NOTIFICATIONS_SCHEMA

log = logging.getLogger(__name__)

NotificationStatus = Literal["sent", "failed", "suppressed"]
NOTIFICATIONS_TABLE = "notifications"


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
    """The ``notifications`` log table of a data dir (one commit per append)."""

    def __init__(self, store: LakeStore) -> None:
        self.store = store

    def append(self, records: Sequence[NotificationRecord]) -> None:
        if records:
            self.store.append_log(NOTIFICATIONS_TABLE, records_frame(records))

    def read(self) -> list[NotificationRecord]:
        return frame_records(self.store.read_log(NOTIFICATIONS_TABLE))


class BufferedLog:
    """Appends to a log; rows that cannot be written are kept and tried again next time."""

    def __init__(self, sink: NotificationLog | None) -> None:
        self.sink = sink
        self._unlogged: list[NotificationRecord] = []

    def append(self, records: Sequence[NotificationRecord]) -> None:
        if self.sink is None:
            return
        pending = [*self._unlogged, *records]
        if not pending:
            return
        try:
            self.sink.append(pending)
        except Exception:
            # Kept rather than lose the audit trail.
            log.exception("cannot write the notifications log", extra={"rows": len(pending)})
            self._unlogged = pending
        else:
            self._unlogged = []


def delivery_record(
    n: Notification,
    notification_id: str,
    receiver: str,
    group_key: str,
    attempts: int,
    status: NotificationStatus,
    now: dt.datetime,
    error: str | None = None,
) -> NotificationRecord:
    """The row of one delivery of ``n`` to one integration (``receiver``)."""
    firing = [a.fingerprint for a in n.firing]
    resolved = [a.fingerprint for a in n.resolved]
    return NotificationRecord(
        ts=now,
        notification_id=notification_id,
        receiver=receiver,
        group_key=group_key,
        status=status,
        attempts=attempts,
        alert_fingerprints=(*firing, *resolved),
        firing=len(firing),
        resolved=len(resolved),
        error=error,
    )


def suppressed_record(
    alert: Alert, receiver: str, group_key: str, reason: str, now: dt.datetime
) -> NotificationRecord:
    """The row saying ``alert`` was muted for ``receiver`` and why."""
    firing = alert.state == "firing"
    return NotificationRecord(
        ts=now,
        notification_id=uuid.uuid4().hex[:16],
        receiver=receiver,
        group_key=group_key,
        status="suppressed",
        attempts=0,
        alert_fingerprints=(alert.fingerprint,),
        firing=int(firing),
        resolved=int(not firing),
        error=reason,
    )
