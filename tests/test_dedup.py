"""Re-sent events: one copy is stored within the horizon, across batches and restarts."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.processors.landing.dedup import BYTES_PER_ID, DedupIndex, ids_within
from agentwatch.processors.landing.pipeline import rebuild_dedup

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def frame(ids: list[str], at: dt.datetime = T0) -> pl.DataFrame:
    return pl.DataFrame(
        {"event_id": ids, "_kafka_ts": [at] * len(ids)},
        schema={"event_id": pl.String, "_kafka_ts": pl.Datetime("us", "UTC")},
    )


def test_a_batch_without_repeats_passes_whole() -> None:
    assert DedupIndex().filter(frame(["a", "b", "c"]))["event_id"].to_list() == ["a", "b", "c"]


def test_repeats_within_one_batch_keep_the_first_copy() -> None:
    kept = DedupIndex().filter(frame(["a", "b", "a", "c", "b"]))
    assert kept["event_id"].to_list() == ["a", "b", "c"]


def test_an_id_seen_in_an_earlier_batch_is_dropped() -> None:
    index = DedupIndex()
    index.filter(frame(["a", "b"]))
    assert index.filter(frame(["b", "c"]))["event_id"].to_list() == ["c"]


def test_an_id_older_than_the_horizon_is_stored_again() -> None:
    index = DedupIndex(horizon_s=600)
    index.filter(frame(["a"], T0))
    later = T0 + dt.timedelta(minutes=30)
    assert index.filter(frame(["a"], later))["event_id"].to_list() == ["a"]


def test_an_id_within_the_horizon_is_dropped_across_minutes() -> None:
    index = DedupIndex(horizon_s=600)
    index.filter(frame(["a"], T0))
    assert index.filter(frame(["a"], T0 + dt.timedelta(minutes=9))).is_empty()


def test_many_batches_in_one_minute_merge_into_few_chunks() -> None:
    index = DedupIndex()
    for i in range(256):
        index.filter(frame([f"id-{i}-{j}" for j in range(10)]))
    assert index.size == 2560
    assert len(index.chunks) <= 9
    assert index.filter(frame(["id-17-3", "new"]))["event_id"].to_list() == ["new"]


def test_the_id_limit_evicts_the_oldest_minutes_and_counts_them() -> None:
    index = DedupIndex(horizon_s=3600, max_ids=25)
    for minute in range(4):
        index.filter(frame([f"{minute}-{j}" for j in range(10)], T0 + dt.timedelta(minutes=minute)))
    assert index.size <= 25
    assert index.evicted_early == 20


def test_an_index_over_its_limit_warns_once_not_at_every_minute_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = DedupIndex(horizon_s=3600, max_ids=25)
    with caplog.at_level(logging.WARNING):
        for minute in range(6):
            at = T0 + dt.timedelta(minutes=minute)
            index.filter(frame([f"{minute}-{j}" for j in range(10)], at))
    assert index.evicted_early == 40
    assert len(caplog.records) == 1


def test_an_index_holds_8_bytes_per_id() -> None:
    index = DedupIndex()
    for minute in range(3):
        at = T0 + dt.timedelta(minutes=minute)
        index.filter(frame([f"{minute}-{j}" for j in range(1000)], at))
    assert index.nbytes == BYTES_PER_ID * index.size == 8 * 3000


def test_the_memory_budget_is_shared_by_the_assigned_partitions() -> None:
    assert ids_within(128, 1) == 128 * 2**20 // 8
    assert ids_within(128, 4) == 128 * 2**20 // 8 // 4
    budget_mb = 1000 * BYTES_PER_ID * 3 / 2**20  # 3000 ids over 3 partitions
    indexes = [DedupIndex(max_ids=ids_within(budget_mb, 3)) for _ in range(3)]
    for p, index in enumerate(indexes):
        for minute in range(5):
            at = T0 + dt.timedelta(minutes=minute)
            index.filter(frame([f"{p}-{minute}-{j}" for j in range(400)], at))
    assert sum(index.nbytes for index in indexes) <= budget_mb * 2**20
    assert all(index.evicted_early > 0 for index in indexes)


def test_a_rebuilt_index_remembers_what_was_stored() -> None:
    stored = pl.concat(
        [frame(["old"], T0 - dt.timedelta(hours=3)), frame(["a", "b"], T0), frame(["c"], T0)]
    )
    index = DedupIndex(horizon_s=3600)
    rebuild_dedup(index, stored)
    assert index.size == 3
    assert index.filter(frame(["a", "old", "z"], T0))["event_id"].to_list() == ["old", "z"]


def test_hash_chunks_stay_sorted() -> None:
    index = DedupIndex()
    for i in range(20):
        index.filter(frame([f"x{i}-{j}" for j in range(7)]))
    for chunk in index.chunks:
        assert np.all(chunk.hashes[:-1] <= chunk.hashes[1:])


@settings(deadline=None)  # timing varies on a shared machine; the behaviour does not
@given(
    batches=st.lists(
        st.lists(st.sampled_from([f"id{i}" for i in range(30)]), max_size=20), max_size=12
    )
)
def test_across_any_batching_each_id_is_kept_exactly_once(batches: list[list[str]]) -> None:
    index = DedupIndex()
    kept = [i for batch in batches for i in index.filter(frame(batch))["event_id"].to_list()]
    everything = [i for batch in batches for i in batch]
    assert kept == list(dict.fromkeys(everything))
