"""The analysts' SQL sandbox and table functions, and the directories it can read.

DuckLake's maintenance functions act on the lake's files even over a read-only attach,
so the sandbox runs only the table functions it lists, however a query spells or nests
them; and DuckDB's temporary directory (``.tmp`` under the working directory) must not
become readable.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from agentwatch.processors.query.sandbox import ALLOWED_TABLE_FUNCTIONS, SandboxError, connect
from agentwatch.processors.query.sql import query
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.test_sql_sandbox import events, files_in, run_sql

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
CLEANUP = "ducklake_cleanup_old_files('lake', cleanup_all => true)"


def _lake_with_maintenance_due(data: Path) -> Path:
    """A lake with maintenance due: data files of an expired snapshot scheduled for
    deletion, and small adjacent files that a merge would rewrite into one."""
    store = LakeStore(data / METADATA_FILE)
    store.prepare()
    alias = store.alias
    for first in (0, 3):
        store.insert("events", events(first, 3))
        store.con.execute(f"CALL ducklake_flush_inlined_data('{alias}')")
    store.con.execute(f"CALL ducklake_merge_adjacent_files('{alias}')")
    store.con.execute(f"CALL ducklake_expire_snapshots('{alias}', older_than => now())")
    store.insert("events", events(6, 3))
    store.con.execute(f"CALL ducklake_flush_inlined_data('{alias}')")
    path = Path(store.db)
    store.close()
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One lake for the tests that must leave it as it was (each checks that it did)."""
    return _lake_with_maintenance_due(tmp_path_factory.mktemp("lake") / "data")


def _parquet_files(db: Path) -> list[Path]:
    return [p for p in files_in(db.parent) if p.suffix == ".parquet"]


def test_the_read_only_connection_alone_lets_ducklake_maintenance_delete_the_lakes_files(
    tmp_path: Path,
) -> None:
    """Why the statement check must know table functions: unchecked, one query deletes
    the files, then fails to record it in the read-only catalog."""
    db = _lake_with_maintenance_due(tmp_path / "data")
    before = _parquet_files(db)
    con = connect(db)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute(f"SELECT * FROM {CLEANUP}").fetchall()
    finally:
        con.close()
    assert len(_parquet_files(db)) < len(before)


WRITERS = [
    CLEANUP,
    "ducklake_merge_adjacent_files('lake')",
    "ducklake_rewrite_data_files('lake', delete_threshold => 0)",
    "ducklake_expire_snapshots('lake', older_than => now())",
    "ducklake_delete_orphaned_files('lake', cleanup_all => true)",
    "ducklake_flush_inlined_data('lake')",
    "ducklake_add_data_files('lake', 'events', 'x.parquet')",
    "ducklake_set_option('lake', 'data_inlining_row_limit', 0)",
    "ducklake_set_commit_message('lake', 'me', 'hello')",
    "sqlite_query('{db}', 'DELETE FROM ducklake_snapshot')",
    "sqlite_attach('{db}')",
    "query_table('events')",
    "checkpoint()",
    "enable_logging()",
    "read_text('{db}')",
]


@pytest.mark.parametrize("call", WRITERS, ids=lambda c: c.split("(")[0])
def test_a_table_function_not_listed_is_refused_with_one_line_naming_it(
    db: Path, call: str
) -> None:
    name = call.split("(")[0]
    before = files_in(db.parent)
    with pytest.raises(SandboxError) as refused:
        query(db, f"SELECT * FROM {call.replace('{db}', str(db))}")
    message = str(refused.value)
    assert "\n" not in message
    assert f"table function {name}()" in message
    assert files_in(db.parent) == before


