"""The pure core of the landing processor: a raw batch and partition state in, rows out.

Per partition, in offset order: validate and split off dead letters; redact; drop
re-sent events; mark events too late for their window; track sessions so their ends
carry duration and containment. Then for all the partitions stored together: price LLM
calls and sum the minute rollups. The caller stores the result, then applies its metric
deltas: nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import polars as pl

from agentwatch.processors.landing.decode import DecodedBatch, RawBatch, decode_batch
from agentwatch.processors.landing.dedup import DedupIndex, event_hashes
from agentwatch.processors.landing.redact import COUNTS_SCHEMA, Redactor
from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.landing.watermark import mark_late
from agentwatch.processors.metrics.exporter import CounterDelta, HistogramDelta, batch_deltas
from agentwatch.processors.store import rollups
from agentwatch.settings import DEFAULTS

Pricer = Callable[[pl.DataFrame], pl.DataFrame]

# Stored columns each piece of partition state is rebuilt from after a (re)assignment.
STATE_COLUMNS = (
    "event_id", "_kafka_ts", "_offset", "ts", "kind", "session_id",
    "agent_id", "agent_version", "environment", "resolution", "model", "prompt_version",
)  # fmt: skip


@dataclass(frozen=True)
class LandingSettings:
    """The processor settings landing needs; defaults are the settings' (``[process]``)."""

    max_message_bytes: int
    allowed_lateness_s: float = DEFAULTS.process.allowed_lateness
    dedup_horizon_s: float = DEFAULTS.process.dedup_horizon
    dedup_max_ids: int = DEFAULTS.process.dedup_max_ids
    redactor: Redactor | None = None  # redaction before storage (redact.py); None: off


@dataclass
class PartitionState:
    dedup: DedupIndex
    sessions: SessionTracker = field(default_factory=SessionTracker)
    watermark: dt.datetime | None = None

    @classmethod
    def rebuilt(cls, settings: LandingSettings, stored: pl.DataFrame) -> PartitionState:
        """State equal to having processed ``stored`` (the partition's landed events)."""
        top = stored["ts"].max()
        return cls.replayed(settings, [stored], top if isinstance(top, dt.datetime) else None)

    @classmethod
    def replayed(
        cls,
        settings: LandingSettings,
        slices: Iterable[pl.DataFrame],
        newest_ts: dt.datetime | None,
    ) -> PartitionState:
        """State equal to having processed the partition's landed events, read back in
        slices in offset order (``STATE_COLUMNS``); ``newest_ts`` is the latest event time
        among all of them. Only one slice need be in memory at a time."""
        state = cls(DedupIndex(settings.dedup_horizon_s, settings.dedup_max_ids))
        state.watermark = newest_ts
        for stored in slices:
            rebuild_dedup(state.dedup, stored)
            if newest_ts is not None:
                state.sessions.rebuild(stored, newest_ts)
        return state


@dataclass(frozen=True)
class LandedBatch:
    events: pl.DataFrame
    dead_letters: pl.DataFrame
    sessions_ended: pl.DataFrame
    duplicates: int
    # Rows of other stream tables landed with the batch (the rollup tiers,
    # ``otlp_unmapped``).
    extra_tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    redactions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=COUNTS_SCHEMA))

    @property
    def tables(self) -> dict[str, pl.DataFrame]:
        """The rows stored, table by table: dead letters, other tables, events."""
        return {"dead_letters": self.dead_letters, **self.extra_tables, "events": self.events}

    @property
    def late(self) -> int:
        return int(self.events["_late"].sum())


def metric_deltas(landed: Sequence[LandedBatch]) -> list[CounterDelta | HistogramDelta]:
    """The metric deltas of batches landed together, aggregated once for all of them
    (each aggregation has a fixed cost, paid once a set instead of once a partition)."""

    return batch_deltas(
        {
            "events": _together([b.events for b in landed]),
            "sessions": _together([b.sessions_ended for b in landed]),
            "dead_letters": _together([b.dead_letters for b in landed]),
            "redactions": _together([b.redactions for b in landed]),
        }
    )


