"""Helpers for tests that run ``agentwatch otlp`` and other OTLP peers for real."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.attach import connect as connect_lake
from tests.pipeline_helpers import AGENTWATCH


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            raise AssertionError(f"{what} exited: {err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not listen on port {port}"
            time.sleep(0.1)


@contextmanager
def otlp_receiver(broker: BrokerInfo, topic: str, *extra: str) -> Iterator[int]:
    """``agentwatch otlp`` producing to ``topic``; yields its OTLP/HTTP port."""
    port = free_port()
    proc = subprocess.Popen(
        [*AGENTWATCH, "otlp", "--bootstrap", broker.bootstrap, "--topic", topic,
         "--http-port", str(port), "--grpc-port", "0", *extra],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(port, proc, "agentwatch otlp")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_records(broker: BrokerInfo, topic: str, at_least: int, timeout: float = 60) -> int:
    """Wait until ``topic`` holds ``at_least`` records (what an exporter sent asynchronously)."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while True:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            total = sum(consumer.end_offsets(parts).values()) if parts else 0
            if total >= at_least:
                return int(total)
            assert time.monotonic() < deadline, f"{topic} holds {total} records, not {at_least}"
            time.sleep(0.2)
    finally:
        consumer.close()


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = connect_lake(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
