"""``agentwatch sql``: read-only SQL over the store while ingestion runs."""

from __future__ import annotations

import argparse
import signal
import sys

from agentwatch.commands.options import add_db_option
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Run a read-only SQL query over the store (views: events, dead_letters, ...). "
        "Safe while `agentwatch process` runs. It reads only the store: writes, files "
        "outside it, URLs, extensions, settings and table functions other than a few "
        "readers (range, unnest, duckdb_*, ducklake_snapshots, ...) are refused with exit "
        "code 1. Ctrl-C or SIGTERM stops a running query: exit code 130 or 143. "
        "Plain DuckDB works too: `agentwatch store attach` prints the ATTACH statement."
    )
    p = parser
    p.add_argument(
        "sql",
        help='the query, e.g. "SELECT kind, count(*) FROM events GROUP BY 1"; several '
        "statements separated by ; print one result each, in order",
    )
    add_db_option(p, settings)
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table for people, csv or json (a list of row objects, one line a statement) "
        "for tools. JSON has no NaN nor Infinity: they are null; BLOBs are base64, times "
        "ISO 8601, decimals strings",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import duckdb

    from agentwatch.processors.query.sandbox import SandboxError
    from agentwatch.processors.query.sql import QueryInterrupted

    try:
        _query(args)
    except (SandboxError, FileNotFoundError, duckdb.Error) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"agentwatch sql: {lines[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM during the query
        signum = stop.signum if isinstance(stop, QueryInterrupted) else signal.SIGINT
        print(f"agentwatch sql: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum  # 130 for Ctrl-C, as for every command
    return 0


def _query(args: argparse.Namespace) -> None:
    from agentwatch.processors.query.sql import query_each, write_rows

    results = query_each(args.db, args.sql)
    for i, (columns, rows) in enumerate(results):
        if i and args.format != "json":
            sys.stdout.write("\n")  # results apart; JSON is already one line each
        write_rows(columns, rows, args.format, sys.stdout)