def land_batch(
    batch: RawBatch, state: PartitionState, settings: LandingSettings, price: Pricer
) -> LandedBatch:
    """Land one partition's batch (see :func:`land_set`)."""
    return land_set([(batch, state)], settings, price)[0]


# The column that tells the batches of a set apart while they are priced and rolled up
# together: each one's place in the set (smaller keys than topic and partition).
_PART = "_part"


def land_set(
    batches: Sequence[tuple[RawBatch, PartitionState]], settings: LandingSettings, price: Pricer
) -> list[LandedBatch]:
    """Land the batches of several partitions that are stored together, each with the
    state of its partition; one result a batch, in their order.

    A partition's own state sees its rows alone, in offset order: validation, redaction,
    dedup, lateness and sessions run a batch at a time. Pricing and the minute rollups
    read the whole set at once, the rollups kept apart by batch (a batch's rows are
    stored with it, or dropped with it when another member owns its partition now): each
    has a fixed cost, about 4 and 9 ms a call, paid once a set instead of once a
    partition (the figures: README, "Sizing workers and partitions").
    """
    if not batches:
        return []
    own = [_partition_stages(batch, state, settings) for batch, state in batches]
    by = (_PART,) if len(own) > 1 else ()

    def tagged(frames: list[pl.DataFrame]) -> pl.DataFrame:
        return _together(
            [f.with_columns(pl.lit(i, pl.UInt32).alias(_PART)) for i, f in enumerate(frames)]
            if by
            else frames
        )

    events = price(tagged([o.events for o in own]))
    if events.height != sum(o.events.height for o in own):  # each batch's rows are a slice
        raise ValueError("a pricer must keep every row of the events, in their order")
    rows = rollups.minute_rollups(events, tagged([o.sessions for o in own]), by=by)
    rows_of = rows.partition_by(_PART, as_dict=True) if by else {(0,): rows}
    events = events.drop(by)
    landed = []
    start = 0  # each batch's events are a slice of the set's, in its order
    for i, o in enumerate(own):
        minutes = rows_of.get((i,), rows.clear()).drop(by)
        landed.append(
            LandedBatch(
                events=events.slice(start, o.events.height),
                dead_letters=o.dead_letters,
                sessions_ended=o.sessions_ended,
                duplicates=o.duplicates,
                extra_tables=rollups.landed(minutes),
                redactions=o.redactions,
            )
        )
        start += o.events.height
    return landed


@dataclass(frozen=True)
class _Own:
    """A batch after the stages its partition's state takes part in (not priced yet)."""

    events: pl.DataFrame
    dead_letters: pl.DataFrame
    sessions: pl.DataFrame  # the session context before this batch's update
    sessions_ended: pl.DataFrame
    duplicates: int
    redactions: pl.DataFrame


def _partition_stages(batch: RawBatch, state: PartitionState, settings: LandingSettings) -> _Own:
    decoded = decode_batch(batch, settings.max_message_bytes)
    redactions = pl.DataFrame(schema=COUNTS_SCHEMA)
    if settings.redactor is not None:  # before anything else sees the text
        clean = settings.redactor.events(decoded.events)
        letters = settings.redactor.dead_letters(decoded.dead_letters)
        decoded = DecodedBatch(clean.frame, letters.frame)
        redactions = pl.concat([clean.counts, letters.counts])
    fresh = state.dedup.filter(decoded.events)
    events, state.watermark = mark_late(fresh, state.watermark, settings.allowed_lateness_s)
    sessions = state.sessions.context(events)  # as known before this batch's update
    return _Own(
        events=events,
        dead_letters=decoded.dead_letters,
        sessions=sessions,
        sessions_ended=state.sessions.update(events),
        duplicates=decoded.events.height - fresh.height,
        redactions=redactions,
    )


def _together(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")


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
