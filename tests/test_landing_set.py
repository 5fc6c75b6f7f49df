"""Landing a set: the batches of several partitions landed together each get the rows
they would get landed alone, though pricing and the minute rollups run once for all."""

from __future__ import annotations

import datetime as dt

import msgspec
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.dedup import DedupIndex
from agentwatch.processors.landing.pipeline import (
    LandedBatch,
    LandingSettings,
    PartitionState,
    land_batch,
    land_set,
)
from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
from agentwatch.processors.landing.redact import load_redaction
from agentwatch.processors.store.rollups import KEYS

START = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
SETTINGS = LandingSettings(max_message_bytes=1 << 20, redactor=load_redaction())
PRICING = load_pricing()


def price(frame: pl.DataFrame) -> pl.DataFrame:
    return apply_pricing(frame, PRICING)


def fleet_lines(seconds: float) -> list[bytes]:
    """A simulated fleet's events over ``seconds``, as they are sent."""
    fleet = Fleet(make_agents(6, seed=7), seed=7, start=START, events_per_second=300)
    encode = msgspec.json.Encoder().encode
    return [encode(e) for e in fleet.events_until(START.timestamp() + seconds)]


def batch(topic: str, partition: int, values: list[bytes]) -> RawBatch:
    n = len(values)
    return RawBatch(
        topic=topic,
        partition=partition,
        offsets=list(range(n)),
        timestamps_ms=[int(START.timestamp() * 1000) + 10 * i for i in range(n)],
        keys=[None] * n,
        values=values,
    )


def state() -> PartitionState:
    return PartitionState(DedupIndex(3600.0, 1_000_000))


def rows(landed: LandedBatch, table: str) -> pl.DataFrame:
    return landed.tables[table].sort(list(KEYS), nulls_last=True)


def assert_same(alone: LandedBatch, together: LandedBatch) -> None:
    assert_frame_equal(together.events, alone.events)
    assert_frame_equal(rows(together, "minute_rollups"), rows(alone, "minute_rollups"))
    assert_frame_equal(together.dead_letters, alone.dead_letters)
    assert_frame_equal(together.sessions_ended, alone.sessions_ended)
    assert_frame_equal(together.redactions, alone.redactions)
    assert together.duplicates == alone.duplicates


def test_each_partition_of_a_set_lands_the_rows_it_lands_alone() -> None:
    # Dealt round-robin, not keyed by session: every session shows in every partition,
    # each with its own partition's context; one topic's partition 0 is not the other's.
    lines = fleet_lines(120)
    lines += [lines[5], b"not json", b'{"kind": "llm_call"}']  # a re-send, dead letters
    batches = [
        batch("agent-events", 0, lines[0::3]),
        batch("agent-events", 1, lines[1::3]),
        batch("other-events", 0, lines[2::3]),
    ]
    alone = [land_batch(b, state(), SETTINGS, price) for b in batches]
    together = land_set([(b, state()) for b in batches], SETTINGS, price)
    assert all(landed.events.height > 1_000 for landed in alone)
    for one, other in zip(alone, together, strict=True):
        assert_same(one, other)


def test_sets_in_a_row_carry_each_partitions_state_as_batches_in_a_row_do() -> None:
    lines = fleet_lines(240)
    half = len(lines) // 2
    first, second = lines[:half], lines[half:]
    states_alone, states_together = [state(), state()], [state(), state()]
    resent = [first[p::2][:25] for p in (0, 1)]  # to the partition they first went to
    for parts in ([first[0::2], first[1::2]], [second[0::2] + resent[0], second[1::2] + resent[1]]):
        batches = [batch("agent-events", p, values) for p, values in enumerate(parts)]
        alone = [
            land_batch(b, s, SETTINGS, price) for b, s in zip(batches, states_alone, strict=True)
        ]
        together = land_set(list(zip(batches, states_together, strict=True)), SETTINGS, price)
        for one, other in zip(alone, together, strict=True):
            assert_same(one, other)
    assert sum(landed.duplicates for landed in together) == 50


def test_a_partition_of_only_dead_letters_lands_none_of_the_others_rows() -> None:
    batches = [batch("agent-events", 0, fleet_lines(30)), batch("agent-events", 1, [b"{}"] * 3)]
    valid, invalid = land_set([(b, state()) for b in batches], SETTINGS, price)
    assert valid.events.height == len(batches[0]) and valid.tables["minute_rollups"].height
    assert invalid.events.is_empty() and invalid.tables["minute_rollups"].is_empty()
    assert invalid.dead_letters.height == 3
    assert invalid.events.schema == valid.events.schema
    assert invalid.tables["minute_rollups"].schema == valid.tables["minute_rollups"].schema


def test_an_empty_set_lands_nothing() -> None:
    assert land_set([], SETTINGS, price) == []


def test_a_pricer_that_drops_rows_is_refused_not_sliced_wrong() -> None:
    batches = [batch("agent-events", p, fleet_lines(20)) for p in (0, 1)]
    with pytest.raises(ValueError, match="keep every row"):
        land_set([(b, state()) for b in batches], SETTINGS, lambda frame: frame.head(3))
