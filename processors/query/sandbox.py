"""The analysts' DuckDB connection: reads the lake's data files and nothing else.

Two independent walls, so that a hole in one is not a way out:

- **The connection.** The lake attached read-only, with extension auto-install and
  auto-load off, file access limited to the lake's data path (``allowed_directories``
  with ``enable_external_access`` off: no other file, URL, database or extension can be
  reached), no temporary directory (DuckDB would allow reading that too), and the
  configuration locked, so no statement can loosen it again.
- **The statements.** Each one is parsed by DuckDB's own parser and only queries run:
  ``SELECT`` (with ``WITH``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``) and
  ``EXPLAIN [ANALYZE]`` of a query. The query inside an ``EXPLAIN`` is checked the same
  way, and so is the SQL text given to the ``query()`` table function; functions that
  run SQL the checker cannot see are refused. Table functions are allow-listed
  (``ALLOWED_TABLE_FUNCTIONS``), wherever they appear in the parse tree: DuckLake's
  maintenance functions delete and write the lake's files even on a read-only attach,
  so they and every other unlisted one are refused. ``COPY``, ``EXPORT``, ``ATTACH``,
  ``INSTALL``, ``LOAD``, ``SET``, ``PRAGMA``, ``CALL``, ``CREATE`` and every other
  statement are refused before anything runs. The read-only connection cannot write
  the lake, but ``COPY ... TO`` could still write files (a forged Parquet file in the
  data path): the statement check is what stops it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from agentwatch.errors import first_line
from agentwatch.processors.store import extensions
from agentwatch.processors.store.attach import (
    refuse_foreign,
    require_lake,
    retry_busy,
    version_mismatch,
)
from agentwatch.processors.store.layout import refuse_old_layout
from agentwatch.processors.store.location import ALIAS, create_s3_secret, locate

# Statement types that only read (DuckDB parses DESCRIBE, SHOW, SUMMARIZE as SELECT).
QUERY_TYPES = frozenset({"SELECT"})
EXPLAIN_TYPE = "EXPLAIN"
# Table functions whose argument is SQL text: checked like a statement.
SQL_TEXT_FUNCTIONS = frozenset({"query"})
# Functions that run SQL the checker cannot read (a serialized plan).
REFUSED_FUNCTIONS = frozenset({"json_execute_serialized_sql"})
# The table functions a query may read from; every other one is refused, however it is
# spelled or nested. Among those refused: DuckLake's maintenance (ducklake_cleanup_old_files
# deletes the lake's data files, ducklake_merge_adjacent_files writes new ones), the
# SQLite and PostgreSQL scanners' query and attach functions, checkpoints and logging, and
# the file readers (read_parquet, glob, ...): the lake's tables and views are read by name.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {
        # SQL text, checked like a statement (SQL_TEXT_FUNCTIONS).
        "query",
        # Rows made from values.
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "histogram",
        "histogram_values",
        # What the metadata database holds.
        "duckdb_databases",
        "duckdb_schemas",
        "duckdb_tables",
        "duckdb_views",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_keywords",
        "duckdb_settings",
        "pragma_table_info",
        # The lake's snapshots, files and changes, read from its metadata database.
        "ducklake_snapshots",
        "ducklake_current_snapshot",
        "ducklake_last_committed_snapshot",
        "ducklake_table_info",
        "ducklake_list_files",
        "ducklake_table_changes",
        "ducklake_table_insertions",
        "ducklake_table_deletions",
        "ducklake_options",
        "ducklake_settings",
    }
)
# Scalar calls of these families are refused too: they have only table functions.
TABLE_FUNCTION_PREFIXES = ("ducklake_", "sqlite_", "postgres_")
# EXPLAIN (...) in EXPLAIN (...) (...) SELECT is as deep as a real question goes.
MAX_DEPTH = 4
ALLOWED_HELP = "only queries run: SELECT, WITH ... SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN"
TABLE_FUNCTIONS_HELP = "tables and views are read by name; see docs/security.md#sql"


class SandboxError(Exception):
    """A statement the analysts' connection refuses; the message is one line."""


