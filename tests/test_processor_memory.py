"""A landing worker's /metrics says what its memory holds: the dedup index, DuckDB's
buffers and limit, the records pending landing, the open sessions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.processors.landing.batching import Pending
from agentwatch.processors.landing.dedup import BYTES_PER_ID, DedupIndex
from agentwatch.processors.landing.fetch import Chunk
from agentwatch.processors.landing.memory import MemoryCollector
from agentwatch.processors.landing.pipeline import PartitionState
from agentwatch.processors.metrics import series


def scrape(collector: MemoryCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


def held(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], holder: str) -> float:
    return values[(series.PIPELINE_MEMORY.name, (("holder", holder),))]


def state_with_ids(ids: int) -> PartitionState:
    state = PartitionState(DedupIndex())
    state.dedup.add(np.arange(ids, dtype=np.uint64), minute=0)
    return state


def pending_of(*values: bytes) -> Pending:
    pending = Pending()
    chunk = Chunk(list(range(len(values))), [0] * len(values), [b"k"] * len(values), list(values))
    pending.extend([chunk], now=0.0)
    return pending


def no_duckdb() -> None:
    return None


def test_the_dedup_index_of_every_partition_is_reported_at_its_bytes_an_id() -> None:
    states = [state_with_ids(1000), state_with_ids(500)]
    values = scrape(MemoryCollector(lambda: states, list, no_duckdb))
    assert held(values, "dedup_index") == 1500 * BYTES_PER_ID


def test_pending_records_are_reported_as_the_bytes_of_their_keys_and_values() -> None:
    pendings = [pending_of(b"x" * 100, b"y" * 50), pending_of(b"z" * 10)]
    values = scrape(MemoryCollector(list, lambda: pendings, no_duckdb))
    assert held(values, "pending_records") == 160 + 3 * len(b"k")


def test_open_sessions_of_every_partition_are_counted() -> None:
    state = state_with_ids(1)
    start = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    state.sessions.update(
        pl.DataFrame(
            {
                "kind": ["session_start", "session_start", "session_end"],
                "session_id": ["a", "b", "a"],
                "ts": [start, start, start + dt.timedelta(seconds=5)],
                "agent_id": ["hr-1"] * 3,
                "agent_version": ["1"] * 3,
                "environment": ["prod"] * 3,
                "resolution": [None, None, "resolved"],
                "model": [None] * 3,
                "prompt_version": [None] * 3,
            },
            schema_overrides={"ts": pl.Datetime("us", "UTC")},
        )
    )
    values = scrape(MemoryCollector(lambda: [state], list, no_duckdb))
    assert values[(series.OPEN_SESSIONS.name, ())] == 1


def test_duckdb_buffers_and_limit_are_reported_when_a_lake_is_open() -> None:
    values = scrape(MemoryCollector(list, list, lambda: (4096, 64 << 20)))
    assert held(values, "duckdb") == 4096
    assert values[(series.DUCKDB_MEMORY_LIMIT.name, ())] == 64 << 20


def test_nothing_is_said_of_duckdb_before_a_lake_is_open() -> None:
    values = scrape(MemoryCollector(list, list, no_duckdb))
    assert (series.PIPELINE_MEMORY.name, (("holder", "duckdb"),)) not in values
    assert (series.DUCKDB_MEMORY_LIMIT.name, ()) not in values
