"""Several machines, one lake: a PostgreSQL catalog and an S3 data path, for real.

PostgreSQL from Debian's packages and moto's S3 server are started by the tests
(``tests/services.py``); processors are ``agentwatch process`` commands against the real
broker, as they would run on separate machines sharing nothing but the catalog, the
bucket and Kafka.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.processors.store import maintain as maintenance
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.attach import detach_all
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import DATA_PATH_ENV
from agentwatch.processors.store.rollups import TIERS
from tests.conftest import TopicFactory
from tests.frames import store_batch
from tests.pipeline_helpers import AGENTWATCH, make_events, produce, wait_for
from tests.services import PG_PASSWORD, S3_BUCKET, PostgresServer, S3Server
from tests.test_store import TOPIC, events
from tests.test_store_maintain import KEEP_30_DAYS, NOW, no_pause, tier_totals
from tests.test_store_maintain import batch as minute_batch

ROWS = "SELECT count(*) FROM events"
DISTINCT = "SELECT count(DISTINCT event_id) FROM events"
PLACES = "SELECT count(DISTINCT (_partition, _offset)) FROM events"


@pytest.fixture(autouse=True)
def detached() -> Iterator[None]:
    """Each test's lakes are detached from this process's DuckDB instance when it ends:
    their server or password goes away, and a lake attached to a server that is gone
    fails every catalog-wide listing of the instance."""
    yield
    detach_all()


@pytest.fixture
def lake(postgres_db: str, s3_data_path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A PostgreSQL-catalog lake whose data path is on S3; what ``--db`` takes."""
    monkeypatch.setenv(DATA_PATH_ENV, s3_data_path)  # this process and its commands
    return postgres_db


def process(broker: BrokerInfo, topic: str, db: str, *extra: str) -> list[str]:
    return [
        *AGENTWATCH, "process", "--bootstrap", broker.bootstrap, "--topic", topic,
        "--group", f"g-{topic}", "--db", db, "--session-timeout", "6", *extra,
    ]  # fmt: skip


