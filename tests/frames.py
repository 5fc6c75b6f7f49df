"""Build small ``events`` frames with the stored schema, for tests of the pure core."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.rollups import landed, minute_rollups
from agentwatch.processors.store.tables import EVENTS_SCHEMA

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def events(*rows: dict[str, Any]) -> pl.DataFrame:
    """Rows as dicts of the fields they set; defaults fill the rest, offsets count up."""
    full = []
    for i, row in enumerate(rows):
        base: dict[str, Any] = {name: None for name in EVENTS_SCHEMA}
        base |= {
            "schema_version": 1,
            "event_id": f"e{i}",
            "ts": T0,
            "agent_id": "hr-assistant",
            "agent_version": "1.0.0",
            "environment": "prod",
            "session_id": "s1",
            "status": "ok",
            "_late": False,
            "_topic": "t",
            "_partition": 0,
            "_offset": i,
            "_kafka_ts": T0,
        }
        full.append(base | row)
    return pl.DataFrame(full, schema=EVENTS_SCHEMA)


def store_batch(store: LakeStore, events: pl.DataFrame) -> None:
    """Store ``events`` as one landed batch: its minute rollups and its events.

    The rollups get the session context the batch itself shows, as a processor that
    has just been assigned the partition would give them.
    """
    rollups = landed(minute_rollups(events, SessionTracker().context(events)))
    store.insert_tables({**rollups, "events": events})
