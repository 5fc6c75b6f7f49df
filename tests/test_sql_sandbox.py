"""The analysts' SQL sandbox: queries over the store run, every way out is refused.

Each escape attempt must be refused with a one-line message, and must leave no trace:
no file written anywhere, nothing read from outside the store, no event added.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from agentwatch.processors.query.sandbox import SandboxError
from agentwatch.processors.query.sql import query
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.tables import EVENTS_SCHEMA

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def events(first: int, n: int) -> pl.DataFrame:
    """``n`` session starts with ids from ``first`` on, a second apart."""
    rows = [
        {
            "schema_version": 1,
            "event_id": f"e-{i}",
            "ts": T0 + dt.timedelta(seconds=i),
            "kind": "session_start",
            "agent_id": "hr-assistant",
            "session_id": f"s-{i}",
            "status": "ok",
            "_late": False,
            "_topic": "t",
            "_partition": 0,
            "_offset": i,
            "_kafka_ts": T0,
        }
        for i in range(first, first + n)
    ]
    return pl.DataFrame(rows, schema=EVENTS_SCHEMA)


def run_sql(db: Path, sql: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``agentwatch sql --db DB SQL`` run as an analyst runs it, from ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "sql", "--db", str(db), sql],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def _store(data: Path) -> Path:
    store = LakeStore(data / METADATA_FILE)
    store.prepare()
    store.insert("events", events(0, 3))
    # Into a Parquet file, as a landed history is once small batches are flushed.
    store.con.execute(f"CALL ducklake_flush_inlined_data('{store.alias}')")
    return Path(store.db)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return _store(tmp_path / "data")


def _forged_segment(db: Path) -> str:
    """A Parquet file among the lake's own data files: readers must not be able to add one."""
    return str(db.parent / "lake" / "main" / "events" / "forged.parquet")


