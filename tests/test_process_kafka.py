"""The landing processor against the real broker: exact counts, crashes, concurrent readers.

Events are produced with plain kafka-python (not the SDK), so these tests check the
processor against the wire contract alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.processors.store.attach import connect as connect_lake
from tests.conftest import TopicFactory
from tests.examples import invalid_examples
from tests.pipeline_helpers import (
    AGENTWATCH,
    committed_batches,
    count,
    make_events,
    process_cmd,
    produce,
    run_to_idle,
    wait_for,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "agentwatch.sqlite"


def test_valid_invalid_and_duplicate_events_land_exactly(
    kafka_broker: BrokerInfo, topic: TopicFactory, db: Path
) -> None:
    name = topic(partitions=3)
    events = make_events(2_000)
    invalid = [(b"bad", message) for _, message in invalid_examples()]
    resent = events[:150]
    produce(kafka_broker.bootstrap, name, events + invalid + resent)

    run_to_idle(kafka_broker, name, db)

    assert count(db, "SELECT count(*) FROM events") == 2_000
    assert count(db, "SELECT count(DISTINCT event_id) FROM events") == 2_000
    assert count(db, "SELECT count(*) FROM dead_letters") == len(invalid)
    assert count(db, "SELECT count(*) FROM dead_letters WHERE reason IS NULL") == 0


def test_dead_letters_also_go_to_the_dead_letter_topic_with_their_reason(
    kafka_broker: BrokerInfo, topic: TopicFactory, db: Path
) -> None:
    name = topic(partitions=1)
    invalid = [(b"bad", message) for _, message in invalid_examples()]
    produce(kafka_broker.bootstrap, name, make_events(10) + invalid)
    run_to_idle(kafka_broker, name, db)

    consumer = KafkaConsumer(
        f"{name}.dlq",
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    received = []
    for record in consumer:
        received.append(record)
        if len(received) == len(invalid):
            break
    consumer.close()
    assert sorted(r.value for r in received) == sorted(m for _, m in invalid)
    assert all(dict(r.headers)["reason_code"] for r in received)


def test_an_event_resent_after_a_restart_is_stored_once(
    kafka_broker: BrokerInfo, topic: TopicFactory, db: Path
) -> None:
    name = topic(partitions=2)
    events = make_events(500)
    produce(kafka_broker.bootstrap, name, events)
    run_to_idle(kafka_broker, name, db)
    produce(kafka_broker.bootstrap, name, events[100:300] + make_events(50, prefix="new"))
    run_to_idle(kafka_broker, name, db)
    assert count(db, "SELECT count(*) FROM events") == 550


def test_sigkill_mid_stream_twice_loses_and_duplicates_nothing(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    db: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=3)
    events = make_events(60_000)
    produce(kafka_broker.bootstrap, name, events)
    small_batches = ("--max-batch", "2000", "--flush-interval", "0.2")

    for kills in (1, 2):
        proc = subprocess.Popen(
            process_cmd(kafka_broker, name, db, *small_batches),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        running.append(proc)
        before = committed_batches(db)

        def committed(b: int = before) -> bool:
            return committed_batches(db) >= b + 1  # a commit holds every partition's batch

        wait_for(committed, 120, "batches to commit")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert count(db, "SELECT count(*) FROM events") < len(events), f"kill {kills} came late"

    run_to_idle(kafka_broker, name, db, *small_batches)
    assert count(db, "SELECT count(*) FROM events") == 60_000
    assert count(db, "SELECT count(DISTINCT event_id) FROM events") == 60_000
    assert count(db, "SELECT count(DISTINCT (_partition, _offset)) FROM events") == 60_000


def test_analysts_query_read_only_while_the_processor_runs(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    db: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=3)
    produce(kafka_broker.bootstrap, name, make_events(3_000))
    proc = subprocess.Popen(
        process_cmd(kafka_broker, name, db, "--flush-interval", "0.2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    running.append(proc)
    wait_for(lambda: db.exists() and committed_batches(db) > 0, 60, "a first batch")
    wait_for(lambda: count(db, "SELECT count(*) FROM events") == 3_000, 60, "all events")

    con = connect_lake(db)
    assert con.execute("SELECT count(DISTINCT agent_id) FROM events").fetchone() == (2,)
    con.close()
    cli = subprocess.run(
        [*AGENTWATCH, "sql", "SELECT kind, count(*) AS n FROM events GROUP BY kind",
         "--db", str(db), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert sum(row["n"] for row in json.loads(cli.stdout)) == 3_000
    assert proc.poll() is None, "the processor must keep running while analysts read"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_two_instances_in_one_group_share_partitions_and_land_everything(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    db: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=4)
    produce(kafka_broker.bootstrap, name, make_events(20_000))
    procs = [
        subprocess.Popen(
            process_cmd(kafka_broker, name, db, "--idle-timeout", "4", "--max-batch", "1000"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        for _ in range(2)
    ]
    running.extend(procs)
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    assert count(db, "SELECT count(*) FROM events") == 20_000
    assert count(db, "SELECT count(DISTINCT event_id) FROM events") == 20_000