SPELLINGS = {
    "upper case": f"SELECT * FROM {CLEANUP.upper().replace('LAKE', 'lake')}",
    "quoted": "SELECT * FROM \"DUCKLAKE_CLEANUP_OLD_FILES\"('lake', cleanup_all => true)",
    "schema-qualified": f"SELECT * FROM main.{CLEANUP}",
    "catalog-qualified": f"SELECT * FROM system.main.{CLEANUP}",
    "in a subquery": f"SELECT * FROM events WHERE event_id IN (SELECT path FROM {CLEANUP})",
    "in a scalar subquery": f"SELECT (SELECT count(*) FROM {CLEANUP}) AS n",
    "in a CTE": f"WITH c AS (SELECT * FROM {CLEANUP}) SELECT count(*) FROM c",
    "in a nested CTE": f"WITH a AS (WITH b AS (FROM {CLEANUP}) FROM b) FROM a",
    "in a lateral join": f"SELECT * FROM events e, LATERAL (SELECT * FROM {CLEANUP}) x",
    "in a join": f"SELECT * FROM events JOIN {CLEANUP} ON true",
    "in a union": f"SELECT 'x' AS path UNION ALL SELECT path FROM {CLEANUP}",
    "FROM-first": f"FROM {CLEANUP}",
    "as a scalar call": "SELECT ducklake_cleanup_old_files('lake')",
    "in DESCRIBE": f"DESCRIBE SELECT * FROM {CLEANUP}",
    "in SUMMARIZE": f"SUMMARIZE SELECT * FROM {CLEANUP}",
    "in EXPLAIN ANALYZE": f"EXPLAIN ANALYZE SELECT * FROM {CLEANUP}",
    "in query()": "SELECT * FROM query('SELECT * FROM ducklake_cleanup_old_files(''lake'')')",
    "after an allowed query": f"SELECT 1; SELECT * FROM {CLEANUP}",
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_a_refused_table_function_is_found_however_it_is_spelled_or_nested(
    db: Path, spelling: str
) -> None:
    before = files_in(db.parent)
    with pytest.raises(SandboxError, match=r"table function ducklake_cleanup_old_files\(\)"):
        query(db, SPELLINGS[spelling])
    assert files_in(db.parent) == before


def test_call_of_a_ducklake_maintenance_function_is_refused(db: Path) -> None:
    before = files_in(db.parent)
    with pytest.raises(SandboxError, match="CALL"):
        query(db, f"CALL {CLEANUP}")
    assert files_in(db.parent) == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM ducklake_snapshots(current_database())",
        "SELECT snapshot_id, change_type, count(*) FROM "
        "ducklake_table_changes(current_database(), 'main', 'events', {last}, {last}) GROUP BY ALL",
        "SELECT * FROM ducklake_table_info(current_database())",
        "SELECT count(*) FROM ducklake_list_files(current_database(), 'events')",
        "SELECT * FROM ducklake_current_snapshot(current_database())",
        "SELECT * FROM range(3) r, unnest([1, 2]) u",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT * FROM duckdb_tables()",
        "SELECT * FROM duckdb_columns() WHERE table_name = 'events'",
        "SELECT * FROM pragma_table_info('events')",
        "SELECT * FROM histogram(events, agent_id)",
        "SELECT * FROM json_each('{\"a\": 1}')",
    ],
)
def test_an_allowed_table_function_runs(db: Path, sql: str) -> None:
    last = query(db, "SELECT max(snapshot_id) FROM ducklake_snapshots(current_database())")
    columns, _rows = query(db, sql.replace("{last}", str(last[1][0][0])))
    assert columns


def test_every_allowed_ducklake_function_only_reads(db: Path) -> None:
    """The listed DuckLake functions are its readers: none of its writers' names."""
    ducklake = {n for n in ALLOWED_TABLE_FUNCTIONS if n.startswith("ducklake_")}
    writers = {c.split("(")[0] for c in WRITERS if c.startswith("ducklake_")}
    assert ducklake and not ducklake & writers


def test_the_sql_command_refuses_a_table_function_with_exit_code_1_naming_it(
    db: Path, tmp_path: Path
) -> None:
    before = files_in(db.parent)
    done = run_sql(db, "SELECT * FROM ducklake_merge_adjacent_files('lake')", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith(
        "agentwatch sql: refused: table function ducklake_merge_adjacent_files()"
    )
    assert files_in(db.parent) == before


def _setting(con: duckdb.DuckDBPyConnection, name: str) -> str:
    row = con.execute("SELECT value FROM duckdb_settings() WHERE name = ?", [name]).fetchone()
    assert row is not None
    return str(row[0])


def test_only_the_lakes_data_path_is_an_allowed_directory(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    con = connect(db)
    try:
        allowed = _setting(con, "allowed_directories")
        temp = _setting(con, "temp_directory")
    finally:
        con.close()
    assert allowed == f"[{db.parent / 'lake'}/]"
    assert temp == ""


def test_a_file_in_the_working_directorys_tmp_folder_is_not_readable(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)
    (cwd / ".tmp" / "note.txt").write_text("not for analysts\n")
    monkeypatch.chdir(cwd)
    con = connect(db)  # the connection itself, without the statement check
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT content FROM read_text('.tmp/note.txt')").fetchall()
    finally:
        con.close()


def test_the_sql_command_cannot_read_the_working_directorys_tmp_folder(
    db: Path, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)
    (cwd / ".tmp" / "note.csv").write_text("secret\nnot for analysts\n")
    done = run_sql(db, "SELECT * FROM '.tmp/note.csv'", cwd)
    assert done.returncode == 1
    assert "not for analysts" not in done.stdout + done.stderr
    assert not any(p.name != "note.csv" for p in (cwd / ".tmp").iterdir())
