"""The debug log says where a stored set's time went (export.SetTimer)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.export import SetTimer
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE


def _raw(partition: int, records: int) -> RawBatch:
    offsets = list(range(records))
    return RawBatch(
        "events", partition, offsets, [0] * records, [None] * records, [b"{}"] * records
    )


def test_a_stored_set_is_logged_with_its_landing_lock_wait_and_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    timer = SetTimer(store)
    timer.landed()
    store.lock_waited_s += 0.25  # another writer held the lake meanwhile
    with caplog.at_level(logging.DEBUG, logger="agentwatch.processors.landing.export"):
        timer.stored([_raw(0, 3), _raw(2, 4)])
    (record,) = [r for r in caplog.records if r.getMessage() == "set stored"]
    assert record.__dict__["partitions"] == [0, 2]
    assert record.__dict__["records"] == 7
    assert record.__dict__["lock_wait_s"] == 0.25
    assert record.__dict__["landing_s"] >= 0
    assert record.__dict__["commit_s"] >= 0


def test_a_writers_lock_wait_counts_the_time_another_writer_held_the_lake(
    tmp_path: Path,
) -> None:
    holder, waiter = LakeStore(tmp_path / METADATA_FILE), LakeStore(tmp_path / METADATA_FILE)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.write_lock():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    threading.Timer(0.3, release.set).start()
    with waiter.write_lock():
        pass
    thread.join()
    assert waiter.lock_waited_s >= 0.25
    assert holder.lock_waited_s < 0.25
