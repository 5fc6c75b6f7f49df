"""The throughput bench's memory sampler reads what a worker's memory holds off the
processor's /metrics, minute by minute."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server

from agentwatch.broker.ports import free_port
from agentwatch.processors.landing.dedup import DedupIndex
from agentwatch.processors.landing.memory import MemoryCollector
from agentwatch.processors.landing.pipeline import PartitionState
from bench.rss import WorkerRss, scrape_held


def test_the_holders_are_read_off_a_processors_metrics_in_mb() -> None:
    state = PartitionState(DedupIndex())
    state.dedup.add(np.arange(2**17, dtype=np.uint64), minute=0)  # 1 MiB of ids
    registry = CollectorRegistry()
    registry.register(MemoryCollector(lambda: [state], list, lambda: (2**21, 2**26)))
    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry)
    try:
        held = scrape_held(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        thread.join()
    assert held == {
        "dedup_index_mb": 1.0,
        "pending_records_mb": 0.0,
        "duckdb_mb": 2.0,
        "open_sessions_k": 0.0,
        "duckdb_limit_mb": 64.0,
    }


def test_a_processor_that_does_not_answer_gives_nothing() -> None:
    assert scrape_held(f"http://127.0.0.1:{free_port()}/metrics") == {}


def test_each_holder_keeps_its_largest_value_in_each_minute() -> None:
    sampler = WorkerRss(supervisor=0, workers=1)
    sampler.held = [(5.0, {"duckdb_mb": 10.0}), (50.0, {"duckdb_mb": 30.0}),
                    (65.0, {"duckdb_mb": 20.0})]  # fmt: skip
    assert sampler.held_by_minute() == {"duckdb_mb": [30.0, 20.0]}
