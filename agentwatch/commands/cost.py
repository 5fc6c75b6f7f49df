"""The ``cost`` command: show the pricing table, and reprice stored events after it changes.

Repricing is one lake transaction: it reads the rows to reprice, updates those whose
cost changes, and adds the minute rollups' corrections (``rollups.cost_corrections``),
so readers see either none of it or all of it, and the metrics views and the alert
rules, which read the rollups, see the repriced costs exactly once. Minutes that have
no rollup rows for a call (rows stored before rollups existed) are not corrected.

Only costs the project computed are touched: rows whose cost came from the event, rows
before ``--since`` and rows of other kinds keep their stored values.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl
from rich import box
from rich.console import Console

from agentwatch.commands.options import add_db_option
from agentwatch.processors.landing.pricing import (
    DERIVED_COST_COLUMNS,
    SOURCE_PRICING,
    SOURCE_UNPRICED,
    PricingTable,
    apply_pricing,
    load_pricing,
    pricing_file,
    unpriced_models,
)
from agentwatch.processors.store.attach import StoreMissing
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore, insert_rows
from agentwatch.processors.store.rollups import KEYS as ROLLUP_KEYS
from agentwatch.processors.store.rollups import TABLE as ROLLUPS
from agentwatch.processors.store.rollups import cost_corrections, tiers
from agentwatch.processors.store.tables import UTC_TS
from agentwatch.settings import Settings
from agentwatch.terminal import Table

log = logging.getLogger(__name__)

EVENTS_TABLE = "events"
_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


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
        frame = con.execute(
            "SELECT * FROM events WHERE kind = 'llm_call' AND ts >= ? "
            "AND (cost_source IS NULL OR cost_source IN (?, ?))",
            [since, SOURCE_PRICING, SOURCE_UNPRICED],
        ).pl()
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
        con.register("_repriced", updates.to_arrow())
        try:
            assignments = ", ".join(f"{c} = r.{c}" for c in DERIVED_COST_COLUMNS)
            keys = " AND ".join(f"e.{c} = r.{c}" for c in _ROW_KEY)
            con.execute(f"UPDATE events AS e SET {assignments} FROM _repriced AS r WHERE {keys}")
        finally:
            con.unregister("_repriced")
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
    held = con.execute(
        f"SELECT DISTINCT {cols} FROM {ROLLUPS} WHERE kind = 'llm_call' AND events > 0 "
        "AND window_start >= ? AND window_start <= ?",
        [corrections["window_start"].min(), corrections["window_start"].max()],
    ).pl()
    rows = corrections.join(held, on=own, how="semi", nulls_equal=True)
    if rows.is_empty():
        return
    for table, tier in tiers(rows).items():  # every tier moves by the same corrections
        insert_rows(con, table, tier)
    log.info("rollups corrected", extra={"rows": rows.height})


def _count_unpriced(rows: pl.DataFrame) -> int:
    return int((rows.get_column("cost_source") == SOURCE_UNPRICED).sum())


# --------------------------------------------------------------------------- command


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "LLM calls that carry no cost_usd are priced at landing time from a dated "
        "pricing table (the built-in one, [pricing] file or $AGENTWATCH_PRICING_FILE). "
        "`show` prints it; `reprice` recomputes stored costs after it changes."
    )
    p = parser
    actions = p.add_subparsers(dest="cost_action", metavar="ACTION", required=True)
    default_pricing = pricing_file(settings)
    pricing_help = (
        "pricing table, YAML (default: "
        + (str(default_pricing) if default_pricing else "the built-in table")
        + "; [pricing] file, env AGENTWATCH_PRICING_FILE)"
    )

    show = actions.add_parser(
        "show", help="print the pricing table", description="Print the pricing table."
    )
    show.add_argument(
        "--pricing", type=Path, metavar="FILE", default=default_pricing, help=pricing_help
    )
    show.set_defaults(handler=_show)

    rep = actions.add_parser(
        "reprice",
        help="recompute stored LLM costs from the pricing table",
        description=(
            "Recompute the cost of stored llm_call events from --since on that were priced "
            "from the table or left unpriced, and update them in one transaction. Costs "
            "that came with the event, and older events, are left as they are. Safe while "
            "`agentwatch process` runs; restart processors first so that they land new "
            "events with the new table too. Exit 1 when there is no store to reprice in."
        ),
    )
    rep.add_argument(
        "--since",
        type=_since,
        required=True,
        metavar="DATE",
        help="first event time to reprice: YYYY-MM-DD (00:00 UTC) or an RFC 3339 timestamp",
    )
    add_db_option(rep, settings)
    rep.add_argument(
        "--pricing", type=Path, metavar="FILE", default=default_pricing, help=pricing_help
    )
    rep.add_argument(
        "--dry-run", action="store_true", help="report what would change, write nothing"
    )
    rep.set_defaults(handler=_reprice)


def _since(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 timestamp"
        ) from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _show(args: argparse.Namespace) -> int:
    table = load_pricing(args.pricing)
    Console().print(pricing_view(table, dt.datetime.now(dt.UTC)))
    return 0


def pricing_view(table: PricingTable, now: dt.datetime) -> Table:
    """The table as people read it, by provider and model; superseded rows dimmed."""
    current = set(table.in_force(now))
    view = Table(
        title=f"Pricing table {table.version}  ({table.origin})",
        title_justify="left",
        title_style="bold",
        caption=f"USD per million tokens; dim rows are superseded. {table.source}",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for label in ("model", "provider", "from"):
        view.add_column(label, no_wrap=True)
    for label in ("input", "cached", "output", "reasoning"):
        view.add_column(label, justify="right", no_wrap=True)
    for row in sorted(table.rows, key=lambda r: (r.provider, r.model, r.effective_from)):
        view.add_row(
            row.model,
            row.provider,
            row.effective_from.isoformat(),
            _usd(row.input),
            _usd(row.cached_input) if row.cached_input is not None else "(input)",
            _usd(row.output),
            _usd(row.reasoning) if row.reasoning is not None else "(output)",
            style=None if row in current else "dim",
        )
    return view


def _usd(value: float) -> str:
    """Up to six decimals (cache prices go to $0.01875), at least two."""
    whole, _, cents = f"{value:,.6f}".rstrip("0").partition(".")
    return f"{whole}.{cents:0<2}"


def _reprice(args: argparse.Namespace) -> int:
    table = load_pricing(args.pricing)
    try:
        con = connect_lake(args.db)
    except StoreMissing as exc:
        print(f"agentwatch cost reprice: {exc}", file=sys.stderr)
        return 1
    con.close()
    store = LakeStore(args.db)
    console = Console()
    report = reprice(store, table, args.since, dry_run=args.dry_run)
    console.print(
        summary_heading(report), style="bold", highlight=False, soft_wrap=True, markup=False
    )
    console.print(summary_view(report))
    if report.unpriced_models:
        console.print("Models still unpriced", style="bold")
        unpriced = Table()
        unpriced.add_column("model")
        unpriced.add_column("events", justify="right")
        for model, n in report.unpriced_models.most_common():
            unpriced.add_row(model, f"{n:,}")
        console.print(unpriced)
    return 0


def summary_heading(report: RepriceReport) -> str:
    return f"Reprice from {report.since.isoformat()}, pricing {report.pricing_version}" + (
        " (dry run: nothing written)" if report.dry_run else ""
    )


def summary_view(report: RepriceReport) -> Table:
    verb = "would be rewritten" if report.dry_run else "rewritten"
    view = Table(show_header=False)
    view.add_column("what")
    view.add_column("value", justify="right")
    changing = report.rows_changed if report.dry_run else report.rows_rewritten
    for label, value in (
        ("rows repriced", f"{report.rows_repriced:,}"),
        (f"rows {verb}", f"{changing:,}"),
        ("rows changed (cost, source or version)", f"{report.rows_changed:,}"),
        ("rows whose cost changed", f"{report.rows_cost_changed:,}"),
        ("cost before (USD)", f"{report.cost_before:,.6f}"),
        ("cost after (USD)", f"{report.cost_after:,.6f}"),
        ("unpriced rows before", f"{report.unpriced_before:,}"),
        ("unpriced rows after", f"{report.unpriced_after:,}"),
    ):
        view.add_row(label, value)
    return view
