"""A landing worker's DuckDB stays within a memory limit, and a set that needs more lands.

Without a limit DuckDB keeps what it caches until 80% of the machine's memory is in use,
so a worker grew with every commit (``attach.limit_memory``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest

from agentwatch.processors.store import attach
from agentwatch.processors.store.attach import MAX_MEMORY_DOUBLINGS, limit_memory, memory_limit
from tests.test_store import commit, count, events, lake

MIB = 2**20


@pytest.fixture(autouse=True)
def _a_fresh_duckdb_instance() -> Iterator[None]:
    """Each test starts its own DuckDB instance: one that earlier tests filled with their
    lakes can hold more than the limits set here, which are then doubled until they fit."""
    attach.detach_all()
    yield
    attach.detach_all()


def _limit_bytes() -> int:
    stated = memory_limit()
    assert stated is not None
    value, unit = stated.split()
    return int(float(value) * {"KiB": 2**10, "MiB": MIB, "GiB": 2**30}[unit])


def _many_events(rows: int) -> pl.DataFrame:
    one = events()
    return pl.concat([one] * (rows // one.height + 1)).head(rows)


def test_the_limit_applies_to_a_lake_opened_after_it_is_set(tmp_path: Path) -> None:
    limit_memory(48)
    lake(tmp_path)
    assert _limit_bytes() == 48 * MIB


def test_the_limit_applies_to_a_lake_already_open(tmp_path: Path) -> None:
    lake(tmp_path)
    limit_memory(40)
    assert _limit_bytes() == 40 * MIB


def test_a_commit_short_of_memory_doubles_the_limit_and_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = lake(tmp_path)
    limit_memory(1)
    frame = _many_events(50_000)
    with caplog.at_level(logging.WARNING):
        assert commit(store, 0, frame.height - 1, frame)
    assert count(store) == frame.height
    assert _limit_bytes() > MIB
    assert "limit doubled" in caplog.text


def test_a_lake_opened_under_a_limit_too_low_to_read_its_catalog_doubles_it_and_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Using a lake reads its catalog, which needs a few MB: a worker started with a low
    ``--duckdb-memory-mb`` stopped with "cannot use the store" instead."""
    assert commit(lake(tmp_path), 0, 9_999, _many_events(10_000))
    attach.detach_all()  # a new process, as a restarted worker
    limit_memory(1)
    with caplog.at_level(logging.WARNING):
        store = lake(tmp_path)
    assert count(store) == 10_000
    assert _limit_bytes() > MIB
    assert "limit doubled" in caplog.text


def test_a_commit_still_short_after_the_last_doubling_fails_with_duckdbs_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attach, "MAX_MEMORY_DOUBLINGS", 1)
    store = lake(tmp_path)
    limit_memory(1)
    frame = _many_events(50_000)
    with pytest.raises(duckdb.OutOfMemoryException):
        commit(store, 0, frame.height - 1, frame)
    assert _limit_bytes() == 2 * MIB
    limit_memory(None)
    assert count(store) == 0


def test_a_limit_below_what_duckdb_holds_is_doubled_until_it_fits(tmp_path: Path) -> None:
    store = lake(tmp_path)
    assert commit(store, 0, 9_999, _many_events(10_000))
    row = store.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
    assert row is not None and row[0] > 0
    asked = row[0] / 8 / MIB
    limit_memory(asked)
    assert row[0] <= _limit_bytes() <= asked * 2**MAX_MEMORY_DOUBLINGS * MIB


def test_a_limited_duckdb_spills_nothing_into_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers share their working directory: two spilling there broke each other's commits."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    store = lake(tmp_path)
    limit_memory(1)
    frame = _many_events(50_000)
    assert commit(store, 0, frame.height - 1, frame)
    assert list(workdir.iterdir()) == []


def test_what_duckdb_holds_and_its_doubled_limit_are_read_for_metrics(tmp_path: Path) -> None:
    assert attach.memory_held() is None  # no lake opened yet
    store = lake(tmp_path)
    limit_memory(1)
    frame = _many_events(50_000)
    assert commit(store, 0, frame.height - 1, frame)
    held = attach.memory_held()
    assert held is not None
    in_buffers, limit = held
    assert in_buffers > 0
    assert limit == _limit_bytes() > MIB
