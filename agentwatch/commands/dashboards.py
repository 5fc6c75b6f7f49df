"""The ``dashboards`` command: Grafana JSON from the catalog, and snapshots without Grafana."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from agentwatch.commands.options import positive
from agentwatch.durations import duration_argument
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Grafana dashboards as code: `build` writes the dashboards (fleet overview, agent "
        "detail, cost and tokens, safety and policy, drift, alerts and breakers, pipeline "
        "health) as Grafana JSON for the provisioned Prometheus datasource; `snapshot` "
        "renders the fleet overview's key panels as PNG images and one HTML page, from "
        "Prometheus or the store, for reports and readers without Grafana."
    )
    p = parser
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="write every dashboard as <uid>.json",
        description="Write every dashboard as Grafana JSON (<uid>.json) into --out.",
    )
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    build.set_defaults(handler=_build)

    snap = actions.add_parser(
        "snapshot",
        help="render the fleet overview's key panels as PNG images and index.html",
        description=(
            "Render the fleet overview's headline numbers, trends and per-agent table as PNG "
            "images plus one self-contained index.html. With --prometheus the panels' own "
            "PromQL runs over the last --range; otherwise the same numbers come from the "
            "store (--db), over the --range ending at the newest landed event."
        ),
    )
    snap.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    source = snap.add_mutually_exclusive_group()
    source.add_argument(
        "--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://localhost:9090"
    )
    source.add_argument(
        "--db",
        type=Path,
        default=Path(settings.value("storage", "db")),
        help="the store to read when no --prometheus is given (default %(default)s)",
    )
    snap.add_argument(
        "--range",
        dest="span",
        type=positive_span,
        default=settings.value("dashboards", "range"),
        metavar="DURATION",
        help="time range shown, e.g. 30m, 6h, 2d (default %(default)s)",
    )
    snap.add_argument(
        "--budget",
        type=positive,
        default=settings.value("dashboards", "daily_budget_usd"),
        metavar="USD",
        help="daily LLM budget the 'budget used' tile compares with (default %(default)s)",
    )
    snap.set_defaults(handler=_snapshot)


def positive_span(text: str) -> dt.timedelta:
    """An argparse ``type``: a time range to show, a duration above 0."""
    span = duration_argument(text)
    if not span:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return span


def _build(args: argparse.Namespace) -> int:
    from agentwatch.dashboards.build import write_all

    for path in write_all(args.out):
        print(path)
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    # matplotlib is imported only here: building JSON must not need it.
    from agentwatch.dashboards.render import pictures_count, write_report
    from agentwatch.dashboards.snapshot import (
        SnapshotError,
        from_duckdb,
        from_prometheus,
        steps,
    )
    from agentwatch.progress import progress_bar

    with progress_bar("dashboards snapshot", steps() + pictures_count()) as advance:
        try:
            span = args.span
            if args.prometheus:
                snapshot = from_prometheus(args.prometheus, span, args.budget, advance)
            else:
                snapshot = from_duckdb(args.db, span, args.budget, advance)
        except (SnapshotError, ValueError) as exc:
            print(f"agentwatch dashboards snapshot: {exc}", file=sys.stderr)
            return 1
        paths = write_report(snapshot, args.out, advance)
    for path in paths:
        print(path)
    return 0
