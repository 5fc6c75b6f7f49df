"""The ``sql`` command: read-only SQL over the store while ingestion runs.

The lake is attached read-only and each query reads one committed snapshot of it, so any
number of analysts can query while processors write. The connection is the sandbox of
``sandbox.py``: it reads the lake's data files and nothing else, and statements other
than queries are refused before they run, with exit code 1.

Called on the main thread, the statements run on a thread of their own while the main
thread waits, free to take signals: SIGINT or SIGTERM interrupts the DuckDB query, and
``QueryInterrupted`` is raised once it has stopped.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import duckdb

from agentwatch.processors.query.sandbox import SandboxError, connect, execute_each
from agentwatch.processors.store.attach import is_metadata_race

Rows = tuple[list[str], list[tuple[Any, ...]]]
"""One statement's column names and rows."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a query, where they still have Python's default handler."""
MAX_POLL_S = 0.05
"""The longest wait between two looks at the query's thread; an interrupted query is
interrupted again at each (a statement that had not started yet is stopped by the next)."""


class QueryInterrupted(KeyboardInterrupt):
    """A query stopped by a signal: raised once the query has stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def query(db: Path, sql: str) -> Rows:
    """Run read-only statements in the sandbox; return the last one's columns and rows."""
    return query_each(db, sql)[-1]


def query_each(db: Path, sql: str) -> list[Rows]:
    """Run read-only statements in the sandbox; return each one's columns and rows, in order.

    All are checked before the first runs; each reads the newest committed snapshot when
    it runs.
    """
    if threading.current_thread() is threading.main_thread():
        return _Interruptible(db, sql).run()
    con = connect(db)  # signals are the main thread's to take
    try:
        return _statements(con, sql)
    finally:
        con.close()


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[Rows]:
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


class _Interruptible:
    """Connects and runs the statements on a daemon thread; the main thread waits with
    ``time.sleep`` (no lock that an exception raised by a signal handler could leave held).

    SIGINT and SIGTERM, where Python's default handler is theirs, interrupt the query and
    ``QueryInterrupted`` follows once it has stopped; a second signal raises it at once.
    A ``KeyboardInterrupt`` raised by a handler of the caller's stops the query as well.
    """

    def __init__(self, db: Path, sql: str) -> None:
        self._db, self._sql = db, sql
        self._con: duckdb.DuckDBPyConnection | None = None
        self._rows: list[Rows] = []
        self._error: BaseException | None = None
        self._done = False
        self._stopping = False
        self._signum: int | None = None

    def run(self) -> list[Rows]:
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for signum, handler in previous.items():
            if handler in (signal.default_int_handler, signal.SIG_DFL):
                signal.signal(signum, self._on_signal)
        try:
            threading.Thread(target=self._work, name="sql-query", daemon=True).start()
            try:
                self._wait()
            except KeyboardInterrupt as exc:
                if isinstance(exc, QueryInterrupted):
                    raise  # a second signal: the query is left to end with the process
                self._stopping = True
                self._wait()
                raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self._con is not None:
            self._con.close()
        if self._signum is not None:
            raise QueryInterrupted(self._signum)
        if self._error is not None:
            raise self._error
        return self._rows

    def _work(self) -> None:
        try:
            self._con = connect(self._db)
            self._rows = _statements(self._con, self._sql)
        except BaseException as exc:  # handed to the main thread, which raises it
            self._error = exc
        finally:
            self._done = True

    def _wait(self) -> None:
        pause = 0.001  # a quick query is not kept waiting for the next look
        while not self._done:
            if self._stopping and self._con is not None:
                self._con.interrupt()
            time.sleep(pause)
            pause = min(2 * pause, MAX_POLL_S)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            raise QueryInterrupted(signum)
        self._stopping = True
        self._signum = signum
        if self._con is not None:
            self._con.interrupt()


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> list[Rows]:
    return [
        ([d[0] for d in result.description or []], result.fetchall())
        for result in execute_each(con, sql)
    ]


def write_rows(
    columns: Sequence[str], rows: Sequence[tuple[Any, ...]], fmt: str, out: TextIO
) -> None:
    if fmt == "json":
        objects = [{c: _json_value(v) for c, v in zip(columns, r, strict=True)} for r in rows]
        json.dump(objects, out, allow_nan=False)
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
    """A value as JSON has it: NaN and ±Infinity (which JSON has not) null, BLOBs in base64,
    times in ISO 8601, decimals and other types as their text; lists and structs within."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_json_key(k): _json_value(v) for k, v in value.items()}
    return str(value)


def _json_key(key: Any) -> str:
    value = _json_value(key)
    return value if isinstance(value, str) else json.dumps(value)
