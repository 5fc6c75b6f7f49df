"""When pending records become a batch: the policy behind batch size and freshness."""

from __future__ import annotations

import pytest

from agentwatch.processors.landing.batching import (
    IDLE_POLL_S,
    LANDING_POLL_S,
    Due,
    Pending,
    due,
    poll_timeout_s,
    room,
)
from agentwatch.processors.landing.fetch import Chunk


def chunk(offsets: range) -> Chunk:
    n = len(offsets)
    return Chunk(list(offsets), [0] * n, [None] * n, [b"{}"] * n)


def held(count: int, since: float) -> Pending:
    pending = Pending()
    pending.extend([chunk(range(count))], since)
    return pending


def test_nothing_is_due_before_the_oldest_record_has_waited_the_interval() -> None:
    assert due([held(10, since=100.0)], now=100.4, max_batch=1000, flush_interval_s=0.5) is (
        Due.NOTHING
    )


def test_a_batch_is_due_once_its_oldest_record_has_waited_the_interval() -> None:
    assert due([held(10, since=100.0)], now=100.5, max_batch=1000, flush_interval_s=0.5) is (
        Due.WAITED
    )


def test_a_partition_at_max_batch_is_full_whatever_its_age() -> None:
    pending = [held(10, since=100.0), held(1000, since=100.3)]
    assert due(pending, now=100.3, max_batch=1000, flush_interval_s=0.5) is Due.FULL


def test_max_batch_counts_the_records_of_all_partitions_together() -> None:
    pending = [held(600, since=100.3), held(400, since=100.3)]
    assert due(pending, now=100.3, max_batch=1000, flush_interval_s=0.5) is Due.FULL


def test_a_poll_may_add_only_the_room_left_below_max_batch_over_all_partitions() -> None:
    pending = [held(600, since=100.0), held(300, since=100.0)]
    assert room(pending, max_batch=1000) == 100


def test_a_poll_with_nothing_pending_may_add_a_whole_batch() -> None:
    assert room([], max_batch=1000) == 1000


def test_a_poll_may_always_add_one_record_so_fetching_never_stalls() -> None:
    assert room([held(1000, since=100.0)], max_batch=1000) == 1


def test_an_empty_buffer_is_never_due() -> None:
    assert due([Pending()], now=1e9, max_batch=1, flush_interval_s=0.0) is Due.NOTHING


def test_the_oldest_record_sets_the_age_later_records_do_not() -> None:
    pending = held(1, since=100.0)
    pending.extend([chunk(range(1, 2))], 100.4)
    assert pending.since == 100.0
    assert due([pending], now=100.5, max_batch=10, flush_interval_s=0.5) is Due.WAITED


def test_an_idle_poll_waits_no_longer_than_until_the_next_batch_is_due() -> None:
    wait = poll_timeout_s([held(1, since=100.0)], now=100.45, flush_interval_s=0.5, landing=False)
    assert wait == pytest.approx(0.05)


def test_a_poll_with_nothing_pending_waits_the_idle_tick() -> None:
    assert poll_timeout_s([], now=0.0, flush_interval_s=0.5, landing=False) == IDLE_POLL_S


def test_while_a_batch_lands_polls_wait_a_short_tick() -> None:
    assert poll_timeout_s([], now=0.0, flush_interval_s=0.5, landing=True) == LANDING_POLL_S


def test_an_overdue_batch_polls_without_waiting() -> None:
    assert poll_timeout_s([held(1, since=0.0)], now=9.0, flush_interval_s=0.5, landing=False) == 0


def test_a_poll_adds_every_record_of_its_chunks_in_order_and_counts_them() -> None:
    pending = Pending()
    assert pending.extend([chunk(range(0, 3)), chunk(range(3, 5))], 1.0) == 5
    assert pending.offsets == [0, 1, 2, 3, 4]
