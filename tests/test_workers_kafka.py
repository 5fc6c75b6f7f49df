"""``agentwatch process --workers N`` against the real broker: crashes, stops, one /metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.location import METADATA_FILE
from tests.conftest import TopicFactory
from tests.pipeline_helpers import (
    AGENTWATCH,
    committed_batches,
    count,
    make_events,
    process_cmd,
    produce,
    wait_for,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / METADATA_FILE


def supervised(broker: BrokerInfo, topic: str, db: Path, *extra: str) -> list[str]:
    cmd = process_cmd(broker, topic, db, "--workers", "2", *extra)
    return [*AGENTWATCH, "--log-format", "json", *cmd[len(AGENTWATCH) :]]


def log_lines(path: Path, message: str) -> list[dict[str, object]]:
    text = path.read_text(errors="replace") if path.exists() else ""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"msg": "{message}"' in line:
            found.append(json.loads(line))
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_worker_killed_mid_stream_is_restarted_and_nothing_is_lost_or_duplicated(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    db: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=4)
    produce(kafka_broker.bootstrap, name, make_events(60_000))
    log = tmp_path / "process.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            supervised(kafka_broker, name, db, "--max-batch", "2000", "--flush-interval", "0.2"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    running.append(proc)
    wait_for(lambda: len(log_lines(log, "worker started")) == 2, 60, "two workers")
    wait_for(lambda: committed_batches(db) >= 3, 120, "batches to commit")
    victim = int(log_lines(log, "worker started")[0]["pid"])  # type: ignore[call-overload]
    os.kill(victim, signal.SIGKILL)
    assert count(db, "SELECT count(*) FROM events") < 60_000, "the kill came late"

    wait_for(lambda: bool(log_lines(log, "worker crashed; restarting it")), 60, "a restart")
    wait_for(lambda: count(db, "SELECT count(*) FROM events") == 60_000, 180, "every event")
    assert count(db, "SELECT count(DISTINCT event_id) FROM events") == 60_000
    assert count(db, "SELECT count(DISTINCT (_partition, _offset)) FROM events") == 60_000

    workers = [int(line["pid"]) for line in log_lines(log, "worker started")]  # type: ignore[call-overload]
    assert len(workers) == 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    assert not any(alive(pid) for pid in workers)


def test_the_first_worker_to_find_the_topic_landed_ends_the_run_for_all(
    kafka_broker: BrokerInfo, topic: TopicFactory, db: Path, tmp_path: Path
) -> None:
    name = topic(partitions=4)
    produce(kafka_broker.bootstrap, name, make_events(4_000))
    log = tmp_path / "process.log"
    with log.open("wb") as err:
        done = subprocess.run(
            supervised(kafka_broker, name, db, "--idle-timeout", "2", "--flush-interval", "0.2"),
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=180,
        )
    assert done.returncode == 0
    assert count(db, "SELECT count(*) FROM events") == 4_000
    assert len(log_lines(log, "a worker found the topic landed; stopping the others")) == 1
    assert len(log_lines(log, "worker started")) == 2


def test_the_workers_serve_one_metrics_endpoint_with_their_sums(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    db: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=4)
    produce(kafka_broker.bootstrap, name, make_events(4_000))
    port = free_port()
    proc = subprocess.Popen(
        supervised(kafka_broker, name, db, "--metrics-port", str(port), "--flush-interval", "0.2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running.append(proc)
    wait_for(lambda: committed_batches(db) > 0, 120, "a first batch")
    wait_for(lambda: count(db, "SELECT count(*) FROM events") == 4_000, 120, "all")

    def landed_per_metrics() -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return -1.0
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "agentwatch_pipeline_events_total"
        )

    wait_for(lambda: landed_per_metrics() == 4_000, 60, "/metrics to count every event")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0


def test_a_killed_supervisor_takes_its_workers_with_it(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    db: Path,
    tmp_path: Path,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=2)
    log = tmp_path / "process.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            supervised(kafka_broker, name, db), stdout=subprocess.DEVNULL, stderr=err
        )
    running.append(proc)
    wait_for(lambda: len(log_lines(log, "worker started")) == 2, 60, "two workers")
    workers = [int(line["pid"]) for line in log_lines(log, "worker started")]  # type: ignore[call-overload]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the workers to die")
