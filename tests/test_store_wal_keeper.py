"""A lake's SQLite write-ahead log is kept while a landing process runs (wal_keeper)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentwatch.processors.store import wal_keeper
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE


def _wal(store: LakeStore) -> Path:
    metadata = store.location.metadata_file
    assert metadata is not None
    return metadata.with_name(metadata.name + "-wal")


def _write_once(store: LakeStore, partition: int = 0) -> None:
    store.recover("events", partition)  # a transaction that writes the partition's row


def test_the_last_connection_to_close_deletes_the_write_ahead_log(tmp_path: Path) -> None:
    """What the keeper prevents: each DuckDB transaction opens and closes a SQLite
    connection, and the last one to close checkpoints and deletes the log."""
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    _write_once(store)
    assert not _wal(store).exists()


@pytest.mark.parametrize("folder", ["lake", "a lake #1 ?%"])
def test_a_kept_lake_keeps_its_write_ahead_log_across_transactions(
    tmp_path: Path, folder: str
) -> None:
    store = LakeStore(tmp_path / folder / METADATA_FILE)
    store.prepare()
    keeper = wal_keeper.keep(store.location.metadata_file)
    try:
        assert keeper.child is not None
        _write_once(store)
        assert _wal(store).exists()
    finally:
        keeper.stop()


def test_stopping_the_keeper_ends_its_process_and_leaves_the_lake_readable(
    tmp_path: Path,
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    keeper = wal_keeper.keep(store.location.metadata_file)
    child = keeper.child
    assert child is not None
    _write_once(store)
    keeper.stop()
    assert child.returncode == 0
    assert not _wal(store).exists()  # the keeper was the last: it checkpointed on close
    assert store.read(lambda con: con.execute("SELECT count(*) FROM _offsets").fetchone())


def test_nothing_is_kept_for_a_lake_without_a_local_metadata_file() -> None:
    keeper = wal_keeper.keep(None)
    assert keeper.child is None
    keeper.stop()  # and stopping it is harmless


def test_a_keeper_that_cannot_open_the_database_holds_nothing(tmp_path: Path) -> None:
    keeper = wal_keeper.keep(tmp_path / "no-such-folder" / METADATA_FILE)
    assert keeper.child is None


def test_a_keeper_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(store.location.metadata_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    keeper_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(keeper_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(keeper_pid)


_PARENT = """
import sys, time
from pathlib import Path
from agentwatch.processors.store import wal_keeper
keeper = wal_keeper.keep(Path(sys.argv[1]))
print(keeper.child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: its parent is gone, init reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_keeper_that_cannot_open_the_database_says_why_in_one_log_line(
    tmp_path: Path,
) -> None:
    missing = tmp_path / METADATA_FILE
    done = subprocess.run(
        [sys.executable, "-c", _CANNOT_KEEP, str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "nothing held"
    (line,) = done.stderr.splitlines()  # the parent's warning; the child printed nothing
    assert "cannot keep the metadata database open" in line
    assert "unable to open database file" in line
    assert not missing.exists()  # it never creates one


_CANNOT_KEEP = """
import logging, sys
from pathlib import Path
from agentwatch.processors.store import wal_keeper
logging.basicConfig(format="%(levelname)s %(message)s %(error)s")
keeper = wal_keeper.keep(Path(sys.argv[1]))
print("nothing held" if keeper.child is None else "held")
"""
