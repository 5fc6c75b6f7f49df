"""The local Kafka broker, exercised for real: a JVM, a socket, records in and out."""

from __future__ import annotations

import argparse
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from kafka.consumer import KafkaConsumer
from kafka.producer import KafkaProducer

from agentwatch.broker.config import format_storage
from agentwatch.broker.launcher import BrokerInfo, broker_status, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.broker.runtime import BrokerError, java_executable, kafka_java_command
from agentwatch.broker.tls import BrokerSecurity
from agentwatch.commands import broker as broker_command
from agentwatch.settings import Settings
from agentwatch.topics import TopicSpec, ensure_topics
from tests.conftest import TopicFactory, require_tool


def run_cli(*argv: str) -> int:
    """Run `agentwatch broker ...` in-process through this module's own parser."""
    parser = argparse.ArgumentParser(prog="agentwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    broker_command.register(sub.add_parser("broker"), Settings())
    args = parser.parse_args(["broker", *argv])
    code: int = args.handler(args)
    return code


def run_entry_point(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the real `agentwatch` entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.integration
def test_started_broker_round_trips_records(kafka_broker: BrokerInfo, topic: TopicFactory) -> None:
    name = topic(partitions=3)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(30)}
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for key, value in sent.items():
        producer.send(name, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        name,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=f"group-{name}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20_000,
    )
    try:
        received: dict[bytes, bytes] = {}
        partitions_seen: set[int] = set()
        for record in consumer:
            received[record.key] = record.value
            partitions_seen.add(record.partition)
            if len(received) == len(sent):
                break
        assert consumer.partitions_for_topic(name) == {0, 1, 2}
        consumer.commit()
    finally:
        consumer.close()
    assert received == sent
    assert len(partitions_seen) > 1  # keys spread over the partitions


@pytest.mark.integration
def test_status_reports_the_running_broker(
    kafka_broker: BrokerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    info = broker_status(kafka_broker.data_dir)
    assert info is not None
    assert info.pid == kafka_broker.pid
    assert info.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert info.uptime >= 0

    assert run_cli("status", "--data-dir", str(kafka_broker.data_dir)) == 0
    out = capsys.readouterr().out
    assert "running" in out
    assert kafka_broker.bootstrap in out
    assert str(kafka_broker.pid) in out

    props = (kafka_broker.data_dir / "server.properties").read_text()
    assert "auto.create.topics.enable=false" in props
    assert f"advertised.listeners=PLAINTEXT://{kafka_broker.bootstrap}" in props


@pytest.mark.integration
def test_start_is_idempotent_on_the_same_data_dir(
    kafka_broker: BrokerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    again = start_broker(kafka_broker.data_dir, kafka_broker.port)
    assert again == kafka_broker

    args = ["--data-dir", str(kafka_broker.data_dir), "--port", str(kafka_broker.port)]
    assert run_cli("start", *args) == 0
    assert "already running" in capsys.readouterr().out
    assert broker_status(kafka_broker.data_dir) == kafka_broker


@pytest.mark.integration
def test_kafka_tools_run_from_the_same_jars(kafka_broker: BrokerInfo, topic: TopicFactory) -> None:
    name = topic(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for i in range(50):
        producer.send(name, value=b"x" * 100 + str(i).encode())
    producer.flush(timeout=30)
    producer.close()

    command = kafka_java_command(
        "org.apache.kafka.tools.ConsumerPerformance",
        ["--bootstrap-server", kafka_broker.bootstrap, "--topic", name, "--messages", "50"],
        heap="256m",
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    header, row = [line for line in result.stdout.splitlines() if "," in line][-2:]
    fields = dict(zip([h.strip() for h in header.split(",")], row.split(","), strict=True))
    assert int(fields["data.consumed.in.nMsg"]) == 50


@pytest.mark.integration
def test_stop_stops_it_and_a_restart_keeps_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_tool("kafka")
    require_tool("java")
    data_dir = tmp_path / "own-broker"
    info = start_broker(data_dir, free_port(), heap="256m")
    try:
        ensure_topics(info.bootstrap, [TopicSpec("kept", partitions=1)])
        cluster_id = (data_dir / "kafka-logs" / "meta.properties").read_text()

        assert stop_broker(data_dir) is True
        assert not port_accepts(info.port)
        with pytest.raises(ProcessLookupError):
            os.kill(info.pid, 0)
        assert broker_status(data_dir) is None
        assert not (data_dir / "broker.json").exists()

        assert stop_broker(data_dir) is False
        assert run_cli("stop", "--data-dir", str(data_dir)) == 0
        assert "no broker running" in capsys.readouterr().out
        status = run_entry_point("broker", "status", "--data-dir", str(data_dir))
        assert status.returncode == broker_command.EXIT_NOT_RUNNING, status.stderr
        assert "stopped" in status.stdout

        # Same storage, new client port: formatted once, so the topic is still there.
        info = start_broker(data_dir, free_port(), heap="256m")
        assert (data_dir / "kafka-logs" / "meta.properties").read_text() == cluster_id
        admin = KafkaAdminClient(bootstrap_servers=info.bootstrap)
        try:
            assert "kept" in admin.list_topics()
        finally:
            admin.close()
    finally:
        stop_broker(data_dir)
    assert not port_accepts(info.port)


@pytest.mark.parametrize("variable", ["KAFKA_HOME", "AGENTWATCH_KAFKA_LIBS"])
def test_missing_kafka_jars_is_a_clear_error(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTWATCH_KAFKA_LIBS", raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "no-kafka-here"))
    data_dir = tmp_path / "data"
    with pytest.raises(BrokerError) as caught:
        start_broker(data_dir, free_port())
    message = str(caught.value)
    assert "make install" in message
    assert "KAFKA_HOME" in message
    assert str(tmp_path / "no-kafka-here") in message
    assert not (data_dir / "broker.json").exists()
    with pytest.raises(BrokerError, match="make install"):
        kafka_java_command("org.apache.kafka.tools.ConsumerPerformance", [])


def test_old_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "jdk11" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(
        "#!/bin/sh\necho 'Property settings:' >&2\necho '    java.specification.version = 11' >&2\n"
    )
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("JAVA_HOME", str(java.parent.parent))
    with pytest.raises(BrokerError, match=r"Java 11; the Kafka broker needs Java 17\+"):
        java_executable()


def test_formatting_a_secure_broker_keeps_the_scram_password_out_of_the_process_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("kafka")
    require_tool("java")
    secure = BrokerSecurity(tmp_path)
    secure.password_file.parent.mkdir(parents=True)
    secure.password_file.write_text("s3cret-password\n")
    seen: list[tuple[list[str], str, int]] = []

    def run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        at = Path(cmd[-1].removeprefix("@"))
        seen.append((cmd, at.read_text(), stat.S_IMODE(at.stat().st_mode)))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    format_storage(tmp_path, tmp_path / "server.properties", "256m", secure)
    [(argv, arguments, mode)] = seen
    assert not any("s3cret-password" in a for a in argv)
    assert "password=s3cret-password" in arguments and mode == 0o600
    assert not list(tmp_path.glob("*.args"))  # gone once the storage is formatted
