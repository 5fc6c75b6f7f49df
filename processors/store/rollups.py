"""Per-minute rollups: what the metrics views and the alert rules need, summed as batches land.

Each landed batch adds partial rows to ``minute_rollups``: one per event-time minute and
combination of the keys below, with counts, sums and mergeable latency histograms
(histograms.py). The rows of one minute written by different batches (or partitions,
or processors) are never updated: readers merge them with ``GROUP BY``, so a write is a
plain append in the batch's own commit, exactly once like the batch's events.

The same rows are kept at two coarser tiers, ``hour_rollups`` and ``day_rollups``, so a
query over weeks reads hundreds of rows where the minutes hold hundreds of thousands.
A batch lands its minute rows only, marked ``_untiered``; a maintenance pass merges them
(:func:`merge_rows`) and, in the same transaction, adds them to their hour and day
(:func:`coarser`) and clears the mark (maintain.py). A tier's readers take its rows and
the untiered minute rows cut to its period (:func:`tier_rows_sql`), so every tier reads
exactly the landed events at every snapshot, and a late event's row reaches its own hour
and day. Tiering at landing instead cost a commit a third of its time (46 of 134 ms in
one measurement) and left a pass millions of partial hour and day rows to merge. Partial
rows pile up as batches land (one set per batch and period); maintenance merges each
period's partial rows into one per keys, which readers cannot tell from the unmerged
ones.

What a row knows that an event alone does not comes from the partition's session state
(landing/sessions.py) at landing time: the session's start (for the duration of a
session end), whether it escalated (containment), and the model and prompt version of
its first LLM call (so session outcomes can be cut by both). Events that land before
anything about their session is known keep what they carry themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from agentwatch.processors.store.definitions import BLOCKED, CONTAINED, ERROR, VIOLATION
from agentwatch.processors.store.histograms import (
    HISTOGRAM_TYPE,
    histogram_agg_sql,
    histograms_by_group,
    merged_by_group,
)
from agentwatch.processors.store.tables import MINUTE_ROLLUPS_SCHEMA, UNTIERED

TABLE: Final = "minute_rollups"
# Each rollup table and the period its ``window_start`` is cut to, finest first.
TIERS: Final = {TABLE: "1m", "hour_rollups": "1h", "day_rollups": "1d"}
# The group keys of a row; every other column of the table is summed (or min/max) on merge.
KEYS: Final = (
    "window_start", "late", "agent_id", "agent_version", "environment", "kind",
    "model", "prompt_version", "session_model", "session_prompt_version",
    "tool_name", "resolution",
)  # fmt: skip
_MINUTE: Final = "1m"


def _where(sql: str) -> pl.Expr:
    """A definition of definitions.py, evaluated by polars: true, never null."""
    return pl.sql_expr(sql).fill_null(False)


def minute_rollups(
    events: pl.DataFrame, sessions: pl.DataFrame, by: Sequence[str] = ()
) -> pl.DataFrame:
    """The batch's partial minute rows: one polars ``group_by`` over its events.

    ``sessions`` is the session context of the batch (``SessionTracker.context``). With
    ``by``, columns that both frames carry, the rows are kept apart by them too (and keep
    them): one call serves the batches of several partitions.
    """
    schema = pl.Schema({**MINUTE_ROLLUPS_SCHEMA, **{k: events.schema[k] for k in by}})
    if events.is_empty():
        return pl.DataFrame(schema=schema)
    keys = [*KEYS, *by]
    kind = pl.col("kind")
    end = kind == "session_end"
    llm = kind == "llm_call"
    cost = pl.when(llm).then(pl.coalesce("cost_usd_effective", "cost_usd"))
    frame = events.join(sessions, on=["session_id", *by], how="left").with_columns(
        window_start=pl.col("ts").dt.truncate(_MINUTE),
        late=pl.col("_late").fill_null(False),
        # The session's model stands in only where the event has none of its own.
        session_model=pl.when(pl.col("model").is_null()).then("session_model"),
        session_prompt_version=pl.when(pl.col("prompt_version").is_null()).then(
            "session_prompt_version"
        ),
        resolution=pl.when(end).then("resolution"),
        _cost=cost,
        _duration=pl.when(end).then(
            (pl.col("ts") - pl.col("session_started_at")).dt.total_microseconds() / 1e6
        ),
        _score=pl.when(kind == "feedback").then("score"),
    )
    # Each row's group as a number, which histograms_by_group counts the bins by.
    frame = frame.with_columns(_g=pl.struct(keys).rank("dense"))
    rows = frame.group_by(keys).agg(
        _g=pl.col("_g").first(),
        events=pl.len().cast(pl.Int64),
        errors=_where(ERROR).sum().cast(pl.Int64),
        violations=_where(VIOLATION).sum().cast(pl.Int64),
        blocked=_where(BLOCKED).sum().cast(pl.Int64),
        contained=(end & _where(CONTAINED)).sum().cast(pl.Int64),
        input_tokens=pl.col("input_tokens").sum(),
        output_tokens=pl.col("output_tokens").sum(),
        cache_read_tokens=pl.col("cache_read_tokens").sum(),
        reasoning_tokens=pl.col("reasoning_tokens").sum(),
        cost_usd=pl.col("_cost").sum(),
        priced_calls=pl.col("_cost").count().cast(pl.Int64),
        score_sum=pl.col("_score").sum(),
        scored=pl.col("_score").count().cast(pl.Int64),
        first_ts=pl.col("ts").min(),
        last_ts=pl.col("ts").max(),
    )
    rows = histograms_by_group(
        rows,
        frame,
        {
            "latency_ms": pl.col("latency_ms"),
            "ttft_ms": pl.col("time_to_first_token_ms"),
            "duration_s": pl.col("_duration"),
        },
    )
    # A sum over no priced call is no cost at all, never a silent 0.
    rows = rows.with_columns(cost_usd=pl.when(pl.col("priced_calls") > 0).then("cost_usd"))
    return rows.select(list(schema)).cast(schema)


def cost_corrections(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """Rollup rows that move the minutes' LLM costs from ``before`` to ``after``.

    ``before`` and ``after`` are the same repriced events, as stored and as repriced.
    The rows carry no events, only the cost and priced-call differences, keyed by the
    calls' own columns (a call without a prompt version of its own keeps its correction
    without its session's): merged by sum, each minute's cost is then the repriced one.
    Reprice adds them in the transaction that updates the events, so they land once.
    """
    own = [k for k in KEYS if not k.startswith("session_")]

    def costs(events: pl.DataFrame, name: str) -> pl.DataFrame:
        return (
            events.filter(pl.col("kind") == "llm_call")
            .with_columns(
                window_start=pl.col("ts").dt.truncate(_MINUTE),
                late=pl.col("_late").fill_null(False),
                resolution=pl.lit(None, pl.String()),
                _cost=pl.coalesce("cost_usd_effective", "cost_usd"),
            )
            .group_by(own)
            .agg(
                pl.col("_cost").sum().alias(f"_{name}_cost"),
                pl.col("_cost").count().cast(pl.Int64).alias(f"_{name}_priced"),
            )
        )

    diff = (
        costs(after, "new")
        .join(costs(before, "old"), on=own, how="full", coalesce=True, nulls_equal=True)
        .with_columns(
            cost_usd=pl.col("_new_cost").fill_null(0.0) - pl.col("_old_cost").fill_null(0.0),
            priced_calls=pl.col("_new_priced").fill_null(0) - pl.col("_old_priced").fill_null(0),
        )
    )
    changed = diff.filter((pl.col("cost_usd") != 0) | (pl.col("priced_calls") != 0))
    zero = {"events", "errors", "violations", "blocked", "contained", "scored", "input_tokens",
            "output_tokens", "cache_read_tokens", "reasoning_tokens"}  # fmt: skip
    return changed.select(
        *(
            pl.col(c)
            if c in changed.columns and c not in zero
            else pl.lit(0 if c in zero else None, dtype=t).alias(c)
            for c, t in MINUTE_ROLLUPS_SCHEMA.items()
        )
    ).cast(pl.Schema(MINUTE_ROLLUPS_SCHEMA))


_SUMMED: Final = tuple(
    c for c in MINUTE_ROLLUPS_SCHEMA if c not in KEYS and c not in ("first_ts", "last_ts")
)


def merge_rows(rows: pl.DataFrame, every: str) -> pl.DataFrame:
    """Rollup rows cut to periods of ``every`` and merged: one row per period and keys.

    Counts and sums add up, the times keep their min and max, and histograms add their
    bins' counts, so merged rows answer every query as the rows they replace.
    """
    return _merged(rows, (every,))[every]


def landed(minutes: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """What a batch adds to the rollups, by table: its minute rows, marked untiered."""
    return {TABLE: minutes.with_columns(pl.lit(True).alias(UNTIERED))}


def coarser(minutes: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Minute rows merged into each coarser tier, by table.

    The tiers are merged in one pass (rows of every period stacked, the period a key):
    the fixed cost of the merge's polars steps is paid once, not a tier.
    """
    merged = _merged(minutes, tuple(every for every in TIERS.values() if every != _MINUTE))
    return {table: merged[every] for table, every in TIERS.items() if every != _MINUTE}