def count(db: str, sql: str) -> int:
    con = connect_lake(db)
    try:
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def analyst(db: str, sql: str) -> list[dict[str, object]]:
    """What ``agentwatch sql`` answers, as a separate read-only process."""
    done = subprocess.run(
        [*AGENTWATCH, "sql", sql, "--db", db, "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


def test_processors_on_several_machines_land_one_topic_into_one_lake_exactly_once(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    lake: str,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=6)
    produced = make_events(12_000)
    produce(kafka_broker.bootstrap, name, produced + produced[:1_000])  # 1,000 sent twice
    small = ("--idle-timeout", "4", "--max-batch", "1000", "--flush-interval", "0.2")
    procs = [
        subprocess.Popen(process(kafka_broker, name, lake, *small), stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    running.extend(procs)
    for proc in procs:
        _, err = proc.communicate(timeout=280)
        assert proc.returncode == 0, err[-3000:]
    assert count(lake, ROWS) == count(lake, DISTINCT) == 12_000


PREPARE_AT = """
import sys, time
from agentwatch.processors.store.lake import LakeStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
LakeStore(sys.argv[1]).prepare()
"""


def test_processors_starting_together_on_an_empty_catalog_all_attach(lake: str) -> None:
    # Each finds no catalog and creates one; PostgreSQL lets one win, the others attach.
    at = str(time.time() + 8)  # after every interpreter has started
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE_AT, lake, at],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    errors = [proc.communicate(timeout=240)[1].decode(errors="replace") for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, "\n".join(errors)[-3000:]
    assert count(lake, ROWS) == 0


def test_the_catalog_password_can_come_from_pgpassword_instead_of_the_dsn(
    postgres_server: PostgresServer, s3_data_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_server.create_database("lake_pgpassword")
    db = "postgres:" + postgres_server.dsn("lake_pgpassword", with_password=False)
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    monkeypatch.setenv(DATA_PATH_ENV, s3_data_path)
    store = LakeStore(db)
    store.prepare()
    store.recover(TOPIC, 0)
    assert store.commit_batch(TOPIC, 0, (0, 12), events(), pl.DataFrame())
    assert analyst(db, "SELECT count(*) AS n FROM events") == [{"n": events().height}]


def test_a_member_that_lost_its_partition_cannot_commit_over_the_new_owner_on_postgres(
    lake: str,
) -> None:
    owner, zombie = LakeStore(lake), LakeStore(lake)
    owner.prepare()
    owner.recover(TOPIC, 0)
    assert zombie.committed_last_offset(TOPIC, 0) is None  # the zombie read this, then stalled
    assert owner.commit_batch(TOPIC, 0, (100, 149), events(), pl.DataFrame())
    assert not zombie.commit_batch(TOPIC, 0, (100, 112), events(), pl.DataFrame())
    assert count(lake, ROWS) == events().height
    assert owner.committed_last_offset(TOPIC, 0) == 149


def test_a_zombie_whose_transaction_overlaps_the_new_owners_gets_a_conflict_and_stores_nothing(
    lake: str, caplog: pytest.LogCaptureFixture
) -> None:
    owner, zombie = LakeStore(lake), LakeStore(lake)
    owner.prepare()
    owner.recover(TOPIC, 0)

    def new_owner_commits_meanwhile() -> None:
        # The zombie's transaction has read offset -1 and not committed yet.
        assert owner.commit_batch(TOPIC, 0, (100, 149), events(), pl.DataFrame())

    with caplog.at_level(logging.INFO, logger="agentwatch.processors.store.lake"):
        stored = zombie.commit_batch(
            TOPIC, 0, (100, 112), events(), pl.DataFrame(), new_owner_commits_meanwhile
        )
    messages = [r.getMessage() for r in caplog.records]
    assert "write conflict, retrying" in messages
    assert "dropping a batch another member already committed" in messages
    assert not stored
    assert count(lake, ROWS) == events().height
    assert owner.committed_last_offset(TOPIC, 0) == 149


def test_sigkill_of_a_processor_mid_stream_loses_and_duplicates_nothing_on_postgres(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    lake: str,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=3)
    produce(kafka_broker.bootstrap, name, make_events(30_000))
    small = ("--max-batch", "1000", "--flush-interval", "0.2")
    proc = subprocess.Popen(
        process(kafka_broker, name, lake, *small),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    running.append(proc)
    wait_for(lambda: _landed(lake) >= 3_000, 180, "some batches to commit")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert count(lake, ROWS) < 30_000, "the kill came after everything landed"

    done = subprocess.run(
        process(kafka_broker, name, lake, "--idle-timeout", "3", *small),
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert count(lake, ROWS) == count(lake, DISTINCT) == count(lake, PLACES) == 30_000


def test_an_analyst_queries_the_lake_read_only_while_processors_land(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    lake: str,
    running: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    name = topic(partitions=4)
    produce(kafka_broker.bootstrap, name, make_events(4_000, "first"))
    logs = [tmp_path / f"process-{i}.log" for i in range(2)]
    for log in logs:
        with log.open("wb") as err:
            running.append(
                subprocess.Popen(
                    process(kafka_broker, name, lake, "--flush-interval", "0.2"),
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    wait_for(lambda: _landed(lake) > 0, 180, "the first batch")
    produce_in_waves(kafka_broker.bootstrap, name, make_events(4_000, "second"), waves=20)
    seen: list[int] = []
    while not seen or seen[-1] < 8_000:
        rows = analyst(lake, "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events")
        assert rows[0]["n"] == rows[0]["ids"], "a reader saw a duplicate"
        seen.append(int(str(rows[0]["n"])))
        assert seen == sorted(seen), "a later reader saw fewer events"
        assert len(seen) < 200, f"never saw all 8,000 events: {seen[-5:]}"
    for proc, log in zip(running, logs, strict=True):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    by_kind = analyst(lake, "SELECT kind, count(*) AS n FROM events GROUP BY kind")
    assert sum(int(str(row["n"])) for row in by_kind) == 8_000
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(timeout=90) for proc in running] == [0, 0]


def test_store_maintain_merges_the_files_of_a_lake_processors_land_into(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    lake: str,
    s3_server: S3Server,
    running: list[subprocess.Popen[bytes]],
) -> None:
    name = topic(partitions=2)
    proc = subprocess.Popen(
        process(kafka_broker, name, lake, "--flush-interval", "0.1", "--maintain-interval", "0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    running.append(proc)
    produce_in_waves(kafka_broker.bootstrap, name, make_events(3_000, "old"), waves=30)
    wait_for(lambda: _landed(lake) == 3_000, 240, "the first 3,000 events")
    prefix = os.environ[DATA_PATH_ENV].removeprefix(f"s3://{S3_BUCKET}/")
    objects_before = set(s3_server.object_keys(prefix))
    produce(kafka_broker.bootstrap, name, make_events(1_000, "new"))  # lands during the pass

    merged = maintain(lake)
    assert merged["files_after"] < merged["files_before"] / 3, merged
    # Files replaced in a pass are deleted by a later one, once past the grace period.
    assert maintain(lake)["files_removed"] > 0
    # the new events land files meanwhile: it is the old objects that must be gone
    assert objects_before - set(s3_server.object_keys(prefix))
    wait_for(lambda: _landed(lake) == 4_000, 240, "the next 1,000 events")
    assert count(lake, ROWS) == count(lake, DISTINCT) == 4_000
    assert proc.poll() is None, "the processor keeps landing through maintenance"


def maintain(db: str) -> dict[str, Any]:
    """One ``agentwatch store maintain`` pass with no grace period: its JSON summary."""
    done = subprocess.run(
        [*AGENTWATCH, "store", "maintain", "--db", db, "--snapshot-grace", "0"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def produce_in_waves(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], waves: int
) -> None:
    """Produce ``messages`` in ``waves`` parts a moment apart, as a steady trickle would."""
    size = -(-len(messages) // waves)
    for start in range(0, len(messages), size):
        produce(bootstrap, topic, messages[start : start + size])
        time.sleep(0.3)


def _landed(db: str) -> int:
    try:
        return count(db, ROWS)
    except Exception:  # no lake until the first processor creates it
        return 0


def test_a_batch_committed_inside_a_swap_of_its_minutes_counts_once_on_postgres(
    lake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No write lock guards a PostgreSQL lake: a processor commits while a pass swaps the
    minutes it lands into. The swap reads the rows added since its pass began at its own
    transaction's snapshot, as its delete sees them, so a batch committed after that
    snapshot is neither merged in nor deleted: it stays, counted once."""
    store, processor = LakeStore(lake), LakeStore(lake)
    for first in (0, 100):  # two partial rows of each minute's keys
        store_batch(store, minute_batch(first, age_days=1.0))
    before = tier_totals(store)
    committed_inside: list[int] = []
    snapshot = maintenance._snapshot

    def commit_inside_the_swap(con: duckdb.DuckDBPyConnection, alias: str) -> int:
        if sys._getframe(1).f_code.co_name != "swap" or committed_inside:
            return snapshot(con, alias)
        started = snapshot(con, alias)  # the swap's transaction has read the lake
        extra = minute_batch(200, age_days=1.0)
        store_batch(processor, extra)
        committed_inside.append(extra.height)
        assert snapshot(con, alias) == started, "the transaction's snapshot moved"
        return started

    monkeypatch.setattr(maintenance, "_snapshot", commit_inside_the_swap)
    report = maintenance.maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert committed_inside and report.rollup_rows_merged > 0
    after = tier_totals(store)
    for table in TIERS:
        got, was = after[table], before[table]
        assert got is not None and was is not None
        assert isinstance(was[1], int), table
        assert got[1] == was[1] + committed_inside[0], table  # events, each counted once
