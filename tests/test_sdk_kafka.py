"""The SDK against real Kafka: what it sends arrives valid and keyed; a dead broker costs nothing.

The topic is read back with plain kafka-python, so the test relies on the wire contract
alone, not on anything the SDK says about itself.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer

from agentwatch.broker.launcher import BrokerInfo, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.ingest.contract.events import AnyEvent
from agentwatch.ingest.sdk.emitter import DROP_BUFFER_FULL
from agentwatch.ingest.sdk.tracer import Tracer
from agentwatch.topics import TopicSpec, ensure_topics
from tests.conftest import TopicFactory, require_tool

DECODER = msgspec.json.Decoder(AnyEvent)


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.mark.integration
def test_events_sent_by_the_sdk_arrive_in_the_topic_keyed_by_session_and_valid(
    kafka_broker: BrokerInfo, topic: TopicFactory
) -> None:
    name = topic(partitions=3)
    tracer = Tracer.to_kafka(kafka_broker.bootstrap, name, agent_id="it-agent", agent_version="7")
    with tracer.session("sess-a", channel="web") as s:
        with s.llm_call("gpt-4o", provider="openai") as call:
            call.input_tokens, call.output_tokens = 12, 3
        with s.tool_call("search"):
            pass
    with tracer.session("sess-b") as s:
        s.escalate(reason="asked for a human")

    assert tracer.close(timeout=60) is True
    stats = tracer.stats()
    assert (stats.emitter.sent, stats.emitter.dropped_total, stats.invalid) == (7, 0, 0)

    records = consume(kafka_broker.bootstrap, name, expected=7)
    kinds_by_session: dict[str, list[str]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event = DECODER.decode(record.value)  # raises if the event breaks the contract
        assert record.key == event.session_id.encode()
        assert (event.agent_id, event.agent_version) == ("it-agent", "7")
        kinds_by_session[event.session_id].append(type(event).__name__)
    assert kinds_by_session == {
        "sess-a": ["SessionStart", "LlmCall", "ToolCall", "SessionEnd"],
        "sess-b": ["SessionStart", "Escalation", "SessionEnd"],
    }


@pytest.mark.integration
def test_what_was_buffered_while_the_broker_was_down_is_delivered_once_it_is_up(
    tmp_path: Path,
) -> None:
    require_tool("java")
    require_tool("kafka")
    port = free_port()
    tracer = Tracer.to_kafka(f"127.0.0.1:{port}", "late-topic", agent_id="a")
    try:
        with tracer.session("while-down") as s:
            s.feedback(score=1.0)
        assert tracer.flush(timeout=0.5) is False  # nothing listens yet

        broker = start_broker(tmp_path / "late-broker", port)
        try:
            ensure_topics(broker.bootstrap, [TopicSpec("late-topic", 1, {})])
            assert tracer.flush(timeout=90) is True
            records = consume(broker.bootstrap, "late-topic", expected=3)
        finally:
            stop_broker(tmp_path / "late-broker")
    finally:
        tracer.close(timeout=5)

    stats = tracer.stats().emitter
    assert (stats.sent, stats.dropped_total) == (3, 0)
    assert stats.send_errors >= 1
    assert [r.key for r in records] == [b"while-down"] * 3


def test_an_sdk_pointed_at_a_dead_port_never_blocks_or_raises() -> None:
    # Needs no broker: nothing listens on the port, which is the point.
    tracer = Tracer.to_kafka(
        f"127.0.0.1:{free_port()}", agent_id="a", buffer_size=50, max_batch=10, linger_ms=0
    )
    slowest = 0.0
    for _ in range(200):
        started = time.perf_counter()
        with tracer.session() as s:
            s.feedback(score=1.0)
        slowest = max(slowest, time.perf_counter() - started)

    assert slowest < 0.05
    stats = tracer.stats().emitter
    assert stats.emitted == 600
    assert stats.sent == 0
    assert stats.dropped[DROP_BUFFER_FULL] >= 600 - 50 - 10  # all but the buffer and one batch

    started = time.monotonic()
    assert tracer.close(timeout=1.0) is False
    assert time.monotonic() - started < 3.0
