"""Lake maintenance: retention, merging small files, expiring snapshots, deleting dead files.

Every landed batch adds a file (or, under DuckLake's inlining limit, metadata rows), so
without maintenance queries would open ever more files and the metadata database would keep every
snapshot forever. One pass, in this order:

1. **retention**: delete each table's rows older than its ``retention_days`` (0 keeps
   them), except the rows of agents under legal hold;
2. **rollups**: merge the partial rows each landed batch added to every rollup tier, one
   row per period and keys (rollups.py), so the metrics views read few rows;
3. **flush** rows inlined in the metadata database into Parquet files;
4. **rewrite** files that have deleted rows (step 2 deletes from the recent files of
   every tier at each pass, and DuckLake merges no file with deletions: without this
   the tiers' files and delete files grew by about one per commit);
5. **merge** adjacent small files into larger ones, up to ``MERGED_FILE_BYTES``;
6. **expire** snapshots older than the grace period;
7. **clean up** the files those snapshots alone still referenced, and orphaned files
   (a SIGKILLed writer leaves its half-written files behind), older than the grace.

Readers never fail: a query holds its snapshot, and nothing it may read is deleted
before the grace period (longer than any query) has passed. Each step is its own
transaction, so landing waits for at most one step. One member at a time maintains a
lake: it holds a lease row in ``_leases`` while it works (:func:`try_lease`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import duckdb

from agentwatch.clock import Clock, utc_now
from agentwatch.processors.store.lake import LakeStore, insert_rows
from agentwatch.processors.store.rollups import KEYS, TIERS, merge_rows
from agentwatch.processors.store.tables import TABLE_SCHEMAS

log = logging.getLogger(__name__)

# How far back from its newest period a pass merges a rollup tier's partial rows.
COMPACT_HORIZON: Final = "INTERVAL 2 DAY"
# Files this large are merged no further: a pass rewrites what landed since the last,
# not the whole history (DuckLake's default limit, its target file size, is 512 MB).
MERGED_FILE_BYTES: Final = 16 << 20
LEASES_TABLE: Final = "_leases"
LEASE_NAME: Final = "maintenance"
# The column a table's age is judged by, where it is not ``ts``.
AGE_COLUMN: Final = {"dead_letters": "_kafka_ts", **dict.fromkeys(TIERS, "window_start")}


@dataclass(frozen=True)
class MaintenancePolicy:
    """What one pass keeps: ``[storage]`` retention_days, legal_hold, snapshot_grace."""

    retention_days: Mapping[str, int]
    legal_hold: Sequence[str] = ()
    grace_s: float = 3600.0


@dataclass
class MaintenanceReport:
    rows_deleted: dict[str, int] = field(default_factory=dict)
    rollup_rows_merged: int = 0  # partial rollup rows gone into merged ones
    files_before: int = 0
    files_after: int = 0
    snapshots_expired: int = 0
    files_removed: int = 0
    seconds: float = 0.0


def maintain(
    store: LakeStore, policy: MaintenancePolicy, clock: Clock = utc_now
) -> MaintenanceReport:
    """One maintenance pass over the lake (see the module's docstring for the order)."""
    started = clock()
    report = MaintenanceReport(files_before=data_files(store))
    for table, days in policy.retention_days.items():
        if days <= 0 or table not in TABLE_SCHEMAS:
            continue
        deleted = _apply_retention(
            store, table, started - dt.timedelta(days=days), policy.legal_hold
        )
        if deleted:
            report.rows_deleted[table] = deleted
    report.rollup_rows_merged = sum(compact_rollups(store, t, e) for t, e in TIERS.items())
    horizon = started - dt.timedelta(seconds=policy.grace_s)
    _call(store, f"CALL ducklake_flush_inlined_data('{store.alias}')")
    _call(store, f"CALL ducklake_rewrite_data_files('{store.alias}', delete_threshold => 0)")
    _call(
        store,
        f"CALL ducklake_merge_adjacent_files('{store.alias}', max_file_size => ?)",
        [MERGED_FILE_BYTES],
    )
    report.snapshots_expired = _call(
        store, f"CALL ducklake_expire_snapshots('{store.alias}', older_than => ?)", [horizon]
    )
    report.files_removed = _call(
        store, f"CALL ducklake_cleanup_old_files('{store.alias}', older_than => ?)", [horizon]
    ) + _call(
        store, f"CALL ducklake_delete_orphaned_files('{store.alias}', older_than => ?)", [horizon]
    )
    report.files_after = data_files(store)
    report.seconds = (clock() - started).total_seconds()
    log.info(
        "lake maintained",
        extra={
            "rows_deleted": report.rows_deleted,
            "rollup_rows_merged": report.rollup_rows_merged,
            "files_before": report.files_before,
            "files_after": report.files_after,
            "snapshots_expired": report.snapshots_expired,
            "files_removed": report.files_removed,
            "seconds": round(report.seconds, 3),
        },
    )
    return report


def compact_rollups(store: LakeStore, table: str, every: str) -> int:
    """Merge a rollup tier's partial rows, in one transaction; the rows it saved.

    Only periods holding several rows of the same keys are rewritten, and only within
    ``COMPACT_HORIZON`` of the newest, where batches land: a pass costs the same whatever
    the history (older partial rows, of a replay or a reprice, stay correct). Rows a batch
    commits meanwhile are not in this transaction's snapshot, so they are neither
    deleted nor merged: they stay as partial rows for the next pass.
    """
    keys = ", ".join(KEYS)
    recent = f"window_start >= (SELECT max(window_start) FROM {table}) - {COMPACT_HORIZON}"
    periods = (
        f"SELECT DISTINCT window_start FROM {table} WHERE {recent} "
        f"GROUP BY {keys} HAVING count(*) > 1"
    )

    def merge(con: duckdb.DuckDBPyConnection) -> int:
        where = f"window_start IN ({periods})"
        rows = con.execute(f"SELECT * FROM {table} WHERE {where}").pl()
        if rows.is_empty():
            return 0
        merged = merge_rows(rows, every)
        con.execute(f"DELETE FROM {table} WHERE {where}")
        insert_rows(con, table, merged)
        return rows.height - merged.height

    with store.write_lock():
        return store.transaction(merge)


def data_files(store: LakeStore) -> int:
    """The Parquet files the lake's current snapshot reads."""
    parts = [
        f"SELECT count(*) AS n FROM ducklake_list_files('{store.alias}', '{t}')"
        for t in TABLE_SCHEMAS
    ]
    sql = f"SELECT sum(n) FROM ({' UNION ALL '.join(parts)})"
    row = store.read(lambda con: con.execute(sql).fetchone())
    return int(row[0]) if row is not None and row[0] is not None else 0


def try_lease(store: LakeStore, holder: str, ttl_s: float, clock: Clock = utc_now) -> bool:
    """Take or renew the maintenance lease for ``ttl_s``; False when another holds it."""
    now = clock()
    until = now + dt.timedelta(seconds=ttl_s)

    def take(con: duckdb.DuckDBPyConnection) -> bool:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {LEASES_TABLE} "
            "(name VARCHAR, holder VARCHAR, expires_at TIMESTAMPTZ)"
        )
        row = con.execute(
            f"SELECT holder, expires_at FROM {LEASES_TABLE} WHERE name = ?", [LEASE_NAME]
        ).fetchone()
        if row is None:
            con.execute(f"INSERT INTO {LEASES_TABLE} VALUES (?, ?, ?)", [LEASE_NAME, holder, until])
            return True
        current, expires = row
        if current != holder and expires > now:
            return False
        moved = con.execute(
            f"UPDATE {LEASES_TABLE} SET holder = ?, expires_at = ? "
            "WHERE name = ? AND holder = ? AND expires_at = ?",
            [holder, until, LEASE_NAME, current, expires],
        ).fetchone()
        return moved is not None and moved[0] == 1

    with store.write_lock():
        return store.transaction(take)


