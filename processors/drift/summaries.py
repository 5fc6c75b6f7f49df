"""Bucket summaries: counts per signal key, loaded once per bucket and summed per window.

The store is opened read-only for each load and closed right after, so the evaluator
never holds DuckDB. A load runs one query per signal family over a range of buckets; the
result is kept three ways:

- ``collapsed``: counts per bucket, agent and environment, for rolling comparisons;
- ``detailed``: the same per release dimension values, kept only for the release window;
- ``presence``: events per bucket and dimension value, to tell when a version appeared.

A window's reference is a sum of collapsed buckets, kept as a running sum that adds the
buckets entering it and subtracts those leaving it as evaluation moves forward.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from agentwatch.frames import query
from agentwatch.processors.drift.config import DriftConfig
from agentwatch.processors.drift.signals import (
    FAMILIES,
    SESSIONS_SUFFIX,
    SPLIT_MARK,
    family_query,
    setup_statements,
)
from agentwatch.processors.store.attach import connect as connect_lake

log = logging.getLogger(__name__)

AGENT_KEYS: Final = ("agent_id", "environment")
COUNT_KEYS: Final = ("signal", "key")
COUNTS_SCHEMA: Final = pl.Schema(
    {
        "bucket": pl.Int64(),
        "agent_id": pl.String(),
        "environment": pl.String(),
        "agent_version": pl.String(),
        "model": pl.String(),
        "prompt_version": pl.String(),
        "signal": pl.String(),
        "key": pl.String(),
        "n": pl.Int64(),
    }
)
COLLAPSED_SCHEMA: Final = pl.Schema(
    {
        k: v
        for k, v in COUNTS_SCHEMA.items()
        if k not in ("agent_version", "model", "prompt_version")
    }
)
PRESENCE_SCHEMA: Final = pl.Schema(
    {
        "bucket": pl.Int64(),
        "agent_id": pl.String(),
        "environment": pl.String(),
        "dimension": pl.String(),
        "value": pl.String(),
        "n": pl.Int64(),
    }
)
# Every event counts once in error_rate, so its totals measure a version's traffic.
PRESENCE_SIGNAL: Final = "error_rate"
# A load covers at most this many buckets at a time, to bound its memory.
LOAD_CHUNK: Final = dt.timedelta(days=1)


def bucket_of(ts: dt.datetime, grain_s: int) -> int:
    """The number of the bucket that starts at or before ``ts``."""
    return int(ts.timestamp()) // grain_s


def bucket_start(bucket: int, grain_s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(bucket * grain_s, dt.UTC)


def data_bounds(db: Path) -> tuple[dt.datetime, dt.datetime] | None:
    """Event time of the first and the last stored event, or None when there is none."""
    con = connect_lake(db)
    try:
        row = con.execute("SELECT min(ts), max(ts) FROM events").fetchone()
    finally:
        con.close()
    if row is None or row[0] is None:
        return None
    return row[0].astimezone(dt.UTC), row[1].astimezone(dt.UTC)


def load_counts(
    db: Path, lo: dt.datetime, hi: dt.datetime, config: DriftConfig, agent_id: str | None = None
) -> pl.DataFrame:
    """Counts of every signal in ``[lo, hi)``: one query per family, one short connection."""
    con = connect_lake(db)
    try:
        for statement in setup_statements(lo, hi, config.session_lookback, agent_id):
            con.execute(statement)
        frames: list[pl.DataFrame] = [
            query(con, family_query(family, lo, hi, config.grain_s)) for family in FAMILIES.values()
        ]
    finally:
        con.close()
    counts = pl.concat([f.cast(COUNTS_SCHEMA) for f in frames]).select(list(COUNTS_SCHEMA))
    # Distinct sessions come with a null key: kept as their own pseudo-signal. A split
    # signal's key is ``subject<mark>key``: its results are named ``signal[subject]``.
    sessions = pl.col("key").is_null()
    split = pl.col("key").str.contains(SPLIT_MARK, literal=True).fill_null(False)
    parts = pl.col("key").str.split_exact(SPLIT_MARK, 1)
    return counts.with_columns(
        signal=pl.when(sessions)
        .then(pl.col("signal") + SESSIONS_SUFFIX)
        .when(split)
        .then(pl.col("signal") + "[" + parts.struct.field("field_0") + "]")
        .otherwise("signal"),
        key=pl.when(split)
        .then(parts.struct.field("field_1"))
        .otherwise(pl.col("key"))
        .fill_null(""),
    )


def collapse(counts: pl.DataFrame, keys: tuple[str, ...] = ("bucket", *AGENT_KEYS)) -> pl.DataFrame:
    """Counts summed over everything but ``keys`` and the signal keys."""
    return counts.group_by([*keys, *COUNT_KEYS]).agg(pl.col("n").sum())


def presence(counts: pl.DataFrame, dimensions: tuple[str, ...]) -> pl.DataFrame:
    """Events per bucket, agent and value of each release dimension (nulls left out)."""
    events = counts.filter(pl.col("signal") == PRESENCE_SIGNAL)
    parts = [
        events.filter(pl.col(dim).is_not_null())
        .group_by("bucket", *AGENT_KEYS, pl.col(dim).alias("value"))
        .agg(pl.col("n").sum())
        .with_columns(dimension=pl.lit(dim))
        for dim in dimensions
    ]
    if not parts:
        return pl.DataFrame(schema=PRESENCE_SCHEMA)
    return pl.concat(parts).select(list(PRESENCE_SCHEMA)).cast(PRESENCE_SCHEMA)


@dataclass
class _Sum:
    lo: int
    hi: int
    frame: pl.DataFrame


class SummaryCache:
    """Bucket summaries of one store, loaded on demand and dropped when no longer needed."""

    def __init__(self, db: Path, config: DriftConfig, agent_id: str | None = None) -> None:
        self.db = db
        self.config = config
        self.agent_id = agent_id
        self.grain_s = config.grain_s
        self.lo: int | None = None  # loaded buckets: [lo, hi)
        self.hi: int | None = None
        self.collapsed = pl.DataFrame(schema=COLLAPSED_SCHEMA)
        self.detailed = pl.DataFrame(schema=COUNTS_SCHEMA)
        self.presence = pl.DataFrame(schema=PRESENCE_SCHEMA)
        self.detail_from = 0  # first bucket kept in ``detailed``
        self._sums: dict[str, _Sum] = {}
        self.queries = 0

    def ensure(self, lo: int, hi: int, detail_from: int) -> None:
        """Have buckets ``[lo, hi)`` loaded, with details from ``detail_from`` on."""
        if (
            self.lo is None
            or self.hi is None
            or hi < self.lo
            or lo > self.hi
            or detail_from < self.detail_from
        ):
            self._reset()
            self._load(lo, hi, detail_from)
            self.detail_from = detail_from
        else:
            if lo < self.lo:
                self._load(lo, self.lo, detail_from)
            if hi > self.hi:
                self._load(self.hi, hi, detail_from)
        self.lo = lo if self.lo is None else min(lo, self.lo)
        self.hi = hi if self.hi is None else max(hi, self.hi)

    def _reset(self) -> None:
        self.lo = self.hi = None
        self.collapsed = pl.DataFrame(schema=COLLAPSED_SCHEMA)
        self.detailed = pl.DataFrame(schema=COUNTS_SCHEMA)
        self.presence = pl.DataFrame(schema=PRESENCE_SCHEMA)
        self.detail_from = 0
        self._sums.clear()

    def _load(self, lo: int, hi: int, detail_from: int) -> None:
        chunk = max(1, int(LOAD_CHUNK.total_seconds()) // self.grain_s)
        for start in range(lo, hi, chunk):
            end = min(hi, start + chunk)
            counts = load_counts(
                self.db,
                bucket_start(start, self.grain_s),
                bucket_start(end, self.grain_s),
                self.config,
                self.agent_id,
            )
            self.queries += len(FAMILIES)
            self.collapsed = pl.concat([self.collapsed, collapse(counts)])
            self.presence = pl.concat(
                [self.presence, presence(counts, self.config.release_dimensions)]
            )
            if end > detail_from:
                self.detailed = pl.concat(
                    [self.detailed, counts.filter(pl.col("bucket") >= detail_from)]
                )
            log.debug(
                "drift summaries loaded",
                extra={"from": str(bucket_start(start, self.grain_s)), "rows": counts.height},
            )

    def prune(self, lo: int, detail_from: int) -> None:
        """Drop buckets before ``lo``, and details before ``detail_from``."""
        if self.lo is not None and lo > self.lo:
            self.collapsed = self.collapsed.filter(pl.col("bucket") >= lo)
            self.presence = self.presence.filter(pl.col("bucket") >= lo)
            self.lo = lo
        if detail_from > self.detail_from:
            self.detailed = self.detailed.filter(pl.col("bucket") >= detail_from)
        self.detail_from = detail_from

    def window_sum(self, name: str, lo: int, hi: int) -> pl.DataFrame:
        """Counts summed over buckets ``[lo, hi)`` per agent, environment, signal and key.

        Kept under ``name`` as a running sum: moving forward adds the buckets that enter
        and subtracts those that leave, instead of summing the whole range again.
        """
        keys = [*AGENT_KEYS, *COUNT_KEYS]
        old = self._sums.get(name)
        if old is not None and lo >= old.lo and hi >= old.hi and lo < old.hi:
            entering = self.collapsed.filter(pl.col("bucket").is_between(old.hi, hi - 1))
            leaving = self.collapsed.filter(pl.col("bucket").is_between(old.lo, lo - 1))
            frame = (
                pl.concat(
                    [
                        old.frame,
                        entering.select(*keys, "n"),
                        leaving.select(*keys, -pl.col("n")),
                    ]
                )
                .group_by(keys)
                .agg(pl.col("n").sum())
                .filter(pl.col("n") != 0)
            )
        else:
            frame = (
                self.collapsed.filter(pl.col("bucket").is_between(lo, hi - 1))
                .group_by(keys)
                .agg(pl.col("n").sum())
            )
        self._sums[name] = _Sum(lo, hi, frame)
        return frame

    def dimension_sum(self, dimension: str, lo: int, hi: int) -> pl.DataFrame:
        """Counts over ``[lo, hi)`` per agent, environment and ``value`` of a dimension."""
        if lo < self.detail_from:
            raise ValueError("release details were not kept that far back")
        return (
            self.detailed.filter(
                pl.col("bucket").is_between(lo, hi - 1) & pl.col(dimension).is_not_null()
            )
            .group_by(*AGENT_KEYS, pl.col(dimension).alias("value"), *COUNT_KEYS)
            .agg(pl.col("n").sum())
        )
