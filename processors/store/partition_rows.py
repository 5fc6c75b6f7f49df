"""One partition's landed rows, read back to rebuild its state after a (re)assignment.

Only the recent past counts (the dedup horizon, the lateness allowance, a session's
timeout), and it is read in slices of offsets, oldest first, so the memory a rebuild
takes is one slice's, not the horizon's: a worker that takes over four partitions of
250,000 recent events each read them whole at once (100 MB and more beyond its usual
peak). The lake's statistics on ``_offset`` let each slice open only its own files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Final

import duckdb
import polars as pl

from agentwatch.frames import query
from agentwatch.processors.store.lake import LakeStore

# Offsets a slice covers: about 25 MB of the state columns of simulated events.
SLICE_OFFSETS: Final = 100_000


@dataclass(frozen=True)
class Window:
    """The partition's rows within the recent past: their offsets and newest event time."""

    first_offset: int
    last_offset: int
    since_kafka_ts: dt.datetime  # rows stored by Kafka before this are older than needed
    newest_ts: dt.datetime | None


def recent_window(
    store: LakeStore, table: str, topic: str, partition: int, within_s: float
) -> Window | None:
    """Where the rows within ``within_s`` of Kafka time before the newest one lie; None
    when the partition has no rows."""
    where = f"_topic = {_text(topic)} AND _partition = {int(partition)}"
    since = f"newest.at - to_microseconds({int(within_s * 1_000_000)})"
    sql = (
        f"WITH newest AS (SELECT max(_kafka_ts) AS at FROM {table} WHERE {where}) "
        f"SELECT min(_offset), max(_offset), any_value({since}), max(ts) "
        f"FROM {table}, newest WHERE {where} AND _kafka_ts >= {since}"
    )
    row = store.read(lambda con: con.execute(sql).fetchone())
    if row is None or row[0] is None:
        return None
    return Window(int(row[0]), int(row[1]), row[2], row[3])


def recent_slices(
    store: LakeStore,
    table: str,
    topic: str,
    partition: int,
    columns: Iterable[str],
    window: Window,
    offsets: int = SLICE_OFFSETS,
) -> Iterator[pl.DataFrame]:
    """The window's rows in slices of at most ``offsets`` offsets, in offset order."""
    where = (
        f"_topic = {_text(topic)} AND _partition = {int(partition)} "
        f"AND _kafka_ts >= '{window.since_kafka_ts.isoformat()}'::TIMESTAMPTZ"
    )
    for first in range(window.first_offset, window.last_offset + 1, offsets):
        last = min(first + offsets - 1, window.last_offset)
        sql = (
            f"SELECT {_quoted(columns)} FROM {table} WHERE {where} "
            f"AND _offset BETWEEN {first} AND {last} ORDER BY _offset"
        )
        yield store.read(partial(_returning_memory, sql=sql))


def read_partition(
    store: LakeStore,
    table: str,
    topic: str,
    partition: int,
    columns: Iterable[str],
    within_s: float | None = None,
) -> pl.DataFrame:
    """A partition's rows in offset order; with ``within_s``, only those within that many
    seconds of Kafka time before its newest row (in one frame: tests and small reads)."""
    cols = list(columns)
    where = f"_topic = {_text(topic)} AND _partition = {int(partition)}"
    if within_s is not None:
        window = recent_window(store, table, topic, partition, within_s)
        if window is not None:
            return pl.concat(recent_slices(store, table, topic, partition, cols, window, 1 << 62))
        where += " AND false"  # nothing landed: no rows, but the columns' types
    sql = f"SELECT {_quoted(cols)} FROM {table} WHERE {where} ORDER BY _offset"
    return store.read(partial(query, sql=sql))


def _returning_memory(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    """``sql``'s rows, DuckDB's memory for them handed back to the system as it frees it.

    DuckDB keeps freed memory for reuse up to a threshold (512 MiB by default): reading
    four partitions of 250,000 events in slices left a worker 150 MB larger than it
    started. A rebuild is rare, and it should not add to the memory of the landing it
    precedes, so it returns what it frees, at about twice the time a slice.
    """
    setting = "allocator_bulk_deallocation_flush_threshold"
    row = con.execute(f"SELECT current_setting('{setting}')").fetchone()
    con.execute(f"SET {setting} = '0B'")
    try:
        return query(con, sql)
    finally:
        con.execute(f"SET {setting} = '{row[0] if row else '512MiB'}'")


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _text(value: str) -> str:
    """A SQL string literal. Values are written into these queries, not bound: DuckLake
    prunes files by a literal filter but not by a bound parameter (a slice took 0.13 s
    and 56 MB with literals, 0.5 s and 80 MB with parameters)."""
    return "'" + value.replace("'", "''") + "'"
