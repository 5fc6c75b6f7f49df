"""The receiver's Kafka writes: record batches per partition, one produce per leader, acks=all.

The broker is stood in for at kafka-python's connection manager: it answers each
``ProduceRequest`` with the protocol's own ``ProduceResponse``, or an error code per
partition (the real broker path is in test_otlp_kafka.py and the benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_murmur2
from kafka.protocol.producer import ProduceResponse
from kafka.record.memory_records import MemoryRecords

from agentwatch.ingest.otlp.kafka_sink import KafkaSink, batches, murmur2
from agentwatch.ingest.otlp.receiver import Unavailable


class _Cluster:
    def __init__(self, partitions: int = 3) -> None:
        self.partitions = set(range(partitions))
        self.refreshes = 0

    def set_topics(self, topics: list[str]) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def leader_for_partition(self, tp: Any) -> int:
        return 1

    async def refresh_metadata(self) -> None:
        self.refreshes += 1


class _Broker:
    """Answers produce requests with ``codes()`` per partition; records what it was sent."""

    def __init__(self, codes: Callable[[int], int]) -> None:
        self.cluster = _Cluster()
        self.codes = codes
        self.requests: list[Any] = []

    def send(self, request: Any, node_id: int) -> Any:
        self.requests.append(request)
        n = len(self.requests)
        Topic = ProduceResponse.TopicProduceResponse
        return ProduceResponse(
            responses=[
                Topic(
                    name=t.name,
                    partition_responses=[
                        Topic.PartitionProduceResponse(index=p.index, error_code=self.codes(n))
                        for p in t.partition_data
                    ],
                )
                for t in request.topic_data
            ]
        )

    def call_soon(self, coro: Any) -> Any:
        return coro

    async def wait_for(self, answer: Any, timeout_ms: int) -> Any:
        if callable(answer):
            return await answer()
        return answer

    def run(self, coro: Any, *args: Any) -> Any:
        task = coro(*args)
        try:
            task.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("the stand-in broker never suspends")


def _sink(broker: _Broker) -> KafkaSink:
    client = type("Client", (), {"_manager": broker, "close": lambda self: None})()
    return KafkaSink("unused:9092", "events", "events.otlp-unmapped", client=client)


def _records(blob: bytes) -> list[tuple[bytes | None, bytes | None]]:
    records = MemoryRecords(blob)
    out: list[tuple[bytes | None, bytes | None]] = []
    while records.has_next():
        batch = records.next_batch()
        out += [(r.key, r.value) for r in batch]
    return out


def test_each_session_goes_to_the_partition_kafkas_default_partitioner_picks() -> None:
    class Cluster(_Cluster):
        def topics(self) -> set[str]:
            return {"events"}

    keys = [f"conv-{i}".encode() for i in range(40)]
    out = batches("events", [(k, b"{}") for k in keys], [0, 1, 2])
    expected = DefaultPartitioner()
    for b in out:
        for key, _ in _records(b.records):
            assert key is not None
            assert b.partition == expected.partition("events", key, key, None, None, Cluster(3))
    assert len(out) == 3
    assert sum(b.count for b in out) == 40


def test_a_partitions_records_keep_their_order_across_batches_of_the_size_limit() -> None:
    values = [f"event-{i}".encode() * 20 for i in range(200)]
    (only,) = batches("events", [(b"conv-1", v) for v in values], [0], batch_bytes=2048)
    assert [v for _, v in _records(only.records)] == values
    assert MemoryRecords(only.records).next_batch() is not None


def test_one_request_is_one_produce_request_with_acks_all() -> None:
    broker = _Broker(lambda n: 0)
    _sink(broker).send([(f"c-{i}".encode(), b"{}") for i in range(30)], [b"{}"])
    (request,) = broker.requests
    assert request.acks == -1
    assert {t.name for t in request.topic_data} == {"events", "events.otlp-unmapped"}


def test_a_partition_refused_with_a_retriable_error_is_sent_again() -> None:
    broker = _Broker(lambda n: 19 if n == 1 else 0)  # NOT_ENOUGH_REPLICAS, then taken
    _sink(broker).send([(b"c-1", b"{}")], [])
    assert len(broker.requests) == 2
    assert broker.cluster.refreshes == 1


def test_a_record_kafka_does_not_acknowledge_makes_the_sink_unavailable() -> None:
    broker = _Broker(lambda n: 10)  # MESSAGE_TOO_LARGE: no retry helps
    with pytest.raises(Unavailable, match="MessageSizeTooLarge"):
        _sink(broker).send([(b"c-1", b"{}")], [])
    assert len(broker.requests) == 1


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_murmur2_is_kafkas_hash(key: bytes) -> None:
    assert murmur2(key) == kafka_murmur2(key)