def escape_attempts(db: Path, out: Path) -> list[tuple[str, str]]:
    """(name, sql) of each attempt; ``out`` is a path outside the store, ``db`` the catalog."""
    seg = _forged_segment(db)
    forged = "SELECT * REPLACE ('forged-' || event_id AS event_id) FROM events"
    return [
        ("copy to a file", f"COPY (SELECT 1) TO '{out}'"),
        ("copy a forged segment into the store", f"COPY ({forged}) TO '{seg}' (FORMAT parquet)"),
        ("explain analyze copy", f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'"),
        ("explain analyze copy a forged segment", f"EXPLAIN ANALYZE COPY ({forged}) TO '{seg}'"),
        ("explain with options of copy", f"EXPLAIN (FORMAT json) COPY (SELECT 1) TO '{out}'"),
        ("copy after a query", f"SELECT 1; COPY (SELECT 1) TO '{out}'"),
        ("copy from a file", "COPY events FROM '/etc/hostname'"),
        ("read_text of /etc/passwd", "SELECT * FROM read_text('/etc/passwd')"),
        ("read_blob of /etc/passwd", "SELECT * FROM read_blob('/etc/passwd')"),
        ("read_csv of /etc/passwd", "SELECT * FROM read_csv('/etc/passwd', sep=':')"),
        ("read_json", "SELECT * FROM read_json('/etc/os-release')"),
        ("a file path as a table", "SELECT * FROM '/etc/passwd'"),
        ("glob of /etc", "SELECT * FROM glob('/etc/*')"),
        (
            "path traversal out of the store",
            f"SELECT * FROM read_text('{db.parent}/lake/../../../../etc/passwd')",
        ),
        ("a data dir file beside the lake", f"SELECT * FROM read_text('{db.parent}/*.jsonl')"),
        ("an http URL", "SELECT * FROM 'http://127.0.0.1:9/x.csv'"),
        ("an https parquet", "SELECT * FROM read_parquet('https://127.0.0.1:9/x.parquet')"),
        ("an s3 URL", "SELECT * FROM 's3://bucket/x.parquet'"),
        ("attach a database", f"ATTACH '{out}' AS other"),
        ("attach in memory", "ATTACH ':memory:' AS scratch"),
        ("install an extension", "INSTALL httpfs"),
        ("load an extension", "LOAD httpfs"),
        ("load an extension file", f"LOAD '{out}/evil.duckdb_extension'"),
        ("set a setting", "SET enable_external_access = true"),
        ("reset a setting", "RESET lock_configuration"),
        ("set allowed directories", "SET allowed_directories = ['/']"),
        ("pragma", "PRAGMA enable_profiling"),
        ("call a pragma", "CALL pragma_version()"),
        ("create a table", "CREATE TABLE t AS SELECT 1"),
        ("create a temp view", "CREATE TEMP VIEW v AS SELECT 1"),
        ("create a macro", "CREATE MACRO m(x) AS x"),
        ("create a secret", "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')"),
        ("insert", "INSERT INTO events SELECT * FROM events"),
        ("export database", f"EXPORT DATABASE '{out}'"),
        ("sql text run by query()", f"SELECT * FROM query('COPY (SELECT 1) TO ''{out}''')"),
        (
            "query() of a file read",
            "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
        ),
        ("serialized sql run", "SELECT json_execute_serialized_sql('{}')"),
        ("prepare", f"PREPARE p AS COPY (SELECT 1) TO '{out}'"),
        ("checkpoint", "CHECKPOINT"),
        ("use another schema", "USE memory"),
        ("detach", "DETACH agentwatch"),
        (
            "read_parquet of the lake's own files",
            f"SELECT * FROM read_parquet('{db.parent}/lake/main/events/*.parquet')",
        ),
        ("glob of the lake's own files", f"SELECT * FROM glob('{db.parent}/lake/**')"),
    ]


ATTEMPTS = [name for name, _sql in escape_attempts(Path("/x/agentwatch.sqlite"), Path("/x/o"))]


def test_the_corpus_has_at_least_thirty_escape_attempts() -> None:
    assert len(ATTEMPTS) >= 30


def files_in(folder: Path) -> list[Path]:
    """Every file under ``folder`` except SQLite's own WAL companions of the catalog, which
    any reader of a WAL-mode catalog opens (and the last one to close removes)."""
    return sorted(
        p.relative_to(folder) for p in folder.rglob("*") if not p.name.endswith(("-wal", "-shm"))
    )


@pytest.mark.parametrize("name", ATTEMPTS)
def test_an_escape_attempt_is_refused_with_one_line_and_leaves_no_trace(
    db: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "outside" / "loot.csv"
    out.parent.mkdir()
    sql = dict(escape_attempts(db, out))[name]
    (db.parent / "silences.jsonl").write_text('{"secret": "not for analysts"}\n')
    before = files_in(db.parent)
    # Refused by the statement check (SandboxError) or by the locked connection itself
    # (a file path is then just an unknown table name).
    with pytest.raises((SandboxError, duckdb.Error)) as refused:
        query(db, sql)
    message = str(refused.value)
    assert message
    if isinstance(refused.value, SandboxError):
        assert "\n" not in message
    assert not any(out.parent.iterdir()), f"{name}: wrote {list(out.parent.iterdir())}"
    assert files_in(db.parent) == before
    assert query(db, "SELECT count(*) FROM events")[1] == [(3,)]


def test_a_forged_segment_cannot_add_events(db: Path) -> None:
    seg = _forged_segment(db)
    with pytest.raises(SandboxError, match="COPY"):
        query(db, f"EXPLAIN ANALYZE COPY (SELECT * FROM events) TO '{seg}' (FORMAT parquet)")
    assert not Path(seg).exists()
    assert query(db, "SELECT count(*) FROM events")[1] == [(3,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM events",
        "FROM events SELECT kind",
        "WITH k AS (SELECT kind FROM events) SELECT count(*) FROM k",
        "DESCRIBE events",
        "SHOW TABLES",
        "SUMMARIZE events",
        "EXPLAIN SELECT * FROM sessions",
        "EXPLAIN ANALYZE SELECT count(*) FROM events",
        "SELECT * FROM query('SELECT count(*) FROM events')",
        "SELECT current_setting('enable_external_access') AS external_access",
    ],
)
def test_queries_over_the_store_run(db: Path, sql: str) -> None:
    columns, _rows = query(db, sql)
    assert columns


def test_the_sandbox_cannot_be_loosened(db: Path) -> None:
    assert query(db, "SELECT current_setting('enable_external_access')")[1] == [(False,)]
    assert query(db, "SELECT current_setting('lock_configuration')")[1] == [(True,)]
    assert query(db, "SELECT current_setting('autoload_known_extensions')")[1] == [(False,)]


def test_the_sql_command_refuses_with_exit_code_1_and_one_line(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "loot.csv"
    done = run_sql(db, f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("agentwatch sql: refused: COPY")
    assert not out.exists()


def test_the_sandboxed_connection_itself_loads_no_extension(db: Path, tmp_path: Path) -> None:
    from agentwatch.processors.query.sandbox import connect

    evil = tmp_path / "evil.duckdb_extension"
    evil.write_bytes(b"\0" * 1024)
    con = connect(db)
    try:
        with pytest.raises(duckdb.Error, match=r"(?i)disabled|permission"):
            con.execute(f"LOAD '{evil}'")
    finally:
        con.close()


def test_the_sql_command_prints_one_result_for_each_statement(db: Path, tmp_path: Path) -> None:
    done = run_sql(db, "SELECT 41 + 1 AS answer; SELECT 'second' AS which", tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split("\n\n")
    assert "answer" in first and "42" in first and "(1 row)" in first
    assert "which" in second and "second" in second


def test_no_statement_runs_when_a_later_one_is_refused(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "loot.csv"
    done = run_sql(db, f"SELECT 1 AS fine; COPY (SELECT 1) TO '{out}'", tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("agentwatch sql: refused: COPY")
    assert not out.exists()


def test_json_output_is_one_line_for_each_statement(db: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "sql", "--db", str(db), "--format", "json",
         "SELECT 1 AS a; SELECT 2 AS b"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [[{"a": 1}], [{"b": 2}]]
