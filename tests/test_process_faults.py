"""`agentwatch process` meets faults: wrong address, broker outages, a dead member, a full disk."""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError

from agentwatch.broker.launcher import BrokerInfo, broker_status, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.cli import build_parser, main
from agentwatch.logs import RateLimitFilter
from agentwatch.processors.landing.config import ProcessorConfig
from agentwatch.processors.landing.faults import EXIT_STORAGE, Outage, is_transient
from agentwatch.processors.landing.processor import Processor
from agentwatch.processors.store.lake import Batch, LakeStore
from agentwatch.settings import Settings
from agentwatch.topics import TopicSpec, ensure_topics
from tests.conftest import TopicFactory, require_tool
from tests.pipeline_helpers import count, make_events, process_cmd, produce, wait_for

LANDED = "SELECT count(DISTINCT event_id) FROM events"
ROWS = "SELECT count(*) FROM events"


def _assigned(log: Path) -> bool:
    return "partition assigned" in stderr_of(log)


def test_a_wrong_bootstrap_fails_within_10_s_with_one_line_and_exit_1(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    build_parser(Settings())  # imports done: time the command, not a cold interpreter
    began = time.monotonic()
    code = main(["process", "--bootstrap", address, "--db", str(tmp_path / "a.sqlite")])
    elapsed = time.monotonic() - began
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 1
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"agentwatch: no Kafka broker answered at {address}")


