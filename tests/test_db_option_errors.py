"""A ``--db`` that names no lake is refused in one line, and nothing is created or changed.

A typo must not start an empty lake that a listing then reports as empty, and a path to
some other SQLite database must not get the lake's tables added to it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG
from agentwatch.cli import main


def _plain_sqlite(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    return path


def _tables(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        con.close()


LISTINGS = [
    ["agents", "list", "--catalog", str(EXAMPLE_CATALOG)],
    ["releases", "list", "--catalog", str(EXAMPLE_CATALOG)],
    ["agents", "history", "hr-assistant-1", "--catalog", str(EXAMPLE_CATALOG)],
]


@pytest.mark.parametrize("command", LISTINGS, ids=lambda c: " ".join(c[:2]))
def test_a_listing_of_a_mistyped_store_is_refused_and_creates_nothing(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "agentwatch.sqlte"
    assert main([*command, "--db", str(typo)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"agentwatch: {typo} does not exist yet: run `agentwatch process --db {typo}` "
        "(or `make demo`) first"
    )
    assert list(tmp_path.iterdir()) == []


def test_store_attach_of_a_mistyped_store_prints_no_statement_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "agentwatch.sqlte"
    assert main(["store", "attach", "--db", str(typo)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1] == (
        f"agentwatch: {typo} does not exist yet: run `agentwatch process --db {typo}` "
        "(or `make demo`) first"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [["store", "maintain", "--no-pause"], ["store", "attach"], ["sql", "SELECT 1"], LISTINGS[0]],
    ids=["store maintain", "store attach", "sql", "agents list"],
)
def test_a_sqlite_database_that_is_not_a_lake_is_refused_and_left_as_it_was(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _plain_sqlite(tmp_path / "billing.sqlite")
    assert main([*command, "--db", str(other)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"agentwatch: {other} is a SQLite database that holds no lake (its tables: "
        "invoices): give --db the lake's metadata database"
    )
    assert _tables(other) == ["invoices"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["billing.sqlite"]


def test_a_file_that_is_not_sqlite_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    assert main(["sql", "SELECT 1", "--db", str(notes)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"agentwatch: {notes} is not a lake's metadata database (")


def test_a_folder_given_as_the_store_names_the_file_it_may_have_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["store", "maintain", "--no-pause", "--db", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"agentwatch: {tmp_path} is a folder, not a lake's metadata database (did you mean "
        f"{tmp_path / 'agentwatch.sqlite'}?)"
    )
    assert list(tmp_path.iterdir()) == []


def _lake_in_format(tmp_path: Path, version: str) -> Path:
    from agentwatch.processors.store import attach
    from agentwatch.processors.store.lake import LakeStore

    db = tmp_path / "agentwatch.sqlite"
    LakeStore(db).prepare()
    attach.detach_all()  # as a later process would open it
    con = sqlite3.connect(db)
    con.execute("UPDATE ducklake_metadata SET value = ? WHERE key = 'version'", [version])
    con.commit()
    con.close()
    return db


@pytest.mark.parametrize(
    ("version", "advice"),
    [("99.0", "newer than this agentwatch reads"), ("0.1", "older than this agentwatch reads")],
)
@pytest.mark.parametrize("command", [["sql", "SELECT 1"], ["store", "maintain", "--no-pause"]])
def test_a_lake_in_another_format_is_named_with_what_to_do_not_duckdbs_attach_option(
    version: str,
    advice: str,
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = _lake_in_format(tmp_path, version)
    assert main([*command, "--db", str(db)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"agentwatch: {db} is in lake format {version}, {advice} (")
    assert "AUTOMATIC_MIGRATION" not in last
