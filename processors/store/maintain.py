"""Lake maintenance: retention, merging small files, expiring snapshots, deleting dead files.

Every landed batch adds a file (or, under DuckLake's inlining limit, metadata rows), so
without maintenance queries would open ever more files and the metadata database would keep every
snapshot forever. One pass, in this order:

1. **retention**: delete each table's rows older than its ``retention_days`` (0 keeps
   them), except the rows of agents under legal hold;
2. **rollups**: merge the partial rows each landed batch added to every rollup tier, one
   row per period and keys, and add the minute rows landed since the last pass to the
   hour and day tiers (rollups.py), so the metrics views read few rows;
3. **flush** rows inlined in the metadata database into Parquet files;
4. **rewrite** files that have deleted rows (step 2 deletes from the recent files of
   every tier at each pass, and DuckLake merges no file with deletions: without this
   the tiers' files and delete files grew by about one per commit);
5. **merge** adjacent small files into files of about ``MERGED_FILE_BYTES``;
6. **expire** snapshots older than the grace period;
7. **clean up** the files those snapshots alone still referenced, and orphaned files
   (a SIGKILLed writer leaves its half-written files behind), older than the grace.

Readers never fail: a query holds its snapshot, and nothing it may read is deleted
before the grace period (longer than any query) has passed. One member at a time
maintains a lake: it holds a lease row in ``_leases`` while it works (:func:`try_lease`).

Landing goes on during a pass, so no step may hold the lake's write lock for long. Each
step is its own transaction over a bounded slice of the work: one table's retention,
flush or rewrite, one merged file of about ``MERGED_FILE_BYTES``, or up to
``SNAPSHOTS_PER_STEP`` snapshots expired; a rollup tier's partial rows are read and
merged without the lock, and its steps only swap them, a run of periods each
(:func:`compact_rollups`). After each step the pass pauses as long as the step took, so
landing waits for at most one step and keeps at least half of the lock's time (and of
the time of the work done without the lock). Measured on a lake of 1,200 commits of
2,000 events: the longest step went from 4.8 s (the merge of all of a table's files;
each tier's merge took 3 to 4 s) to 1.0 s, and a writer landing beside the pass waited
at most 1.3 s for a commit instead of 5.3 s.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, TypeVar

import duckdb
import polars as pl

from agentwatch.clock import Clock, utc_now
from agentwatch.frames import query, registered
from agentwatch.native import release_free_heap
from agentwatch.processors.store.attach import memory_limit
from agentwatch.processors.store.lake import LakeStore, insert_rows, set_option
from agentwatch.processors.store.rollups import KEYS, TABLE, TIERS, coarser, merge_rows
from agentwatch.processors.store.tables import TABLE_SCHEMAS, UNTIERED

log = logging.getLogger(__name__)
T = TypeVar("T")
# Waits the given seconds between steps (time.sleep by default; a stop event's wait).
Pause = Callable[[float], object]
# The lake's snapshot id, and the periods of a rollup tier with partial rows at it.
Periods = tuple[int, pl.DataFrame]
# One step's work, in the transaction it is given.
Step = Callable[[duckdb.DuckDBPyConnection], T]

# How far back from its newest period a pass merges a rollup tier's partial rows.
COMPACT_HORIZON: Final = "INTERVAL 2 DAY"
# The size a merge writes (the lake's target file size; DuckLake's default, 512 MB, would
# make one step of a whole table). Files of a quarter of it or more are merged no further:
# a pass rewrites what landed since the last, not the whole history.
MERGED_FILE_BYTES: Final = 16 << 20
# Bounds on one step's slice of the work (see the module's docstring).
MERGED_ROWS_PER_STEP: Final = 50_000
# The partial rollup rows a pass reads and merges at a time (their memory, not the lock's).
PARTIAL_ROWS_PER_READ: Final = 200_000
SNAPSHOTS_PER_STEP: Final = 500
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
    steps: int = 0  # transactions that held the lake's write lock
    longest_step_s: float = 0.0


class _Steps:
    """Runs each step of a pass under the write lock, then pauses as long as it took.

    Work done without the lock pauses as long too: on a busy machine the pass's reading
    and merging would otherwise take the cores landing needs.
    """

    def __init__(self, store: LakeStore, report: MaintenanceReport, pause: Pause) -> None:
        self.store = store
        self.report = report
        self.pause = pause

    def run(self, work: Step[T]) -> T:
        with self.store.write_lock():
            started = time.monotonic()  # the time held, not the wait for landing's turn
            result = self.store.transaction(work)
            took = time.monotonic() - started
        release_free_heap()  # what the step freed leaves the process (native.py)
        self.report.steps += 1
        self.report.longest_step_s = max(self.report.longest_step_s, took)
        self.pause(took)
        return result

    def unlocked(self, work: Callable[[], T]) -> T:
        """Work without the lock (reading, merging), then a pause as long: it takes the
        cores landing needs."""
        started = time.monotonic()
        result = work()
        release_free_heap()
        self.pause(time.monotonic() - started)
        return result

    def call(self, sql: str, params: Sequence[object] = ()) -> int:
        """One maintenance function in its own step; the rows it reports."""
        return self.run(lambda con: len(con.execute(sql, list(params)).fetchall()))


def maintain(
    store: LakeStore,
    policy: MaintenancePolicy,
    clock: Clock = utc_now,
    pause: Pause | None = None,
) -> MaintenanceReport:
    """One maintenance pass over the lake (see the module's docstring for the order)."""
    started = clock()
    report = MaintenanceReport(files_before=data_files(store))
    steps = _Steps(store, report, pause or time.sleep)
    for table, days in policy.retention_days.items():
        if days <= 0 or table not in TABLE_SCHEMAS:
            continue
        deleted = _apply_retention(
            steps, table, started - dt.timedelta(days=days), policy.legal_hold
        )
        if deleted:
            report.rows_deleted[table] = deleted
    report.rollup_rows_merged = sum(compact_rollups(steps, t, e) for t, e in TIERS.items())
    alias = store.alias
    steps.run(lambda con: set_option(con, "target_file_size", f"{MERGED_FILE_BYTES >> 20}MiB"))
    for table in _lake_tables(store):  # the offsets and leases too: they change most often
        steps.call(f"CALL ducklake_flush_inlined_data('{alias}', table_name => '{table}')")
        steps.call(f"CALL ducklake_rewrite_data_files('{alias}', '{table}', delete_threshold => 0)")
        merge = (
            f"CALL ducklake_merge_adjacent_files('{alias}', '{table}', "
            "max_compacted_files => 1, max_file_size => ?)"
        )
        # Each merge leaves at least one file fewer, so the files there are now bound the
        # steps; files that land meanwhile wait for the next pass, not chased for ever.
        for _ in range(data_files(store, (table,))):
            if not steps.call(merge, [MERGED_FILE_BYTES // 4]):
                break
    horizon = started - dt.timedelta(seconds=policy.grace_s)
    report.snapshots_expired = _expire_snapshots(steps, horizon)
    report.files_removed = sum(
        steps.call(f"CALL ducklake_{what}('{alias}', older_than => ?)", [horizon])
        for what in ("cleanup_old_files", "delete_orphaned_files")
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
            "steps": report.steps,
            "longest_step_s": round(report.longest_step_s, 3),
            "duckdb_memory_limit": memory_limit(),
        },
    )
    return report


def compact_rollups(steps: _Steps, table: str, every: str) -> int:
    """Merge a rollup tier's partial rows; the rows it saved.

    Only periods holding several rows of the same keys are rewritten, and only within
    ``COMPACT_HORIZON`` of the newest, where batches land: a pass costs the same whatever
    the history (older partial rows, of a replay or a reprice, stay correct). In the
    minute tier, every period holding untiered rows is rewritten too, whatever its age:
    its step adds those rows to the hour and day tiers, and its merged rows are tiered.

    The costly part, reading the partial rows and merging them, works on a snapshot
    without the write lock (it took 3 to 5 s a tier after 1,200 commits), about
    ``PARTIAL_ROWS_PER_READ`` rows at a time (:class:`_Slice`), so that what a read holds
    does not grow with what landed since the last pass (read whole, ten minutes at
    38,000 events/s took a pass to 2.6 to 3.7 GB). Steps then only swap, a run of
    periods of up to ``MERGED_ROWS_PER_STEP`` merged rows each: a step merges in the
    rows batches added to its periods since the snapshot, deletes its periods' rows and
    inserts the merged ones. If anything deleted rows of those periods since the
    snapshot (retention, a reprice), the step leaves them for the next pass: their
    partial rows stay correct meanwhile, and the untiered ones are read by the coarser
    tiers' readers (rollups.tier_rows_sql) until then.
    """
    store = steps.store
    snapshot, periods = steps.unlocked(
        lambda: store.read(lambda c: _partial_periods(c, store.alias, table))
    )
    saved = 0
    for run in _period_slices(periods, PARTIAL_ROWS_PER_READ):
        sizes = periods.join(run, on="window_start", how="semi")
        buckets = max(1, -(-int(sizes["len"].sum()) // max(PARTIAL_ROWS_PER_READ, 1)))
        # Rows of one keys hash to one bucket, so each bucket's merged rows are final and
        # only they are kept: the partial rows of one bucket at a time.
        parts = [
            steps.unlocked(partial(_merged_part, store, table, snapshot, every, part))
            for part in (_Slice(run, bucket, buckets) for bucket in range(buckets))
        ]
        merged = _Merged(pl.concat([p.rows for p in parts]), pl.concat([p.untiered for p in parts]))
        runs = _period_slices(merged.rows.group_by("window_start").len(), MERGED_ROWS_PER_STEP)
        for chunk in runs:
            before = int(sizes.join(chunk, on="window_start", how="semi")["len"].sum())
            swap = _swap(store.alias, table, every, snapshot, merged.of(chunk), chunk, before)
            saved += steps.run(swap)
    return saved


@dataclass(frozen=True)
class _Merged:
    """Some periods of a tier, merged: all their rows, and (minute tier) of them the
    untiered rows alone, which the coarser tiers do not hold yet."""

    rows: pl.DataFrame
    untiered: pl.DataFrame

    def of(self, periods: pl.DataFrame) -> _Merged:
        return _Merged(
            *(f.join(periods, on="window_start", how="semi") for f in (self.rows, self.untiered))
        )


def _merged_part(store: LakeStore, table: str, snapshot: int, every: str, part: _Slice) -> _Merged:
    """The merged rows of ``part`` at ``snapshot``."""
    rows = store.read(partial(_partials, table=table, snapshot=snapshot, part=part))
    return _Merged(merge_rows(rows, every), merge_rows(_untiered(rows), every))


def _untiered(rows: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``rows`` that the coarser tiers do not hold yet."""
    if UNTIERED not in rows.columns:
        return rows.clear()
    return rows.filter(pl.col(UNTIERED).fill_null(False))


@dataclass(frozen=True)
class _Slice:
    """Some periods of a rollup tier, and of their rows those whose keys hash to
    ``bucket`` of ``buckets``: a period busier than a read can hold (an hour or a day
    gathers a partial row a batch, keys and all) is read in parts, which merge apart
    since rows of different keys never merge."""

    periods: pl.DataFrame  # window_start
    bucket: int = 0
    buckets: int = 1

    def where(self) -> str:
        """The condition on a tier's rows, with ``periods`` registered as ``_periods``."""
        cut = "window_start IN (FROM _periods)"
        if self.buckets == 1:
            return cut
        return f"{cut} AND hash({', '.join(KEYS)}) % {self.buckets} = {self.bucket}"


def _swap(
    alias: str,
    table: str,
    every: str,
    snapshot: int,
    mine: _Merged,
    periods: pl.DataFrame,
    before: int,
) -> Step[int]:
    """The step that replaces the rows of ``periods`` (``before`` of them at ``snapshot``)
    with ``mine``, their merged rows, the rows added since merged in; the rows it saved.
    The untiered rows among them go to the coarser tiers in the same step, and the merged
    minute rows are tiered. Nothing is done (0) if rows of ``periods`` were deleted since.
    All of a period's rows go in one step, whatever buckets they were read in: one delete
    a file, not one a bucket."""
    where = _Slice(periods).where()

    def swap(con: duckdb.DuckDBPyConnection) -> int:
        with registered(con, "_periods", periods):
            now = _snapshot(con, alias)
            added = mine.rows.clear()
            if now > snapshot:
                args = f"'{alias}', 'main', '{table}', {snapshot + 1}, {now}"
                deleted = f"SELECT count(*) FROM ducklake_table_deletions({args}) WHERE {where}"
                if _scalar(con, deleted):
                    log.info("rollup rows deleted during the pass", extra={"table": table})
                    return 0
                added = query(con, f"SELECT * FROM ducklake_table_insertions({args}) WHERE {where}")
            final = merge_rows(pl.concat([mine.rows, added], how="diagonal_relaxed"), every)
            con.execute(f"DELETE FROM {table} WHERE {where}")
            if table == TABLE:
                final = final.with_columns(pl.lit(False).alias(UNTIERED))
                fresh = pl.concat([mine.untiered, _untiered(added)], how="diagonal_relaxed")
                if not fresh.is_empty():
                    for tier, rows in coarser(fresh).items():
                        insert_rows(con, tier, rows)
            insert_rows(con, table, final)
            return before + added.height - final.height

    return swap


def _period_slices(sizes: pl.DataFrame, most: int) -> list[pl.DataFrame]:
    """The periods of ``sizes`` (``window_start`` and its rows, ``len``) cut in runs of
    about ``most`` rows (a period is never cut: its rows merge together), oldest first."""
    ordered = sizes.sort("window_start")
    group = (ordered["len"].cum_sum() - 1) // max(most, 1)
    return [
        part.select("window_start")
        for _, part in ordered.with_columns(_slice=group).group_by("_slice", maintain_order=True)
    ]


def _partial_periods(con: duckdb.DuckDBPyConnection, alias: str, table: str) -> Periods:
    """The lake's snapshot, and the periods to rewrite with their rows (``window_start``,
    ``len``): the recent ones holding partial rows, and those holding untiered rows."""
    snapshot = _snapshot(con, alias)
    at = f"{table} AT (VERSION => {snapshot})"
    recent = f"(SELECT max(window_start) FROM {at}) - {COMPACT_HORIZON}"
    # Distinct key hashes, not a group-by of the keys: an hour's rows at a high rate need
    # more than a worker's DuckDB memory limit that way. A collision only rewrites a period.
    wanted = f"window_start >= $recent AND count(*) > count(DISTINCT hash({', '.join(KEYS)}))"
    untiered = "NULL::TIMESTAMPTZ"
    if table == TABLE:  # and periods with untiered rows, whatever their age
        wanted += f" OR bool_or({UNTIERED})"
        untiered = f"(SELECT min(window_start) FROM {at} WHERE {UNTIERED})"
    row = con.execute(f"SELECT {recent}, least({recent}, {untiered})").fetchone()
    assert row is not None
    periods = query(
        con,
        f"SELECT window_start, count(*)::BIGINT AS len FROM {at} WHERE window_start >= $start "
        f"GROUP BY window_start HAVING {wanted}",
        {"recent": row[0], "start": row[1]},
    )
    return snapshot, periods


def _partials(
    con: duckdb.DuckDBPyConnection, table: str, snapshot: int, part: _Slice
) -> pl.DataFrame:
    """The rows of ``part`` at ``snapshot``."""
    with registered(con, "_periods", part.periods):
        return query(con, f"SELECT * FROM {table} AT (VERSION => {snapshot}) WHERE {part.where()}")


def _snapshot(con: duckdb.DuckDBPyConnection, alias: str) -> int:
    """The snapshot ``con`` reads; inside a transaction, the transaction's, which another
    process committing meanwhile does not move (so a swap's reads and its delete agree
    without a lock on PostgreSQL)."""
    return _scalar(con, f"SELECT id FROM {alias}.current_snapshot()")


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _expire_snapshots(steps: _Steps, horizon: dt.datetime) -> int:
    """Expire the snapshots older than ``horizon`` but the newest, a slice a step."""
    alias = steps.store.alias
    listing = (
        f"SELECT snapshot_id FROM ducklake_snapshots('{alias}') WHERE snapshot_time < ? "
        f"AND snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots('{alias}')) "
        "ORDER BY 1"
    )
    ids = [int(r[0]) for r in steps.store.read(lambda c: c.execute(listing, [horizon]).fetchall())]
    expire = f"CALL ducklake_expire_snapshots('{alias}', versions => ?)"
    return sum(
        steps.call(expire, [ids[i : i + SNAPSHOTS_PER_STEP]])
        for i in range(0, len(ids), SNAPSHOTS_PER_STEP)
    )


def _lake_tables(store: LakeStore) -> list[str]:
    """Every table of the lake, ours and the bookkeeping ones (offsets, leases, ...)."""
    sql = (
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
        "ORDER BY 1"
    )
    return [str(r[0]) for r in store.read(lambda con: con.execute(sql, [store.alias]).fetchall())]


def data_files(store: LakeStore, tables: Sequence[str] = tuple(TABLE_SCHEMAS)) -> int:
    """The Parquet files the lake's current snapshot reads (of ``tables``)."""
    parts = [
        f"SELECT count(*) AS n FROM ducklake_list_files('{store.alias}', '{t}')" for t in tables
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
    steps: _Steps, table: str, cutoff: dt.datetime, legal_hold: Sequence[str]
) -> int:
    column = AGE_COLUMN.get(table, "ts")
    where = f"{column} < ?"
    if UNTIERED in TABLE_SCHEMAS[table]:  # kept until the coarser tiers hold it
        where += f" AND {UNTIERED} IS NOT TRUE"
    params: list[object] = [cutoff]
    if legal_hold and "agent_id" in TABLE_SCHEMAS[table]:
        where += f" AND coalesce(agent_id, '') NOT IN ({', '.join('?' for _ in legal_hold)})"
        params += list(legal_hold)

    def delete(con: duckdb.DuckDBPyConnection) -> int:
        row = con.execute(f"DELETE FROM {table} WHERE {where}", params).fetchone()
        return int(row[0]) if row is not None else 0

    return steps.run(delete)


class PassInterrupted(Exception):
    """Raised by a pause to end a pass between two steps (each step is whole)."""
