"""Repricing stored events after the pricing table changes: a rewrite of the store.

Repricing is one lake transaction: it reads the rows to reprice, updates those whose
cost changes, and adds the minute rollups' corrections (``rollups.cost_corrections``),
so readers see either none of it or all of it, and the metrics views and the alert
rules, which read the rollups, see the repriced costs exactly once. Minutes that have
no rollup rows for a call (rows stored before rollups existed) are not corrected.

Only costs the project computed are touched: rows whose cost came from the event, rows
before ``since`` and rows of other kinds keep their stored values.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field

import duckdb
import polars as pl

from agentwatch.frames import query, registered
from agentwatch.processors.landing.pricing import (
    DERIVED_COST_COLUMNS,
    SOURCE_PRICING,
    SOURCE_UNPRICED,
    PricingTable,
    apply_pricing,
    unpriced_models,
)
from agentwatch.processors.store.lake import LakeStore, insert_rows
from agentwatch.processors.store.rollups import KEYS as ROLLUP_KEYS
from agentwatch.processors.store.rollups import TABLE as ROLLUPS
from agentwatch.processors.store.rollups import cost_corrections, tiers
from agentwatch.processors.store.tables import UTC_TS

log = logging.getLogger(__name__)


@dataclass
class RepriceReport:
    """What a reprice did (or, dry, would do): the command's summary and the tests' oracle."""

    since: dt.datetime
    pricing_version: str
    dry_run: bool
    rows_repriced: int = 0
    rows_rewritten: int = 0
    rows_changed: int = 0
    rows_cost_changed: int = 0
    cost_before: float = 0.0
    cost_after: float = 0.0
    unpriced_before: int = 0
    unpriced_after: int = 0
    unpriced_models: Counter[str] = field(default_factory=Counter)


def reprice_mask(since: dt.datetime) -> pl.Expr:
    """Rows to reprice: LLM calls from ``since`` on whose cost the project computed.

    A null ``cost_source`` marks a row landed before pricing existed: it is priced too.
    """
    source = pl.col("cost_source")
    return (
        (pl.col("kind") == "llm_call")
        & (pl.col("ts") >= pl.lit(since).cast(UTC_TS))
        & (source.is_null() | source.is_in([SOURCE_PRICING, SOURCE_UNPRICED]))
    ).fill_null(False)


def reprice_frame(frame: pl.DataFrame, table: PricingTable, since: dt.datetime) -> pl.DataFrame:
    """``frame`` with the derived cost columns recomputed on the rows of :func:`reprice_mask`."""
    repriced = apply_pricing(frame, table)
    mask = reprice_mask(since)
    return frame.with_columns(
        pl.when(mask).then(repriced.get_column(c)).otherwise(pl.col(c)).alias(c)
        for c in DERIVED_COST_COLUMNS
    )


def reprice(
    store: LakeStore, table: PricingTable, since: dt.datetime, *, dry_run: bool = False
) -> RepriceReport:
    """Recompute the rows of :func:`reprice_mask` and update those that change, atomically.

    The read, the update and the rollups' corrections are one transaction: a concurrent
    landing either committed before it (and its rows are repriced) or after it (and was
    priced when it landed).
    """

    def work(con: duckdb.DuckDBPyConnection) -> RepriceReport:
        report = RepriceReport(since=since, pricing_version=table.version, dry_run=dry_run)
        frame = query(
            con,
            "SELECT * FROM events WHERE kind = 'llm_call' AND ts >= ? "
            "AND (cost_source IS NULL OR cost_source IN (?, ?))",
            [since, SOURCE_PRICING, SOURCE_UNPRICED],
        )
        # The rows to reprice are chosen before repricing (which may change their source).
        chosen = frame.select(reprice_mask(since)).to_series()
        old_rows = frame.filter(chosen)
        new_rows = reprice_frame(frame, table, since).filter(chosen)
        differs = old_rows.select(
            pl.col(c).ne_missing(new_rows.get_column(c)) for c in DERIVED_COST_COLUMNS
        )
        changed = differs.select(pl.any_horizontal(pl.all())).to_series()
        report.rows_repriced = old_rows.height
        report.rows_changed = int(changed.sum())
        report.rows_cost_changed = int(differs.get_column("cost_usd_effective").sum())
        report.cost_before = float(old_rows.get_column("cost_usd_effective").sum())
        report.cost_after = float(new_rows.get_column("cost_usd_effective").sum())
        report.unpriced_before = _count_unpriced(old_rows)
        report.unpriced_after = _count_unpriced(new_rows)
        for model, events in unpriced_models(new_rows).select("model", "events").iter_rows():
            report.unpriced_models[model or "(none)"] += events
        if dry_run or not report.rows_changed:
            return report
        updates = new_rows.filter(changed).select(*_ROW_KEY, *DERIVED_COST_COLUMNS)
        assignments = ", ".join(f"{c} = r.{c}" for c in DERIVED_COST_COLUMNS)
        keys = " AND ".join(f"e.{c} = r.{c}" for c in _ROW_KEY)
        with registered(con, "_repriced", updates):
            con.execute(f"UPDATE events AS e SET {assignments} FROM _repriced AS r WHERE {keys}")
        _correct_rollups(con, old_rows.filter(changed), new_rows.filter(changed))
        report.rows_rewritten = report.rows_changed
        log.info("events repriced", extra={"rows": report.rows_changed})
        return report

    with store.write_lock():
        return store.transaction(work)


# A stored event's identity: its Kafka position, and its id (one OTLP message holds many).
_ROW_KEY = ("_topic", "_partition", "_offset", "event_id")


def _correct_rollups(
    con: duckdb.DuckDBPyConnection, before: pl.DataFrame, after: pl.DataFrame
) -> None:
    """Add the rollup rows that move the repriced minutes' costs, in the caller's transaction.

    Only groups (minute and keys) that the rollups hold LLM calls for are corrected: rows
    stored before rollups existed are not in them, and a correction alone would show
    their cost difference as if it were their whole cost.
    """
    corrections = cost_corrections(before, after)
    if corrections.is_empty():
        return
    own = [k for k in ROLLUP_KEYS if not k.startswith("session_")]
    cols = ", ".join(own)
    held = query(
        con,
        f"SELECT DISTINCT {cols} FROM {ROLLUPS} WHERE kind = 'llm_call' AND events > 0 "
        "AND window_start >= ? AND window_start <= ?",
        [corrections["window_start"].min(), corrections["window_start"].max()],
    )
    rows = corrections.join(held, on=own, how="semi", nulls_equal=True)
    if rows.is_empty():
        return
    for table, tier in tiers(rows).items():  # every tier moves by the same corrections
        insert_rows(con, table, tier)
    log.info("rollups corrected", extra={"rows": rows.height})


def _count_unpriced(rows: pl.DataFrame) -> int:
    return int((rows.get_column("cost_source") == SOURCE_UNPRICED).sum())
