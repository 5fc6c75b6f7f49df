"""The pure core of the landing processor: a raw batch in, rows to store out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from agentwatch.processors.decode import RawBatch, decode_batch
from agentwatch.processors.dedup import DedupIndex, event_hashes


@dataclass(frozen=True)
class LandedBatch:
    events: pl.DataFrame
    dead_letters: pl.DataFrame
    duplicates: int


def land_batch(batch: RawBatch, dedup: DedupIndex, max_message_bytes: int) -> LandedBatch:
    """Validate, split off dead letters, and drop re-sent events already stored."""
    decoded = decode_batch(batch, max_message_bytes)
    events = dedup.filter(decoded.events)
    return LandedBatch(
        events=events,
        dead_letters=decoded.dead_letters,
        duplicates=decoded.events.height - events.height,
    )


def rebuild_dedup(index: DedupIndex, stored: pl.DataFrame) -> None:
    """Refill a partition's index from its stored ``event_id`` and ``_kafka_ts`` columns."""
    last = stored["_kafka_ts"].max()
    if last is None:
        return
    assert isinstance(last, dt.datetime)
    cutoff = last - dt.timedelta(seconds=index.horizon_s)
    recent = (
        stored.filter(pl.col("_kafka_ts") >= cutoff)
        .sort("_kafka_ts")
        .with_columns(_minute=pl.col("_kafka_ts").dt.epoch("s") // 60)
    )
    for (minute,), part in recent.group_by("_minute", maintain_order=True):
        index.add(event_hashes(part), int(minute))
