"""The store: a DuckLake lake whose lake transactions make every landing exactly once.

Why DuckLake: a SQL metadata database keeps the list of data files with their statistics and
snapshots, so a query opens only the files its filters can touch, several processes
write at once, readers see consistent snapshots while writers commit, and small files
can be merged without stopping anyone (:mod:`.maintain`).

Exactly once, by transaction. One lake transaction holds a batch's events, its dead
letters, its other per-batch rows and the partition's new last offset in ``_offsets``.
The transaction reads the partition's offset and stores nothing of a batch it already
covers (another member committed past it after a rebalance). Two transactions that
overlap conflict at commit (DuckLake fences updates of one table); the loser retries
from a fresh snapshot and then sees the winner's offset.

A SQLite metadata database takes one writer at a time: the processes of one machine queue on a
lock file beside it instead of failing with "database is locked". Readers never wait.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeVar

import duckdb
import polars as pl

from agentwatch.frames import query, registered
from agentwatch.processors.store.attach import (
    BUSY_RETRY_S,
    attach,
    is_busy,
    raise_memory_limit,
    refuse_foreign,
    retry_busy,
)
from agentwatch.processors.store.layout import refuse_old_layout
from agentwatch.processors.store.location import (
    locate,
)
from agentwatch.processors.store.rollups import TABLE as ROLLUPS
from agentwatch.processors.store.rollups import TIERS, merge_rows
from agentwatch.processors.store.tables import LOG_TABLES, TABLE_SCHEMAS, UNTIERED
from agentwatch.processors.store.views import view_statements

log = logging.getLogger(__name__)
T = TypeVar("T")

OFFSETS_TABLE: Final = "_offsets"
VERSION_TABLE: Final = "agentwatch_catalog"
MAX_CONFLICT_RETRIES: Final = 20
# Rows per Parquet row group in the files the lake writes. DuckDB buffers a whole row
# group before it writes one, so a landing set of 30,000 events at DuckDB's 122,880
# held every row: 8,192 took ~25 MB off a worker's peak, at the same speed (measured).
ROW_GROUP_ROWS: Final = 8192


class LakeStore:
    """Lands batches and log rows in the lake, and answers where each partition ended."""

    def __init__(self, db: str | Path, data_path: str = "", *, check_layout: bool = True) -> None:
        self.location = locate(db, data_path)
        self._check_layout = check_layout  # off only for the migration that converts it
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock_depth = 0
        self.lock_waited_s = 0.0  # in all, waiting for other writers (the debug log's)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The writer's connection, attached (and the schema brought up to date) on first use."""
        if self._con is None:
            if self._check_layout:
                refuse_old_layout(self.location)
            refuse_foreign(self.location)  # before its lock file is made beside it
            if self.location.metadata_file is not None:
                self.location.metadata_file.parent.mkdir(parents=True, exist_ok=True)
            with self.write_lock():
                self._con = attach(self.location, read_only=False)
                self.transaction(self._prepare)
        return self._con

    @property
    def alias(self) -> str:
        """The name the lake is attached under in this process (for DuckLake's functions)."""
        row = self.read(lambda con: con.execute("SELECT current_database()").fetchone())
        assert row is not None
        return str(row[0])

    @property
    def db(self) -> str:
        """What ``--db`` names: the metadata file, or the PostgreSQL DSN."""
        metadata = self.location.metadata_file
        return str(metadata) if metadata is not None else self.location.metadata

    def close(self) -> None:
        """Close this store's connection (the shared instance stays for the next one)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    # -- schema --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create missing tables and columns, the offsets table, and the current views."""
        self.con  # noqa: B018 - attaching prepares

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        set_option(con, "parquet_row_group_size", str(ROW_GROUP_ROWS))
        existing = _columns(con)
        for table, schema in {**TABLE_SCHEMAS, OFFSETS_TABLE: _OFFSETS_SCHEMA}.items():
            have = existing.get(table)
            if have is None:
                with registered(con, "_empty", pl.DataFrame(schema=dict(schema))):
                    con.execute(f"CREATE TABLE {table} AS SELECT * FROM _empty")
                if table in TIERS and table != ROLLUPS and ROLLUPS in existing:
                    # A tier added to a lake that has minutes starts from all it reads
                    # from no other tier (rollups.tier_rows_sql).
                    minutes = query(con, f"SELECT * FROM {ROLLUPS} WHERE {UNTIERED} IS NOT TRUE")
                    insert_rows(con, table, merge_rows(minutes, TIERS[table]))
                continue
            for column, dtype in schema.items():
                if column not in have:
                    sql_type = _sql_type(con, column, dtype)
                    con.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {sql_type}')
        digest = views_digest()
        if VERSION_TABLE in existing:
            row = con.execute(f"SELECT max(digest) FROM {VERSION_TABLE}").fetchone()
            if row is not None and row[0] == digest:
                return
        else:
            con.execute(f"CREATE TABLE {VERSION_TABLE} (digest VARCHAR)")
        for statement in view_definitions():
            con.execute(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
        con.execute(f"DELETE FROM {VERSION_TABLE}")
        con.execute(f"INSERT INTO {VERSION_TABLE} VALUES (?)", [digest])
        log.info("views written", extra={"store": self.location.describe()})

    # -- landing -------------------------------------------------------------------------

    def committed_last_offset(self, topic: str, partition: int) -> int | None:
        """The last offset whose batch is committed, or None when nothing is."""
        return self.read(lambda con: _last_offset(con, topic, partition))

    def recover(self, topic: str, partition: int) -> int | None:
        """Make sure the partition has its offsets row; return its committed end.

        Nothing is ever half-written (a batch is one transaction), so there is nothing to
        clean. The row is created here, not by a batch, so that two members racing for a
        new partition's first batch still update one row (and conflict at commit).
        """

        def ensure(con: duckdb.DuckDBPyConnection) -> int | None:
            row = _offset_rows(con).get((topic, partition))
            if row is None:
                con.execute(f"INSERT INTO {OFFSETS_TABLE} VALUES (?, ?, -1)", [topic, partition])
            return _committed_end(row)

        with self.write_lock():
            return self.transaction(ensure)

    def commit_batch(
        self,
        topic: str,
        partition: int,
        offsets: tuple[int, int],
        events: pl.DataFrame,
        dead_letters: pl.DataFrame,
        before_commit: Callable[[], None] = lambda: None,
        extra: Mapping[str, pl.DataFrame] | None = None,
    ) -> bool:
        """Store one batch and move the partition's offset, all in one transaction.

        Returns False, storing nothing, when the partition's offset is already at or past
        the batch's first offset: another member owns the partition now.
        ``before_commit`` runs once, inside the transaction, before anything is written
        (the processor sends dead letters to their topic there).
        """
        tables = {"dead_letters": dead_letters, **(extra or {}), "events": events}
        batch = Batch(topic, partition, offsets, tables, before_commit)
        return self.commit_batches([batch])[0]

    def commit_batches(self, batches: Sequence[Batch]) -> list[bool]:
        """Store several partitions' batches and move their offsets in one transaction.

        Each batch is stored as :meth:`commit_batch` stores it alone (False: another member
        committed past it; it is left out, the others are stored), but their rows go in
        one insert a table and their metadata work is paid once: a member that owns several
        partitions commits them together.
        """
        batches = [replace(b, before_commit=_once(b.before_commit)) for b in batches]

        def land(con: duckdb.DuckDBPyConnection) -> list[bool]:
            ends = _offset_rows(con)  # one read and one update a commit, not a partition
            moves: list[tuple[Batch, int]] = []  # a batch and its partition's row
            for b in batches:
                row = ends.get((b.topic, b.partition))
                if row is None:  # no offsets row (recover makes one): nothing to move
                    raise _Fenced
                rowid, committed = row
                if committed >= b.offsets[0]:
                    log.warning(
                        "dropping a batch another member already committed",
                        extra={
                            "partition": b.partition,
                            "first_offset": b.offsets[0],
                            "committed": committed,
                        },
                    )
                    continue
                b.before_commit()
                moves.append((b, rowid))
            for table, rows in _rows_by_table([b for b, _ in moves]).items():
                insert_rows(con, table, rows)
            if moves:  # every partition's end moved in one statement, by row id
                cases = " ".join(["WHEN ? THEN ?::BIGINT"] * len(moves))
                marks = ", ".join(["?"] * len(moves))
                moved = con.execute(
                    f"UPDATE {OFFSETS_TABLE} SET last_offset = CASE rowid {cases} END "
                    f"WHERE rowid IN ({marks})",
                    [x for b, rowid in moves for x in (rowid, b.offsets[1])]
                    + [rowid for _, rowid in moves],
                ).fetchone()
                if moved is None or moved[0] != len(moves):
                    raise _Fenced
            stored = {id(b) for b, _ in moves}
            return [id(b) in stored for b in batches]

        with self.write_lock():
            try:
                return self.transaction(land)
            except _Fenced:
                if len(batches) > 1:  # find which one, storing the others
                    return [self.commit_batches([b])[0] for b in batches]
                log.warning(
                    "dropping a batch: the partition's offset moved under it",
                    extra={
                        "partition": batches[0].partition,
                        "first_offset": batches[0].offsets[0],
                    },
                )
                return [False]

    def append_log(self, table: str, frame: pl.DataFrame) -> None:
        """Append rows to an alerting or audit log table, in one transaction."""
        assert table in LOG_TABLES, table
        schema = LOG_TABLES[table]
        rows = frame.select(list(schema)).cast(pl.Schema(schema))
        with self.write_lock():
            self.transaction(lambda con: insert_rows(con, table, rows))

    def insert(self, table: str, frame: pl.DataFrame) -> None:
        """Append rows to any table in one transaction (tools and tests; landing uses
        :meth:`commit_batch`)."""
        self.insert_tables({table: frame})

    def insert_tables(self, tables: Mapping[str, pl.DataFrame]) -> None:
        """Append rows to several tables in one transaction (a batch's events with their
        rollups, in tools and tests)."""

        def insert_all(con: duckdb.DuckDBPyConnection) -> None:
            for table, frame in tables.items():
                insert_rows(con, table, frame)

        with self.write_lock():
            self.transaction(insert_all)

    def read_log(self, table: str) -> pl.DataFrame:
        """A log table's rows; empty (with its columns) before the lake exists."""
        if self._con is None:
            metadata = self.location.metadata_file
            if metadata is not None and not metadata.exists():
                return pl.DataFrame(schema=dict(LOG_TABLES[table]))
            with attach(self.location, read_only=True) as con:
                if table not in _columns(con):
                    return pl.DataFrame(schema=dict(LOG_TABLES[table]))
                return query(con, f"SELECT * FROM {table}")
        return self.read(lambda con: query(con, f"SELECT * FROM {table}"))

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer at a time on a SQLite metadata database; PostgreSQL arbitrates by itself."""
        metadata = self.location.metadata_file
        if metadata is None or self._lock_depth:  # re-entrant: flock is per open file
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        metadata.parent.mkdir(parents=True, exist_ok=True)
        with metadata.with_name(metadata.name + ".lock").open("a") as fh:
            asked = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            self.lock_waited_s += time.monotonic() - asked
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a read on the writer's connection, again if the SQLite metadata database
        was busy for a moment (the writer's attach waits for nothing: location.py), or
        DuckDB ran short of the memory a limit allowed (``attach.raise_memory_limit``)."""
        while True:
            try:
                return retry_busy(lambda: query(self.con))
            except duckdb.Error as exc:
                if not raise_memory_limit(exc):
                    raise

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``work`` in one transaction, retrying it whole after a write conflict (or
        a moment the SQLite metadata database was busy, or DuckDB short of the memory a
        limit allowed: ``attach.raise_memory_limit``)."""
        con = self.con
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                con.execute("BEGIN TRANSACTION")
                result = work(con)
                con.execute("COMMIT")
                return result
            except duckdb.Error as exc:
                _rollback(con)
                if raise_memory_limit(exc) and attempt < MAX_CONFLICT_RETRIES - 1:
                    continue  # the same work, with twice the memory
                if not _is_conflict(exc) or attempt == MAX_CONFLICT_RETRIES - 1:
                    raise
                if is_busy(exc):
                    log.debug("metadata database busy, retrying", extra={"attempt": attempt + 1})
                    time.sleep(min(BUSY_RETRY_S * 2**attempt, 1.0))
                    continue
                log.info("write conflict, retrying", extra={"attempt": attempt + 1})
                time.sleep(min(0.05 * 2**attempt, 1.0))
            except BaseException:
                _rollback(con)
                raise
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Batch:
    """One partition's batch: the offsets it covers and its rows, table by table."""

    topic: str
    partition: int
    offsets: tuple[int, int]  # first, last
    tables: Mapping[str, pl.DataFrame]
    before_commit: Callable[[], None] = lambda: None  # runs once, in the transaction


class _Fenced(Exception):
    """The offsets row did not hold the offset this batch started from."""


def _once(work: Callable[[], None]) -> Callable[[], None]:
    """``work``, run at most once however often the transaction is retried."""
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            work()
            done = True

    return run


def _rows_by_table(batches: Sequence[Batch]) -> dict[str, pl.DataFrame]:
    """The batches' rows as one frame a table, dead letters first and events last."""
    frames: dict[str, list[pl.DataFrame]] = {}
    for b in batches:
        for table, rows in b.tables.items():
            if rows.height:
                frames.setdefault(table, []).append(rows)
    order = sorted(frames, key=lambda t: (t != "dead_letters", t == "events"))
    return {t: pl.concat(frames[t], how="diagonal_relaxed") for t in order}


_OFFSETS_SCHEMA: Final[Mapping[str, pl.DataType]] = {
    "topic": pl.String(),
    "partition": pl.Int32(),
    "last_offset": pl.Int64(),
}


def view_definitions() -> list[str]:
    """The views every reader of the lake sees, stored in the lake itself."""
    return [
        # Current state of every alert: its latest transition.
        "CREATE VIEW alerts AS SELECT * FROM alert_events "
        "QUALIFY row_number() OVER (PARTITION BY fingerprint ORDER BY ts DESC) = 1",
        *view_statements(),
    ]


def views_digest() -> str:
    """Identifies the view definitions: any change rewrites them at the next start."""
    return hashlib.sha256("\n".join(view_definitions()).encode()).hexdigest()[:16]


def _last_offset(con: duckdb.DuckDBPyConnection, topic: str, partition: int) -> int | None:
    return _committed_end(_offset_rows(con).get((topic, partition)))


def _committed_end(row: tuple[int, int] | None) -> int | None:
    """An offsets row's committed end; None without a row or with nothing committed."""
    return row[1] if row is not None and row[1] >= 0 else None


def _offset_rows(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], tuple[int, int]]:
    """Each partition's offsets row: its row id and committed end (-1: nothing yet).

    The table is read whole and its rows are updated by row id: DuckLake answers a
    filter on a column by reading the statistics of every file in the lake (the
    metadata database's largest table, which grows with each commit until maintenance
    merges the files), so a ``WHERE topic = ...`` made each commit slower until then;
    a whole read and a row id filter cost the same at any size. Two
    members recovering a new partition at once (PostgreSQL has no write lock) may both
    add its row: the one with the largest end counts and is the one moved.
    """
    found: dict[tuple[str, int], tuple[int, int]] = {}
    for rowid, topic, partition, last in con.execute(
        f"SELECT rowid, topic, partition, last_offset FROM {OFFSETS_TABLE}"
    ).fetchall():
        key = (str(topic), int(partition))
        if key not in found or found[key][1] < last:  # the row with the largest end
            found[key] = (int(rowid), int(last))
    return found


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: pl.DataFrame) -> None:
    """Append a frame's rows to a table, by column name, in the caller's transaction."""
    with registered(con, "_rows", rows):
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")


