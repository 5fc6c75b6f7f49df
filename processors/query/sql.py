"""The ``sql`` command: read-only SQL over the catalog while ingestion runs.

The catalog is opened read-only and holds only views over immutable segments, so any
number of analysts can query while processors write. Statements other than queries
are refused before they run, with exit code 1, rather than relying on DuckDB's
read-only mode alone (which would still let ``COPY ... TO`` write files).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import duckdb
from rich.console import Console
from rich.table import Table

ALLOWED = frozenset({"SELECT", "EXPLAIN"})


class ReadOnlyError(Exception):
    """A statement that would change data or files."""


def connect(db: Path) -> duckdb.DuckDBPyConnection:
    if not db.exists():
        raise FileNotFoundError(
            f"{db} does not exist: run `agentwatch process --db {db}` (or `make demo`) first"
        )
    return duckdb.connect(str(db), read_only=True)


def query(db: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement; return column names and rows."""
    con = connect(db)
    try:
        statements = con.extract_statements(sql)
        if not statements:
            raise ReadOnlyError("no statement given")
        for st in statements:
            kind = str(st.type).rsplit(".", 1)[-1]
            if kind not in ALLOWED:
                raise ReadOnlyError(
                    f"agentwatch sql is read-only: {kind} statements are refused "
                    "(only SELECT, WITH ... SELECT, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN run)"
                )
        result = None
        for st in statements:
            result = con.execute(st)
        assert result is not None
        columns = [d[0] for d in result.description or []]
        return columns, result.fetchall()
    finally:
        con.close()


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
