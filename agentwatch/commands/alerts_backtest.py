"""``agentwatch alerts backtest``: what the rules would have fired over stored history."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Final

from rich import box
from rich.console import Console

from agentwatch.clock import utc_now
from agentwatch.commands.alerts_group import (
    add_catalog_option,
    add_rules_option,
    catalog_from_args,
)
from agentwatch.commands.drift import time_text
from agentwatch.commands.options import add_db_option, duration_help, positive_seconds
from agentwatch.durations import TIME_EXAMPLES, format_duration, is_relative, parse_time
from agentwatch.settings import ConfigError, Settings
from agentwatch.terminal import Table

INTERVAL_S: Final = 60.0
"""Event time between two evaluations of a backtest unless told: coarser than the live
evaluator's ``[alerts] interval``, as a finer one is slower to replay."""


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    p = parser
    parser.description = (
        "Evaluate the rules (--rules) every --interval of event time from --from to --to "
        "with the evaluator's own code and the agent catalog (--catalog), notifying and "
        "acting on nothing and writing nothing to the store. Prints, per alert, when it "
        "would have fired, for how long and how often it flapped (fired again after "
        "resolving); --out writes the same as JSON with every episode. A relative range "
        "(2d, now) that holds no events is taken relative to the data's end, with a "
        "warning; a store without events exits 1."
    )
    add_db_option(p, settings)
    add_catalog_option(p, settings)
    add_rules_option(p, settings)
    p.add_argument("--from", dest="start", type=time_text, required=True, metavar="T",
                   help=f"first evaluation: {TIME_EXAMPLES}")  # fmt: skip
    p.add_argument("--to", dest="end", type=time_text, default="now", metavar="T",
                   help="last evaluation (default now)")  # fmt: skip
    p.add_argument(
        "--interval",
        type=positive_seconds,
        default=INTERVAL_S,
        metavar="DURATION",
        help=duration_help(
            "event time between evaluations; finer than 1m is slower to replay", INTERVAL_S
        ),
    )
    p.add_argument("--out", type=Path, metavar="FILE.json", help="write the result as JSON")
    p.set_defaults(handler=_backtest)


def _backtest(args: argparse.Namespace) -> int:
    from agentwatch.alerts.evaluation.backtest import backtest, instants
    from agentwatch.alerts.rules import load_rules
    from agentwatch.commands.timerange import EmptyRange, resolve
    from agentwatch.progress import progress_bar

    now = utc_now()
    asked = parse_time(args.start, now), parse_time(args.end, now)
    if asked[0] >= asked[1]:
        print(
            f"agentwatch alerts backtest: --from {args.start} must be before --to {args.end}",
            file=sys.stderr,
        )
        return 2
    if not args.db.exists():
        print(f"agentwatch alerts backtest: {args.db} does not exist", file=sys.stderr)
        return 1
    try:
        rules = load_rules(args.rules)
        catalog = catalog_from_args(args, "catalog thresholds and governance apply to no agent")
    except ConfigError as exc:
        print(f"agentwatch alerts backtest: {exc}", file=sys.stderr)
        return 2
    relative = is_relative(args.start) and is_relative(args.end)
    interval = dt.timedelta(seconds=args.interval)
    try:
        start, end = resolve(args.db, *asked, relative, "backtest")
    except EmptyRange as exc:
        print(f"agentwatch alerts backtest: {exc}", file=sys.stderr)
        return 1
    with progress_bar("alerts backtest", len(instants(start, end, interval))) as advance:
        result = backtest(args.db, rules, catalog, start, end, interval, progress=advance)
    console = Console(width=min(100, Console().width) if sys.stdout.isatty() else 100)
    table = Table(
        title=f"Backtest {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
        f"{result.evaluations:,} evaluations every {format_duration(interval)}: "
        f"{len(result.fired)} alert(s) would have fired",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in ("rule", "labels", "first fired", "fired", "flaps", "firing"):
        right = name in ("fired", "flaps", "firing")
        table.add_column(
            name,
            justify="right" if right else "left",
            no_wrap=name != "labels",
            overflow="fold",
        )
    for row in result.summary():
        labels = ", ".join(
            f"{k}={v}" for k, v in row["labels"].items() if k not in ("severity", "category")
        )
        table.add_row(
            row["rule"],
            labels,
            row["first_fired_at"][5:16].replace("T", " "),
            str(row["fired"]),
            str(row["flaps"]),
            format_duration(row["firing_s"] // 60 * 60),
        )
    console.print(table)
    for rule, error in result.errors.items():
        print(f"warning: {rule} was not evaluated: {error}", file=sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"written to {args.out}", markup=False)
    return 0
