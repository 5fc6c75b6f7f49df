"""The ``cost`` command: show the pricing table, and reprice stored events after it changes.

The repricing itself is a store operation (``processors/store/reprice.py``); this module
parses the flags, calls it and prints its report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from rich import box
from rich.console import Console

from agentwatch.clock import utc_now
from agentwatch.commands.options import add_db_option
from agentwatch.processors.landing.pricing import PricingTable, load_pricing, pricing_file
from agentwatch.processors.store.attach import StoreMissing
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.reprice import RepriceReport, reprice
from agentwatch.settings import Settings
from agentwatch.terminal import Table


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
    Console().print(pricing_view(table, utc_now()))
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
