"""The ``sql`` command: read-only SQL over the store while ingestion runs.

The lake is attached read-only and each query reads one committed snapshot of it, so any
number of analysts can query while processors write. The connection is the sandbox of
``sandbox.py``: it reads the lake's data files and nothing else, and statements other
than queries are refused before they run, with exit code 1.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import duckdb

from agentwatch.processors.query.sandbox import SandboxError, connect, execute_each
from agentwatch.processors.store.attach import is_metadata_race

Rows = tuple[list[str], list[tuple[Any, ...]]]
"""One statement's column names and rows."""


def query(db: Path, sql: str) -> Rows:
    """Run read-only statements in the sandbox; return the last one's columns and rows."""
    return query_each(db, sql)[-1]


def query_each(db: Path, sql: str) -> list[Rows]:
    """Run read-only statements in the sandbox; return each one's columns and rows, in order.

    All are checked before the first runs; each reads the newest committed snapshot when
    it runs.
    """
    con = connect(db)
    try:
        try:
            return _run(con, sql)
        except duckdb.Error as exc:
            if not is_metadata_race(exc):
                raise
            return _run(con, sql)
    except duckdb.PermissionException as exc:  # raised while fetching lazily
        message = str(exc).splitlines()[0]
        raise SandboxError(f"refused: {message} (only the store is readable)") from exc
    finally:
        con.close()


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> list[Rows]:
    return [
        ([d[0] for d in result.description or []], result.fetchall())
        for result in execute_each(con, sql)
    ]


def write_rows(
    columns: Sequence[str], rows: Sequence[tuple[Any, ...]], fmt: str, out: TextIO
) -> None:
    if fmt == "json":
        json.dump([dict(zip(columns, r, strict=True)) for r in rows], out, default=_json_value)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        from rich.console import Console  # only people's tables need it: tools start faster

        from agentwatch.terminal import Table  # names and values shown as they are stored

        table = Table(*columns, show_lines=False, header_style="bold")
        for r in rows:
            table.add_row(*(_cell(v) for v in r))
        Console(file=out, width=max(100, Console(file=out).width)).print(table)
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def _cell(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