class Outages:
    """A broker of this module's own, stopped and started again at the same address."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port

    @property
    def info(self) -> BrokerInfo:
        return BrokerInfo(0, self.port, 0, f"127.0.0.1:{self.port}", self.data_dir, 0.0)

    def start(self) -> None:
        start_broker(self.data_dir, self.port, heap="384m")

    def stop(self) -> None:
        stop_broker(self.data_dir)


@pytest.fixture(scope="module")
def outages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outages]:
    require_tool("kafka")
    require_tool("java")
    broker = Outages(tmp_path_factory.mktemp("outage-broker"), free_port())
    try:
        yield broker
    finally:
        broker.stop()


def stderr_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.integration
def test_the_processor_rides_out_a_broker_outage_mid_run_and_lands_each_event_once(
    outages: Outages, tmp_path: Path
) -> None:
    if broker_status(outages.data_dir) is None:
        outages.start()
    topic, db, log = "mid-run", tmp_path / "data" / "a.sqlite", tmp_path / "process.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            process_cmd(outages.info, topic, db, "--idle-timeout", "3", "--flush-interval", "0.3",
                        "--workers", "1"),  # one member: one line per outage
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_for(lambda: "partition assigned" in stderr_of(log), 90, "partitions assigned")
        produce(outages.info.bootstrap, topic, make_events(300, "before"))
        wait_for(lambda: db.exists() and count(db, ROWS) == 300, 60, "the first 300 landed")
        outages.stop()
        wait_for(lambda: "lost contact with Kafka" in stderr_of(log), 30, "the outage noticed")
        assert proc.poll() is None, stderr_of(log)[-3000:]
        outages.start()
        produce(outages.info.bootstrap, topic, make_events(300, "after"))
        assert proc.wait(timeout=180) == 0, stderr_of(log)[-3000:]
    finally:
        proc.kill()
        proc.wait()
    text = stderr_of(log)
    assert text.count("lost contact with Kafka") == 1
    assert "Kafka reachable again" in text
    assert count(db, ROWS) == count(db, LANDED) == 600


@pytest.mark.integration
def test_a_broker_that_stops_during_a_commit_loses_and_duplicates_nothing(
    outages: Outages,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if broker_status(outages.data_dir) is None:
        outages.start()
    topic, db = "in-commit", tmp_path / "data" / "a.sqlite"
    ensure_topics(outages.info.bootstrap, [TopicSpec(topic)])
    produce(outages.info.bootstrap, topic, make_events(300, "before"))
    config = ProcessorConfig(
        bootstrap=outages.info.bootstrap, db=db, topic=topic, group=f"g-{topic}",
        idle_timeout_s=3.0, flush_interval_s=0.3, max_batch=100, session_timeout_s=6.0,
    )  # fmt: skip
    processor = Processor(config)
    stopped = threading.Event()
    commit = processor.store.commit_batches

    def commit_while_the_broker_stops(batches: Sequence[Batch]) -> list[bool]:
        def then_stop_the_broker(before_commit: Callable[[], None]) -> None:
            before_commit()
            if not stopped.is_set():  # the batch's transaction is open, its commit is next
                outages.stop()
                stopped.set()

        return commit(
            [
                replace(b, before_commit=partial(then_stop_the_broker, b.before_commit))
                for b in batches
            ]
        )

    monkeypatch.setattr(processor.store, "commit_batches", commit_while_the_broker_stops)
    ran: dict[str, object] = {}
    thread = threading.Thread(target=lambda: ran.update(stats=processor.run()), daemon=True)
    with caplog.at_level(logging.INFO, logger="agentwatch.processors.landing.faults"):
        thread.start()
        try:
            assert stopped.wait(120), "no batch was committed"
            wait_for(lambda: "lost contact with Kafka" in caplog.text, 60, "the outage noticed")
            outages.start()
            produce(outages.info.bootstrap, topic, make_events(300, "after"))
            thread.join(180)
            assert not thread.is_alive(), "the processor did not finish after the outage"
        finally:
            processor.stop()
            thread.join(30)
    assert "stats" in ran, caplog.text[-3000:]
    assert "Kafka reachable again" in caplog.text
    assert count(db, ROWS) == count(db, LANDED) == 600


@pytest.mark.integration
def test_the_processor_waits_out_a_broker_that_is_down_at_start(
    outages: Outages, tmp_path: Path
) -> None:
    outages.stop()
    topic, db, log = "at-start", tmp_path / "data" / "a.sqlite", tmp_path / "process.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            process_cmd(outages.info, topic, db, "--idle-timeout", "3",
                        "--connect-timeout", "180"),
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        time.sleep(1)  # the processor is retrying its first contact now
        assert proc.poll() is None, stderr_of(log)[-3000:]
        outages.start()
        wait_for(lambda: "partition assigned" in stderr_of(log), 90, "partitions assigned")
        produce(outages.info.bootstrap, topic, make_events(200, "late"))
        assert proc.wait(timeout=120) == 0, stderr_of(log)[-3000:]
    finally:
        proc.kill()
        proc.wait()
    assert count(db, ROWS) == count(db, LANDED) == 200


def test_idle_timeout_waits_for_the_partitions_of_a_killed_member(
    kafka_broker: BrokerInfo, topic: TopicFactory, tmp_path: Path
) -> None:
    name, db = topic(partitions=4), tmp_path / "data" / "a.sqlite"
    logs = [tmp_path / "slow.log", tmp_path / "idle.log"]
    # The first member never lands by itself; the second exits once idle.
    commands = [
        process_cmd(kafka_broker, name, db, "--flush-interval", "600"),
        process_cmd(kafka_broker, name, db, "--idle-timeout", "2", "--flush-interval", "0.3"),
    ]
    procs = []
    try:
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as err:
                procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err))
            wait_for(partial(_assigned, log), 90, f"{log.stem} assigned")
        # the slow member's partitions after the rebalance
        wait_for(lambda: stderr_of(logs[0]).count("partition assigned") >= 6, 60, "rebalance")
        produce(kafka_broker.bootstrap, name, make_events(400, "k"))
        wait_for(lambda: db.exists() and count(db, ROWS) > 0, 60, "the idle member's share")
        procs[0].send_signal(signal.SIGKILL)
        assert procs[1].wait(timeout=120) == 0, stderr_of(logs[1])[-3000:]
        assert count(db, ROWS) == count(db, LANDED) == 400
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


FILE_LIMIT = 4 * 1024 * 1024  # the catalog and its log fit; one batch's data file does not


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def big_events(n: int) -> list[tuple[bytes, bytes]]:
    """Events whose ids carry 4 KB of random text: a batch of them cannot compress below the
    file size limit."""
    return [
        (key, value.replace(b'"big-', f'"big-{os.urandom(2048).hex()}-'.encode(), 1))
        for key, value in make_events(n, "big")
    ]


def test_a_full_disk_ends_the_run_with_that_error_last_and_no_temp_files(
    kafka_broker: BrokerInfo, topic: TopicFactory, tmp_path: Path
) -> None:
    name, db = topic(), tmp_path / "data" / "a.sqlite"
    LakeStore(db).prepare()  # the catalog fits; the first batch's data does not
    produce(kafka_broker.bootstrap, name, big_events(4000))
    done = subprocess.run(
        process_cmd(kafka_broker, name, db, "--idle-timeout", "5", "--max-batch", "4000",
                    "--workers", "1"),
        capture_output=True, text=True, timeout=180, preexec_fn=_small_files,
    )  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == EXIT_STORAGE, done.stderr[-3000:]
    assert last.startswith("agentwatch: storing partition"), last
    assert "File too large" in last
    # Nothing of the batch committed: it lands whole on a retry.
    assert count(db, "SELECT count(*) FROM events") == 0
    assert list(db.parent.rglob(".tmp-*")) == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def library_record(msg: str, name: str = "kafka.net.manager") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def test_kafka_python_lines_pass_once_a_minute_per_kind_with_a_count_of_the_dropped() -> None:
    clock = FakeClock()
    limiter = RateLimitFilter(60.0, clock)
    retry = "Bootstrap connection to %s failed"
    passed = [limiter.filter(library_record(retry)) for _ in range(50)]
    assert passed == [True] + [False] * 49
    assert limiter.filter(library_record("Connection lost"))  # another kind
    assert limiter.filter(logging.LogRecord("agentwatch.x", 30, "", 1, retry, None, None))
    clock.now = 61.0
    later = library_record(retry)
    assert limiter.filter(later)
    assert later.suppressed == 49  # type: ignore[attr-defined]


def test_kafka_python_lines_formatted_already_are_one_kind_whatever_their_numbers() -> None:
    limiter = RateLimitFilter(60.0, FakeClock())
    slow = "Task <Task object at {}> ran for {}s (>0.100s threshold). It is blocking the event loop"
    first = library_record(slow.format("0x7f094dd02e10", "0.103"))
    again = library_record(slow.format("0x7f094a970fd0", "0.208"))
    assert limiter.filter(first)
    assert not limiter.filter(again)


def test_an_outage_logs_one_line_when_it_begins_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    outage = Outage(initial_s=0.2, max_s=5.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="agentwatch.processors.landing.faults"):
        delays = [outage.failed(KafkaConnectionError("refused"), "consuming") for _ in range(8)]
        clock.now = 12.5
        outage.recovered()
        outage.recovered()
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "lost contact with Kafka; retrying with backoff",
        "Kafka reachable again; resuming after the last committed batch",
    ]
    assert caplog.records[1].outage_s == 12.5  # type: ignore[attr-defined]


def test_wrong_credentials_are_not_waited_out() -> None:
    assert is_transient(KafkaConnectionError("refused"))
    assert not is_transient(SaslAuthenticationFailedError("bad password"))
    assert not is_transient(OSError(28, "No space left on device"))


def test_a_processor_started_right_after_its_topic_is_created_gets_partitions_20_times(
    kafka_broker: BrokerInfo, topic: TopicFactory, tmp_path: Path
) -> None:
    for attempt in range(20):
        name = topic()
        produce(kafka_broker.bootstrap, name, make_events(5, f"a{attempt}"))
        db = tmp_path / f"run{attempt}" / "a.sqlite"
        config = ProcessorConfig(
            bootstrap=kafka_broker.bootstrap, db=db, topic=name, group=f"g-{name}",
            idle_timeout_s=0.5, flush_interval_s=0.1, session_timeout_s=6.0,
        )  # fmt: skip
        processor = Processor(config)
        timer = threading.Timer(30.0, processor.stop)  # a stuck start fails below
        timer.start()
        try:
            began = time.monotonic()
            stats = processor.run()
        finally:
            timer.cancel()
        assert stats.events == 5, f"start {attempt}: {stats}"
        assert time.monotonic() - began < 30
