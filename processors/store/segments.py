"""Immutable Parquet segments and the DuckDB catalog that analysts open.

Why this layout: DuckDB lets one process write a database file or many read it, never
both. So the processor never opens the analysts' file for writing. It writes each
batch of a topic-partition as a Parquet segment named by its offset range, first to a
temporary name and then renamed: the rename is the commit. On restart the processor
resumes after the highest committed offset and a replay rewrites the same name, so
every message lands exactly once. ``agentwatch.duckdb`` holds only views over the
segment globs; it is (re)built by writing a new file and renaming it over the old one,
so readers that have it open are never disturbed.

Layout under the data dir::

    segments/<table>/L0-schema.parquet                 zero rows: the table's columns
    segments/<table>/<topic>/<partition>/L0-<first>-<last>.parquet
    agentwatch.duckdb                                  views: events, dead_letters, ...
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import polars as pl

from agentwatch.processors.store.tables import (
    ACCESS_REVIEWS_SCHEMA,
    ACTIONS_SCHEMA,
    ALERT_EVENTS_SCHEMA,
    CATALOG_CHANGES_SCHEMA,
    DEAD_LETTERS_SCHEMA,
    DRIFT_SCORES_SCHEMA,
    EVENTS_SCHEMA,
    NOTIFICATIONS_SCHEMA,
    OTLP_UNMAPPED_SCHEMA,
    RELEASES_SCHEMA,
)
from agentwatch.processors.store.views import view_statements

log = logging.getLogger(__name__)

CATALOG_FILE: Final = "agentwatch.duckdb"
# The events segment of a batch is written last: its existence commits the batch.
COMMIT_TABLE: Final = "events"
# Tables landed from a topic-partition, one segment per batch, named by offset range.
STREAM_TABLES: Final[Mapping[str, Mapping[str, pl.DataType]]] = {
    "events": EVENTS_SCHEMA,
    "dead_letters": DEAD_LETTERS_SCHEMA,
    "otlp_unmapped": OTLP_UNMAPPED_SCHEMA,
}
# Append-only logs of the alerting side, one segment per append, named by time.
LOG_TABLES: Final[Mapping[str, Mapping[str, pl.DataType]]] = {
    "alert_events": ALERT_EVENTS_SCHEMA,
    "actions": ACTIONS_SCHEMA,
    "notifications": NOTIFICATIONS_SCHEMA,
    "drift_scores": DRIFT_SCORES_SCHEMA,
    "catalog_changes": CATALOG_CHANGES_SCHEMA,
    "releases": RELEASES_SCHEMA,
    "access_reviews": ACCESS_REVIEWS_SCHEMA,
}
TABLE_SCHEMAS: Final[Mapping[str, Mapping[str, pl.DataType]]] = {**STREAM_TABLES, **LOG_TABLES}
_SEGMENT = re.compile(r"^L0-(\d{20})-(\d{20})\.parquet$")


@dataclass(frozen=True)
class SegmentName:
    table: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def relpath(self) -> Path:
        return (
            Path("segments")
            / self.table
            / self.topic
            / str(self.partition)
            / f"L0-{self.first_offset:020d}-{self.last_offset:020d}.parquet"
        )


class SegmentStore:
    """Writes segments atomically and answers where each partition's data ends."""

    def __init__(self, data_dir: Path, catalog_name: str = CATALOG_FILE) -> None:
        self.data_dir = data_dir.resolve()
        self.catalog_path = self.data_dir / catalog_name

    def prepare(self) -> None:
        """Create the layout and schema files, and the catalog if it is missing or stale."""
        for table, schema in TABLE_SCHEMAS.items():
            # The zero-row schema file gives each view every current column, even over
            # segments written before a column existed.
            schema_file = self.data_dir / "segments" / table / "L0-schema.parquet"
            if not schema_file.exists() or pl.read_parquet_schema(schema_file) != dict(schema):
                schema_file.parent.mkdir(parents=True, exist_ok=True)
                _atomic_parquet(pl.DataFrame(schema=dict(schema)), schema_file)
        if not self._catalog_current():
            self.build_catalog()

    def partition_dir(self, table: str, topic: str, partition: int) -> Path:
        return self.data_dir / "segments" / table / topic / str(partition)

    def segments(self, table: str, topic: str, partition: int) -> list[tuple[int, int, Path]]:
        """Committed segments of a partition as (first, last, path), by first offset."""
        folder = self.partition_dir(table, topic, partition)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            m = _SEGMENT.match(path.name)
            if m:
                found.append((int(m.group(1)), int(m.group(2)), path))
        return sorted(found)

    def committed_last_offset(self, topic: str, partition: int) -> int | None:
        """The last offset whose batch is committed, or None when nothing is."""
        segments = self.segments(COMMIT_TABLE, topic, partition)
        return max((last for _, last, _ in segments), default=None)

    @contextmanager
    def partition_lock(self, topic: str, partition: int) -> Iterator[None]:
        """Serialise committers of one partition across processes sharing the data dir.

        After a rebalance an instance that stalled may still hold a batch of a partition
        that now belongs to another; under this lock each committer first checks that
        nobody committed past its batch's start.
        """
        folder = self.partition_dir(COMMIT_TABLE, topic, partition)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def recover(self, topic: str, partition: int) -> int | None:
        """Remove what a crash left half-done for this partition; return its committed end.

        Temporary files are dropped, and so are segments of other tables that lie after
        the committed end: their batch never committed and will be written again.
        """
        with self.partition_lock(topic, partition):
            return self._recover(topic, partition)

    def _recover(self, topic: str, partition: int) -> int | None:
        committed = self.committed_last_offset(topic, partition)
        for table in STREAM_TABLES:
            folder = self.partition_dir(table, topic, partition)
            if not folder.is_dir():
                continue
            for path in folder.glob(".tmp-*"):
                path.unlink(missing_ok=True)
            for first, _last, path in self.segments(table, topic, partition):
                if committed is None or first > committed:
                    log.info(
                        "removing a segment of an uncommitted batch",
                        extra={"segment": str(path)},
                    )
                    path.unlink()
        return committed

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
        """Store one batch: dead letters, then the events segment, whose rename commits it.

        Returns False, storing nothing, when the partition already has a commit at or
        past the batch's first offset: another instance owns the partition now.
        ``before_commit`` runs under the lock just before the commit (the processor
        sends dead letters to their topic there). ``extra`` holds rows of other stream
        tables landed with the batch (``otlp_unmapped``).
        """
        first, last = offsets
        with self.partition_lock(topic, partition):
            committed = self.committed_last_offset(topic, partition)
            if committed is not None and committed >= first:
                log.warning(
                    "dropping a batch another instance already committed",
                    extra={"partition": partition, "first_offset": first, "committed": committed},
                )
                return False
            before_commit()
            written: list[Path] = []
            try:
                if dead_letters.height:
                    name = SegmentName("dead_letters", topic, partition, first, last)
                    written.append(self.write(name, dead_letters))
                for table, rows in (extra or {}).items():
                    if rows.height:
                        name = SegmentName(table, topic, partition, first, last)
                        written.append(self.write(name, rows))
                self.write(SegmentName(COMMIT_TABLE, topic, partition, first, last), events)
            except BaseException:
                for path in written:  # the batch did not commit: nothing of it stays
                    path.unlink(missing_ok=True)
                raise
            return True

    def write(self, name: SegmentName, frame: pl.DataFrame) -> Path:
        path = self.data_dir / name.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_parquet(frame, path)
        return path

    def append_log(self, table: str, frame: pl.DataFrame) -> Path:
        """Append rows to a log table as one new segment (atomic; ordered by name)."""
        assert table in LOG_TABLES, table
        schema = LOG_TABLES[table]
        path = (
            self.data_dir / "segments" / table / "log"
            / f"L0-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_parquet(frame.select(list(schema)).cast(pl.Schema(schema)), path)
        return path

    def read_log(self, table: str) -> pl.DataFrame:
        folder = self.data_dir / "segments" / table / "log"
        paths = sorted(folder.glob("L0-*.parquet")) if folder.is_dir() else []
        if not paths:
            return pl.DataFrame(schema=dict(LOG_TABLES[table]))
        return pl.read_parquet(paths)

    def read_partition(
        self, table: str, topic: str, partition: int, columns: Iterable[str]
    ) -> pl.DataFrame:
        paths = [p for _, _, p in self.segments(table, topic, partition)]
        schema = TABLE_SCHEMAS[table]
        cols = list(columns)
        if not paths:
            return pl.DataFrame(schema={c: schema[c] for c in cols})
        return pl.scan_parquet(paths).select(cols).collect()

    def build_catalog(self) -> None:
        """Write the views to a fresh DuckDB file and rename it over the catalog."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.data_dir / f".tmp-{uuid.uuid4().hex}-{self.catalog_path.name}"
        con = duckdb.connect(str(tmp))
        try:
            for statement in catalog_statements(self.data_dir):
                con.execute(statement)
        finally:
            con.close()
        _fsync(tmp)
        os.replace(tmp, self.catalog_path)
        _fsync_dir(self.data_dir)
        log.info("catalog written", extra={"catalog": str(self.catalog_path)})

    def _catalog_current(self) -> bool:
        if not self.catalog_path.exists():
            return False
        try:
            con = duckdb.connect(str(self.catalog_path), read_only=True)
        except duckdb.Error:
            return False
        try:
            row = con.execute("SELECT digest, data_dir FROM agentwatch_catalog").fetchone()
        except duckdb.Error:
            return False
        finally:
            con.close()
        return row == (catalog_digest(self.data_dir), str(self.data_dir))


def catalog_digest(data_dir: Path) -> str:
    """Identifies the catalog's definitions: any change to a view rebuilds the catalog."""
    return hashlib.sha256("\n".join(_views(data_dir)).encode()).hexdigest()[:16]


def catalog_statements(data_dir: Path) -> list[str]:
    """DDL of the analysts' catalog: views only, over absolute segment globs."""
    return [
        "CREATE TABLE agentwatch_catalog (digest VARCHAR, data_dir VARCHAR)",
        "INSERT INTO agentwatch_catalog VALUES "
        f"({_sql_str(catalog_digest(data_dir))}, {_sql_str(str(data_dir))})",
        *_views(data_dir),
    ]


def _views(data_dir: Path) -> list[str]:
    def glob(table: str) -> str:
        return _sql_str(str(data_dir / "segments" / table / "**" / "L0-*.parquet"))

    return [
        *(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet({glob(table)}, union_by_name=true)"
            for table in TABLE_SCHEMAS
        ),
        # Current state of every alert: its latest transition.
        "CREATE VIEW alerts AS SELECT * FROM alert_events "
        "QUALIFY row_number() OVER (PARTITION BY fingerprint ORDER BY ts DESC) = 1",
        *view_statements(),
    ]


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> None:
    # Encoded in memory, written by Python: a full disk then raises OSError with its
    # errno, where polars would report only "Invalid thrift: transport error".
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with tmp.open("wb") as fh:
            fh.write(buffer.getbuffer())
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not also leave half a file behind
        raise
    _fsync_dir(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
