"""A busy SQLite metadata database costs the writer and the analysts' sandbox a retry of
milliseconds, not the whole second the extension's SQLite sleeps between attempts.

Another process holds the metadata database's file lock for a quarter of a second, as a
closing SQLite connection does for an instant; a statement that meets it must finish
soon after the lock goes, with its normal result.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from agentwatch.processors.query.sandbox import connect, execute
from agentwatch.processors.store.attach import BUSY_RETRY_S, MAX_BUSY_RETRIES, retry_busy
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.test_sql_sandbox import events

HOLD_S = 0.25
# Well under the second the SQLite default busy handler sleeps (the old behaviour).
WITHIN_S = 0.9

_HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA locking_mode=EXCLUSIVE")
con.execute("BEGIN EXCLUSIVE")
con.execute("SELECT count(*) FROM sqlite_master").fetchall()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
con.close()
"""


def hold_lock(metadata: Path) -> subprocess.Popen[str]:
    """Another process holding the metadata database's exclusive lock for ``HOLD_S``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(metadata), str(HOLD_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def lake(tmp_path: Path) -> LakeStore:
    store = LakeStore(tmp_path / METADATA_FILE)
    store.insert("events", events(0, 5))
    return store


def test_a_writer_meeting_a_busy_metadata_database_commits_soon_after_it_frees(
    lake: LakeStore,
) -> None:
    holder = hold_lock(Path(lake.db))
    started = time.monotonic()
    lake.insert("events", events(5, 5))
    took = time.monotonic() - started
    holder.wait(timeout=10)
    assert took < WITHIN_S
    assert lake.read(lambda con: con.execute("SELECT count(*) FROM events").fetchone()) == (10,)


def test_a_sandbox_query_meeting_a_busy_metadata_database_answers_soon_after_it_frees(
    lake: LakeStore,
) -> None:
    con = connect(lake.db)
    lake.insert("events", events(5, 1))  # a new snapshot, which the query must read
    holder = hold_lock(Path(lake.db))
    started = time.monotonic()
    rows = execute(con, "SELECT count(*) FROM events").fetchall()
    took = time.monotonic() - started
    holder.wait(timeout=10)
    con.close()
    assert took < WITHIN_S
    assert rows == [(6,)]


def test_a_read_busy_for_longer_than_its_retries_fails_with_the_busy_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)  # the module attach.py sleeps with
    calls = []

    def always_busy() -> None:
        calls.append(1)
        raise duckdb.Error("database is locked")

    with pytest.raises(duckdb.Error, match="database is locked"):
        retry_busy(always_busy)
    assert len(calls) == MAX_BUSY_RETRIES
    assert waits == [BUSY_RETRY_S * 2**i for i in range(MAX_BUSY_RETRIES - 1)]


def test_other_errors_are_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise duckdb.Error("Catalog Error: Table with name nope does not exist")

    with pytest.raises(duckdb.Error, match="nope"):
        retry_busy(broken)
    assert calls == [1]
