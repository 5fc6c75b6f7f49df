"""Helpers for tests that run the processor against the real broker."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import duckdb
from kafka import KafkaProducer

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.processors.store.attach import StoreMissing, is_metadata_race
from agentwatch.processors.store.attach import connect as connect_lake
from tests.examples import valid_lines

AGENTWATCH = [sys.executable, "-m", "agentwatch.cli"]


def make_events(n: int, prefix: str = "e") -> list[tuple[bytes, bytes]]:
    """n valid events as (key, value), cycling through the contract's valid examples."""
    templates = [json.loads(line) for line in valid_lines()]
    out = []
    for i in range(n):
        event = dict(templates[i % len(templates)])
        event["event_id"] = f"{prefix}-{i}"
        event["session_id"] = f"{prefix}-s{i // 7}"
        out.append((event["session_id"].encode(), json.dumps(event).encode()))
    return out


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
    )
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def process_cmd(broker: BrokerInfo, topic: str, db: Path, *extra: str) -> list[str]:
    return [
        *AGENTWATCH, "process", "--bootstrap", broker.bootstrap, "--topic", topic,
        "--group", f"g-{topic}", "--db", str(db), "--session-timeout", "6", *extra,
    ]  # fmt: skip


def run_to_idle(broker: BrokerInfo, topic: str, db: Path, *extra: str) -> None:
    done = subprocess.run(
        process_cmd(broker, topic, db, "--idle-timeout", "3", *extra),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def count(db: Path, sql: str) -> int:
    con = connect_lake(db)
    try:
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition``; a lake a processor is still creating (no catalog, no tables yet,
    or a catalog table created under the read) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (StoreMissing, duckdb.CatalogException):
            pass
        except duckdb.Error as exc:
            if not is_metadata_race(exc):
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def committed_batches(db: Path, table: str = "events") -> int:
    """Commits so far: the lake snapshots that inserted into ``table`` (as a data file or
    inlined rows; one holds the batches a member landed together), read straight from the
    SQLite catalog, cheap enough to poll."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            ids = [r[0] for r in con.execute(DUCKLAKE_TABLE_IDS, [table])]
            changes = [
                r[0] for r in con.execute("SELECT changes_made FROM ducklake_snapshot_changes")
            ]
    except sqlite3.OperationalError:  # the catalog is still being created
        return 0
    marks = {f"{kind}:{i}" for i in ids for kind in ("inserted_into_table", "inlined_insert")}
    return sum(1 for made in changes if marks & set((made or "").split(",")))


DUCKLAKE_TABLE_IDS = "SELECT DISTINCT table_id FROM ducklake_table WHERE table_name = ?"
