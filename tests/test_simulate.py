"""The simulate command against a real broker: what it says it sent is what Kafka holds."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.cli import main
from agentwatch.ingest.contract.events import AnyEvent, SessionEnd, SessionStart
from agentwatch.ingest.sim.simulate import SimulationSummary, run_simulation

pytestmark = pytest.mark.integration

DECODER = msgspec.json.Decoder(AnyEvent)


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Every record of ``topic``, read from the start until ``expected`` arrived (or timeout)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        # Anything beyond the expected count would be a duplicate: give it a moment to show.
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def check_topic(bootstrap: str, topic: str, summary: SimulationSummary) -> list[Any]:
    records = consume(bootstrap, topic, summary.events)
    assert len(records) == summary.events == sum(summary.by_kind.values())
    partitions: dict[str, set[int]] = defaultdict(set)
    in_order: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    kinds: dict[str, int] = defaultdict(int)
    for record in records:
        event = DECODER.decode(record.value)
        assert record.key == event.session_id.encode()
        partitions[event.session_id].add(record.partition)
        in_order[event.session_id].append((record.offset, event))
        kinds[str(type(event).__struct_config__.tag)] += 1
    assert dict(kinds) == dict(summary.by_kind)
    assert all(len(p) == 1 for p in partitions.values())
    for events in in_order.values():
        by_offset = [e for _, e in sorted(events, key=lambda pair: pair[0])]
        stamps = [e.ts for e in by_offset]
        assert stamps == sorted(stamps)
        assert isinstance(by_offset[0], SessionStart)
        ends = [i for i, e in enumerate(by_offset) if isinstance(e, SessionEnd)]
        assert ends in ([], [len(by_offset) - 1])
    return records


def test_fast_run_lands_every_event_keyed_and_ordered(
    kafka_broker: BrokerInfo, topic: Callable[..., str]
) -> None:
    name = topic(partitions=3)
    summary = run_simulation(
        kafka_broker.bootstrap, name, agents=8, rate=0, duration=60, seed=7, sim_rate=150
    )
    assert 5_000 < summary.events < 13_000
    assert summary.delivery_errors == 0
    assert summary.sessions_started > 300
    assert len(summary.sessions_by_agent) == 8
    records = check_topic(kafka_broker.bootstrap, name, summary)
    assert len({r.partition for r in records}) == 3
    # A back-fill ends at about the time it started.
    assert summary.last_ts is not None and summary.first_ts is not None
    assert abs(summary.last_ts.timestamp() - time.time()) < 60 + summary.elapsed_s
    assert summary.last_ts.timestamp() - summary.first_ts.timestamp() > 55


def test_same_seed_and_start_repeat_the_same_events(
    kafka_broker: BrokerInfo, topic: Callable[..., str]
) -> None:
    first, second = topic(), topic()
    start = time.time() - 3600
    a = run_simulation(
        kafka_broker.bootstrap, first, agents=4, rate=0, duration=20, seed=3, start=start
    )
    b = run_simulation(
        kafka_broker.bootstrap, second, agents=4, rate=0, duration=20, seed=3, start=start
    )
    assert a.events == b.events and a.by_kind == b.by_kind
    values_a = sorted(r.value for r in consume(kafka_broker.bootstrap, first, a.events))
    values_b = sorted(r.value for r in consume(kafka_broker.bootstrap, second, b.events))
    assert values_a == values_b


def test_real_time_run_paces_events_on_the_wall_clock(
    kafka_broker: BrokerInfo, topic: Callable[..., str]
) -> None:
    name = topic()
    began = time.time()
    summary = run_simulation(kafka_broker.bootstrap, name, agents=4, rate=300, duration=4, seed=1)
    ended = time.time()
    assert summary.realtime
    # Paced from when the run was called (its clock starts before it connects to Kafka).
    assert 3.9 < ended - began < 8
    assert 0 < summary.elapsed_s <= ended - began
    assert 0.3 * 300 * 4 < summary.events < 1.6 * 300 * 4  # ramping up over the first seconds
    assert summary.first_ts is not None and summary.last_ts is not None
    assert began - 0.5 <= summary.first_ts.timestamp() <= summary.last_ts.timestamp() <= ended
    check_topic(kafka_broker.bootstrap, name, summary)


def test_max_events_stops_early(kafka_broker: BrokerInfo, topic: Callable[..., str]) -> None:
    name = topic()
    summary = run_simulation(
        kafka_broker.bootstrap, name, agents=2, rate=0, duration=3600, seed=2, max_events=500
    )
    assert summary.events == 500
    check_topic(kafka_broker.bootstrap, name, summary)


def test_cli_creates_the_topic_and_prints_a_summary(
    kafka_broker: BrokerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"test-simulate-cli-{time.time_ns()}"
    code = main(
        [
            "--log-format", "json", "simulate", "--bootstrap", kafka_broker.bootstrap,
            "--topic", name, "--agents", "5", "--rate", "0", "--duration", "30", "--seed", "4",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "events by kind" in out and "per agent" in out and "hr-assistant-2" in out
    assert "session_start" in out and "seed 4" in out


def test_cli_fails_cleanly_without_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    from agentwatch.broker.ports import free_port

    code = main(
        [
            "simulate", "--bootstrap", f"127.0.0.1:{free_port()}", "--duration", "1",
            "--rate", "0", "--timeout", "2",
        ]
    )  # fmt: skip
    assert code == 1
    assert "cannot simulate" in capsys.readouterr().err