def set_option(con: duckdb.DuckDBPyConnection, name: str, value: str) -> None:
    """Set a lake-wide DuckLake option unless it already has ``value`` (no metadata write)."""
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    alias = row[0]
    have = con.execute(
        f"SELECT value FROM {alias}.options() WHERE option_name = ? AND scope = 'GLOBAL'", [name]
    ).fetchone()
    if have is None or have[0] != value:
        con.execute(f"CALL {alias}.set_option(?, ?)", [name, value])


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database()"
    ).fetchall():
        found.setdefault(table, set()).add(column)
    return found


def _sql_type(con: duckdb.DuckDBPyConnection, column: str, dtype: pl.DataType) -> str:
    with registered(con, "_probe", pl.DataFrame(schema={column: dtype})):
        described = con.execute("DESCRIBE _probe").fetchall()
    return str(described[0][1])


_CONFLICT_MARKERS: Final = (
    "conflict",  # DuckDB's own and DuckLake's snapshot conflicts
    "could not serialize access",  # a PostgreSQL metadata database's serialization failure (40001)
    "deadlock detected",  # a PostgreSQL metadata database's deadlock victim (40P01)
)


def _is_conflict(exc: duckdb.Error) -> bool:
    """Whether ``exc`` is a concurrent writer's conflict that the whole transaction may retry."""
    text = str(exc).lower()
    return is_busy(exc) or any(marker in text for marker in _CONFLICT_MARKERS)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")