def connect(db: Path | str) -> duckdb.DuckDBPyConnection:
    """Attach the lake ``db`` read-only, able to read only the lake's own files."""
    location = locate(db)
    refuse_old_layout(location)
    require_lake(location)
    refuse_foreign(location)
    # Its own instance, not the process's shared one: its configuration gets locked. No
    # temporary directory: DuckDB would allow reading it (`.tmp` under the working
    # directory by default), and a query that needs more memory fails instead of spilling.
    con = duckdb.connect(config={**extensions.config(), "temp_directory": ""})
    try:
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        extensions.load(con, location.extensions)
        create_s3_secret(con, location)
        try:
            retry_busy(lambda: con.execute(location.attach_sql(read_only=True, retries_busy=True)))
        except duckdb.Error as exc:
            mismatch = version_mismatch(location, exc)
            if mismatch is None:
                raise
            raise mismatch from exc
        retry_busy(lambda: con.execute(f"USE {ALIAS}"))
        # Only the lake's data files: the metadata database is read by SQLite (or PostgreSQL), not
        # through DuckDB's file system, so the folder beside it (silences, keys) stays shut.
        allowed = [location.data_path]
        # DuckDB takes the allowed directories only once the database runs, and only
        # before external access is switched off; locking keeps both as they are.
        con.execute("SET allowed_directories = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def check(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql`` if every one only reads; else ``SandboxError``."""
    statements = _statements(con, sql)
    if not statements:
        raise SandboxError("no statement given")
    for statement in statements:
        _check_statement(con, statement, 0)
    return statements


def execute(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    """Check every statement of ``sql``, then run them; the last one's result is returned."""
    results = list(execute_each(con, sql))
    return results[-1]


def execute_each(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """Check every statement of ``sql`` before any runs, then run them in order, yielding
    each one's result before the next runs (a result is read before the next replaces it)."""
    statements = retry_busy(lambda: check(con, sql))  # checking binds against the lake
    try:
        for statement in statements:
            yield _run(con, statement)
    except duckdb.PermissionException as exc:
        raise SandboxError(f"refused: {first_line(exc)} (only the store is readable)") from exc


def _run(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement) -> duckdb.DuckDBPyConnection:
    """Run one checked statement; its result is materialized, so a busy moment of the
    SQLite metadata database can only fail it here, and it is run again."""
    return retry_busy(lambda: con.execute(statement))


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    try:
        return list(con.extract_statements(sql))
    except duckdb.ParserException as exc:
        raise SandboxError(first_line(exc)) from exc


def _check_statement(
    con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise SandboxError(f"refused: statements nested more than {MAX_DEPTH} deep")
    kind = statement.type.name
    if kind == EXPLAIN_TYPE:
        inner = _explained(statement.query)
        nested = _statements(con, inner)
        if len(nested) != 1:
            raise SandboxError("refused: EXPLAIN of anything but one query")
        _check_statement(con, nested[0], depth + 1)
        return
    if kind not in QUERY_TYPES:
        raise SandboxError(f"refused: {_describe(kind)} ({ALLOWED_HELP})")
    tree = _serialize(statement.query)
    for name in _table_functions(tree):
        if name not in ALLOWED_TABLE_FUNCTIONS:
            raise SandboxError(f"refused: table function {name}() ({TABLE_FUNCTIONS_HELP})")
    for name, arguments in _functions(tree):
        if name in REFUSED_FUNCTIONS:
            raise SandboxError(f"refused: {name}() runs SQL that cannot be checked")
        if name.startswith(TABLE_FUNCTION_PREFIXES) and name not in ALLOWED_TABLE_FUNCTIONS:
            raise SandboxError(f"refused: table function {name}() ({TABLE_FUNCTIONS_HELP})")
        if name in SQL_TEXT_FUNCTIONS:
            text = _constant_text(arguments)
            if text is None:
                raise SandboxError(f"refused: {name}() with SQL that is not a literal string")
            nested = _statements(con, text)
            if len(nested) != 1:
                raise SandboxError(f"refused: {name}() of anything but one query")
            _check_statement(con, nested[0], depth + 1)


def _explained(sql: str) -> str:
    """The statement after ``EXPLAIN [ANALYZE] [(options)]``, found with DuckDB's tokenizer."""
    tokens = duckdb.tokenize(sql)
    i = 1  # tokens[0] is EXPLAIN
    if i < len(tokens) and _token(sql, tokens, i).upper() == "ANALYZE":
        i += 1
    if i < len(tokens) and _token(sql, tokens, i) == "(":
        depth = 0
        while i < len(tokens):
            text = _token(sql, tokens, i)
            depth += {"(": 1, ")": -1}.get(text, 0)
            i += 1
            if depth == 0:
                break
    if i >= len(tokens):
        raise SandboxError("refused: EXPLAIN without a statement")
    return sql[tokens[i][0] :]


def _token(sql: str, tokens: list[tuple[int, Any]], i: int) -> str:
    end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
    return sql[tokens[i][0] : end].strip()


def _serialize(sql: str) -> Any:
    with _PARSING:
        row = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True, "error_message": "no parse"}
    if tree.get("error"):
        raise SandboxError(f"refused: {tree.get('error_message', 'not a plain query')}")
    return tree


_PARSING = threading.Lock()
_PARSERS: list[duckdb.DuckDBPyConnection] = []


def _parser() -> duckdb.DuckDBPyConnection:
    """A DuckDB of the process with nothing attached, that only parses (``_PARSING`` held).

    On the lake's connection ``json_serialize_sql`` looks its name up in the lake's
    catalog, which reads the metadata database: 4 ms of CPU a statement against 0.5 here
    (measured), more than a small query costs to run.
    """
    if not _PARSERS:
        con = duckdb.connect(config={**extensions.config(), "enable_external_access": False})
        con.execute("SET lock_configuration = true")
        _PARSERS.append(con)
    return _PARSERS[0]


def _table_functions(node: Any) -> Iterator[str]:
    """The name of every table function a serialized statement reads from, at any depth
    (subqueries, CTEs, joins, lateral joins), lower-cased as DuckDB resolves it."""
    if isinstance(node, dict):
        if node.get("type") == "TABLE_FUNCTION":
            function = node.get("function")
            if not isinstance(function, dict) or "function_name" not in function:
                raise SandboxError("refused: a table function that cannot be checked")
            yield str(function["function_name"]).lower()
        for value in node.values():
            yield from _table_functions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _table_functions(value)


def _functions(node: Any) -> Iterator[tuple[str, list[Any]]]:
    """Every function call in a serialized statement: its name and its arguments."""
    if isinstance(node, dict):
        if node.get("class") == "FUNCTION" and "function_name" in node:
            arguments = node.get("children") or node.get("arguments") or []
            yield str(node["function_name"]).lower(), list(arguments)
        for value in node.values():
            yield from _functions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _functions(value)


def _constant_text(arguments: list[Any]) -> str | None:
    if len(arguments) != 1:
        return None
    argument = arguments[0]
    expression = argument.get("expression", argument) if isinstance(argument, dict) else None
    if not isinstance(expression, dict) or expression.get("class") != "CONSTANT":
        return None
    literal = expression.get("literal") or expression.get("value") or {}
    if not isinstance(literal, dict) or literal.get("is_null"):
        return None
    # DuckDB 1.5 serialises a string constant's text as "value"; earlier releases as "text".
    text = literal.get("value", literal.get("text"))
    return text if isinstance(text, str) else None


def _describe(kind: str) -> str:
    names = {
        "COPY": "COPY writes files",
        "EXPORT": "EXPORT DATABASE writes files",
        "ATTACH": "ATTACH opens another database",
        "DETACH": "DETACH changes the session",
        "LOAD": "INSTALL and LOAD add extensions",
        "UPDATE_EXTENSIONS": "UPDATE EXTENSIONS changes extensions",
        "SET": "SET changes settings",
        "VARIABLE_SET": "SET VARIABLE changes the session",
        "PRAGMA": "PRAGMA changes settings",
        "CALL": "CALL runs procedures",
        "CREATE": "CREATE makes objects",
        "CREATE_FUNC": "CREATE MACRO makes objects",
        "MULTI": "PIVOT without an IN list creates types",
    }
    return names.get(kind, f"{kind} statements are not queries")