def holder_name() -> str:
    """Who holds a lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _apply_retention(
    store: LakeStore, table: str, cutoff: dt.datetime, legal_hold: Sequence[str]
) -> int:
    column = AGE_COLUMN.get(table, "ts")
    where = f"{column} < ?"
    params: list[object] = [cutoff]
    if legal_hold and "agent_id" in TABLE_SCHEMAS[table]:
        where += f" AND coalesce(agent_id, '') NOT IN ({', '.join('?' for _ in legal_hold)})"
        params += list(legal_hold)

    def delete(con: duckdb.DuckDBPyConnection) -> int:
        row = con.execute(f"DELETE FROM {table} WHERE {where}", params).fetchone()
        return int(row[0]) if row is not None else 0

    with store.write_lock():
        return store.transaction(delete)


def _call(store: LakeStore, sql: str, params: Sequence[object] = ()) -> int:
    """Run one maintenance function in its own transaction; the rows it reports."""

    def run(con: duckdb.DuckDBPyConnection) -> int:
        return len(con.execute(sql, list(params)).fetchall())

    with store.write_lock():
        return store.transaction(run)


class MaintenanceLoop:
    """Maintains the lake every ``interval_s`` from a thread, while this member holds the lease.

    Landing goes on meanwhile: each step takes the lake's write lock only for itself.
    A failed pass is logged and tried again at the next interval; it never stops landing.
    """

    def __init__(self, db: str, policy: MaintenancePolicy, interval_s: float) -> None:
        self.db = db
        self.policy = policy
        self.interval_s = interval_s
        self.holder = holder_name()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lake-maintenance", daemon=True)
        self.passes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        store = LakeStore(self.db)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    # The lease outlives a pass; a member that dies frees it within 2 intervals.
                    if try_lease(store, self.holder, 2 * self.interval_s):
                        maintain(store, self.policy)
                        self.passes += 1
                except Exception:
                    log.exception("lake maintenance failed; it is tried again next interval")
        finally:
            store.close()