def tiers(minutes: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Minute rows and the same rows in every coarser tier, by table: for rows written
    with their tiers at once (a reprice's corrections, a migrated history)."""
    return {TABLE: minutes, **coarser(minutes)}


def tier_rows_sql(table: str) -> str:
    """The rows a rollup tier's readers take: its own, and for a coarser tier the minute
    rows it does not hold yet, cut to its period (``window_start``, then the rest)."""
    if table == TABLE:
        return f"SELECT * EXCLUDE ({UNTIERED}) FROM {TABLE}"
    return (  # DuckDB reads the polars periods ("1h", "1d") as intervals too
        f"SELECT * FROM {table} UNION ALL BY NAME "
        f"SELECT time_bucket(INTERVAL '{TIERS[table]}', window_start, 'UTC') AS window_start, "
        f"* EXCLUDE (window_start, {UNTIERED}) FROM {TABLE} WHERE {UNTIERED}"
    )


def _merged(rows: pl.DataFrame, periods: Sequence[str]) -> dict[str, pl.DataFrame]:
    """:func:`merge_rows` for each period of ``periods``, in one pass."""
    schema = pl.Schema(MINUTE_ROLLUPS_SCHEMA)
    if rows.is_empty():
        return {every: pl.DataFrame(schema=schema) for every in periods}
    histograms = [c for c, t in MINUTE_ROLLUPS_SCHEMA.items() if t == HISTOGRAM_TYPE]
    plain = [c for c in _SUMMED if c not in histograms]
    keys = [*KEYS, "_period"]  # a day starts with an hour: the period tells them apart
    cut = pl.concat(
        rows.with_columns(
            window_start=pl.col("window_start").dt.truncate(every),
            _period=pl.lit(i, pl.UInt8),
        )
        for i, every in enumerate(periods)
    )
    cut = cut.with_columns(_g=pl.struct(keys).rank("dense"))
    merged = cut.group_by(keys).agg(
        pl.col("_g").first(),
        *(pl.col(c).sum() for c in plain),
        first_ts=pl.col("first_ts").min(),
        last_ts=pl.col("last_ts").max(),
        _costed=pl.col("cost_usd").count(),
    )
    merged = merged_by_group(merged, cut, histograms)
    # A cost stays NULL where every row's was (no priced call): never a silent 0.
    merged = merged.with_columns(cost_usd=pl.when(pl.col("_costed") > 0).then("cost_usd"))
    if len(periods) == 1:
        return {periods[0]: merged.select(list(schema)).cast(schema)}
    return {
        every: merged.filter(pl.col("_period") == i).select(list(schema)).cast(schema)
        for i, every in enumerate(periods)
    }


# ---------------------------------------------------------------------------- windows
# A rule's window [$start, $end) rarely starts or ends on a minute. Its whole minutes
# are read from the rollups and its partial minutes at each end from the raw events,
# aggregated into rows of the same shape, so the result is the events' exactly.
_FLOOR_END: Final = "time_bucket(INTERVAL 1 MINUTE, $end::TIMESTAMPTZ, 'UTC')"
_CEIL_START: Final = (
    "(time_bucket(INTERVAL 1 MINUTE, $start::TIMESTAMPTZ - INTERVAL 1 MICROSECOND, 'UTC') "
    "+ INTERVAL 1 MINUTE)"
)
# The columns a window's rows have: what the rules group by and measure.
WINDOW_KEYS: Final = (
    "agent_id", "agent_version", "environment", "kind", "model", "prompt_version", "tool_name",
)  # fmt: skip
_COST: Final = "coalesce(cost_usd_effective, cost_usd)"  # NULL when unpriced (views.py)
_RAW_MEASURES: Final = {
    "events": "count(*)",
    "errors": f"count(*) FILTER (WHERE {ERROR})",
    "violations": f"count(*) FILTER (WHERE {VIOLATION})",
    "blocked": f"count(*) FILTER (WHERE {BLOCKED})",
    "cost_usd": f"sum({_COST}) FILTER (WHERE kind = 'llm_call')",
    "priced_calls": f"count({_COST}) FILTER (WHERE kind = 'llm_call')",
    "first_ts": "min(ts)",
    "last_ts": "max(ts)",
    "latency_ms": histogram_agg_sql("latency_ms"),
}


WINDOW_MEASURES: Final = tuple(_RAW_MEASURES)
# The raw events a window reads: its partial minutes at each end. Two plain ranges (not
# one OR) so that the scans skip everything else by statistics. A rule read copies only
# these spans of events for a metric that reads events through them alone (reads.py).
EDGE_READS: Final = tuple(
    f"FROM events WHERE ts >= {lo} AND ts < {hi}"
    for lo, hi in (
        ("$start", f"least($end, {_CEIL_START})"),
        (f"greatest({_FLOOR_END}, {_CEIL_START})", "$end"),
    )
)


def window_sql(measures: Sequence[str] = ("events",)) -> str:
    """Rows of the window ``[$start, $end)``: whole minutes from the rollups, the rest raw.

    Columns: ``window_start`` (the minute), ``WINDOW_KEYS`` and the ``measures`` asked
    (names of ``_RAW_MEASURES``); late events are included, as they are in the rules' raw
    events. Several rows may share a minute and keys: aggregate them.
    """
    keys = ", ".join(WINDOW_KEYS)
    names = ", ".join(measures)
    raw = ", ".join(f"{_RAW_MEASURES[name]} AS {name}" for name in measures)
    whole = (
        f"SELECT window_start, {keys}, {names} FROM {TABLE} "
        f"WHERE window_start >= {_CEIL_START} AND window_start < {_FLOOR_END}"
    )
    edges = [
        f"SELECT time_bucket(INTERVAL 1 MINUTE, ts, 'UTC') AS window_start, {keys}, {raw} "
        f"{read} GROUP BY ALL"
        for read in EDGE_READS
    ]
    return "(" + " UNION ALL BY NAME ".join([whole, *edges]) + ")"


__all__ = [
    "KEYS",
    "TABLE",
    "TIERS",
    "WINDOW_KEYS",
    "WINDOW_MEASURES",
    "coarser",
    "cost_corrections",
    "landed",
    "merge_rows",
    "minute_rollups",
    "tier_rows_sql",
    "tiers",
    "window_sql",
]
