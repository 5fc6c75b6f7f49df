"""``agentwatch sql``: read-only SQL over the store while ingestion runs."""

from __future__ import annotations

import argparse
import sys

from agentwatch.commands.options import add_db_option
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Run a read-only SQL query over the store (views: events, dead_letters, ...). "
        "Safe while `agentwatch process` runs. It reads only the store: writes, files "
        "outside it, URLs, extensions, settings and table functions other than a few "
        "readers (range, unnest, duckdb_*, ducklake_snapshots, ...) are refused with exit "
        "code 1. "
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
        "for tools",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import duckdb

    from agentwatch.processors.query.sandbox import SandboxError
    from agentwatch.processors.query.sql import query_each, write_rows

    try:
        results = query_each(args.db, args.sql)
    except (SandboxError, FileNotFoundError, duckdb.Error) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        print(f"agentwatch sql: {lines[0]}", file=sys.stderr)
        return 1
    for i, (columns, rows) in enumerate(results):
        if i and args.format != "json":
            sys.stdout.write("\n")  # results apart; JSON is already one line each
        write_rows(columns, rows, args.format, sys.stdout)
    return 0
