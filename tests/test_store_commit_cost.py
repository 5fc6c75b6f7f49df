"""A commit costs the same in a lake with many files' statistics as in a new one.

DuckLake keeps statistics for every file of every table (one row a column a file), and
each commit adds files until a maintenance pass merges them: 600,000 rows is about
4,300 commits, 18 minutes at 4 commits a second or less with more workers. A filter on
a column makes DuckLake read them all, so a commit whose offsets update filtered by
topic and partition took 0.8 s with 1.2 million rows instead of 0.08 s. The rows are
written here directly (rows of files that do not exist, which every query skips), by
another process as SQLite requires.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from agentwatch.processors.store.lake import LakeStore
from tests.test_store import commit, events, lake

MANY_STATISTICS = 600_000

_ADD_ROWS = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30)
con.executemany(
    "INSERT INTO ducklake_file_column_stats (data_file_id, table_id, column_id, value_count) "
    "VALUES (?, ?, ?, 0)",
    ((10**9 + i, 1, i % 40) for i in range(int(sys.argv[2]))),
)
con.commit()
"""


def _commit_seconds(store: LakeStore, first: int, times: int) -> float:
    """The median wall time of ``times`` commits of a small batch, from offset ``first``."""
    frame = events(5)
    took = []
    for i in range(times):
        start = time.perf_counter()
        assert commit(store, first + 10 * i, first + 10 * i + 9, frame)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def test_a_commit_does_not_slow_down_as_file_statistics_pile_up(tmp_path: Path) -> None:
    store = lake(tmp_path)
    db = store.db
    _commit_seconds(store, 0, 2)  # warm up: extensions loaded, tables created
    fresh = _commit_seconds(store, 100, 5)
    store.close()

    subprocess.run([sys.executable, "-c", _ADD_ROWS, str(db), str(MANY_STATISTICS)], check=True)
    store = LakeStore(db)
    _commit_seconds(store, 1_000, 1)
    aged = _commit_seconds(store, 2_000, 5)
    store.close()

    assert aged < 2 * fresh + 0.02, f"commit took {aged:.3f} s aged, {fresh:.3f} s fresh"
