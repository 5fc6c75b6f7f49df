"""What a landing worker's memory holds, read on each scrape of its ``/metrics``.

A worker's resident memory is a working set (the set landing, the records pending
behind it, what the allocators keep) plus state that grows with the rate up to its
budget: the dedup index (``[process] dedup_memory_mb``), DuckDB's buffers
(``duckdb_memory_mb``, doubled while a set needs more) and the open sessions. Exported
apart, they tell an operator which budget a worker has reached and whether anything
grows past them; ``process_resident_memory_bytes`` (prometheus_client's process
collector, served beside them) is the whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from agentwatch.processors.landing.batching import Pending
from agentwatch.processors.landing.pipeline import PartitionState
from agentwatch.processors.metrics import series
from agentwatch.processors.store.attach import memory_held


class MemoryCollector(Collector):
    """Renders what ``states``, ``pending`` and ``duckdb`` hold (each a callable, read
    per scrape; ``duckdb`` gives bytes held and limit, as ``attach.memory_held``)."""

    def __init__(
        self,
        states: Callable[[], Iterable[PartitionState]],
        pending: Callable[[], Iterable[Pending]],
        duckdb: Callable[[], tuple[int, int | None] | None] = memory_held,
    ) -> None:
        self._states = states
        self._pending = pending
        self._duckdb = duckdb

    def collect(self) -> Iterator[Metric]:
        # list() copies a dict's values in one step of C, so the landing thread changing
        # its partitions meanwhile cannot break the read.
        states = list(self._states())
        held = {
            "dedup_index": sum(s.dedup.nbytes for s in states),
            "pending_records": sum(_pending_bytes(p) for p in list(self._pending())),
        }
        duckdb = self._duckdb()
        if duckdb is not None:
            held["duckdb"] = duckdb[0]
        memory = series.PIPELINE_MEMORY.gauge()
        for holder, size in held.items():
            memory.add_metric([holder], float(size))
        yield memory
        sessions = series.OPEN_SESSIONS.gauge()
        sessions.add_metric([], float(sum(len(s.sessions.open) for s in states)))
        yield sessions
        if duckdb is not None and duckdb[1] is not None:
            limit = series.DUCKDB_MEMORY_LIMIT.gauge()
            limit.add_metric([], float(duckdb[1]))
            yield limit


def _pending_bytes(pending: Pending) -> int:
    """The message bytes a partition's pending records hold (keys and values)."""
    return sum(map(len, filter(None, pending.values))) + sum(map(len, filter(None, pending.keys)))
