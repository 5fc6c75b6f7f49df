"""Analysts' views under test: events written as real Parquet segments through the store
and read through the catalog read-only, exactly as an analyst would.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.rollups import landed, minute_rollups
from agentwatch.processors.store.tables import EVENTS_SCHEMA

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
DOCS_SQL = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
_ids = itertools.count()

Row = dict[str, Any]


def event(kind: str, session_id: str, at_s: float, **fields: Any) -> Row:
    """One stored event row, ``at_s`` seconds after T0; unset columns are NULL."""
    n = next(_ids)
    row: Row = {
        "schema_version": 1,
        "event_id": f"e-{n}",
        "ts": T0 + dt.timedelta(seconds=at_s),
        "kind": kind,
        "agent_id": "hr-assistant",
        "session_id": session_id,
        "agent_version": "2.3.0",
        "environment": "prod",
        "status": "ok",
        "_late": False,
        "_topic": "t",
        "_partition": 0,
        "_offset": n,
        "_kafka_ts": T0 + dt.timedelta(seconds=at_s),
    }
    if kind == "llm_call":
        row.update(
            model="gpt-4o-mini",
            provider="openai",
            prompt_version="v7",
            input_tokens=100,
            output_tokens=10,
            cost_usd_effective=0.001,
            cost_source="pricing",
        )
    row.update(fields)
    return row


def session(session_id: str, start_s: float, end_s: float | None, **end: Any) -> list[Row]:
    """A session_start and (unless ``end_s`` is None) a session_end, resolved by default."""
    rows = [event("session_start", session_id, start_s, channel="chat", intent="payslip")]
    if end_s is not None:
        rows.append(event("session_end", session_id, end_s, **{"resolution": "resolved", **end}))
    return rows


def write_batch(store: LakeStore, frame: pl.DataFrame, sessions: SessionTracker) -> None:
    """Store one batch of events with its minute rollups, as the processor lands it."""
    context = sessions.context(frame)
    sessions.update(frame)
    store.insert_tables({**landed(minute_rollups(frame, context)), "events": frame})


def land(tmp_path: Path, *segments: Iterable[Row]) -> duckdb.DuckDBPyConnection:
    """Write each group of rows as one batch and open the lake read-only."""
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    sessions = SessionTracker()
    for rows in segments:
        write_batch(store, pl.DataFrame(list(rows), schema=EVENTS_SCHEMA), sessions)
    return connect_lake(Path(store.db))


def rows_of(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = con.execute(sql)
    columns = [d[0] for d in result.description or []]
    return [dict(zip(columns, r, strict=True)) for r in result.fetchall()]


def one(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    found = rows_of(con, sql)
    assert len(found) == 1, found
    return found[0]


def minute(m: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=m)


def spread_events() -> list[Row]:
    """Sessions over three hours that cross midnight UTC, with known latencies."""
    start = dt.datetime(2026, 11, 20, 22, 50, tzinfo=dt.UTC)
    offset_s = (start - T0).total_seconds()
    rows: list[Row] = []
    for i in range(40):
        sid = f"s{i}"
        at = offset_s + i * 271.0  # 40 sessions over three hours
        rows += session(sid, at, at + 95 + i, resolution="resolved" if i % 3 else "failed")
        rows.append(
            event(
                "llm_call",
                sid,
                at + 2,
                latency_ms=100.0 + (i * 37) % 900,
                input_tokens=500 + i,
                model="gpt-4o" if i % 2 else "gpt-4o-mini",
                cost_usd_effective=None if i % 7 == 0 else 0.001 * i,
            )
        )
        rows.append(event("tool_call", sid, at + 40, latency_ms=10.0 + i, tool_name="kb.search"))
        if i % 5 == 0:
            rows.append(event("escalation", sid, at + 50))
    return rows
