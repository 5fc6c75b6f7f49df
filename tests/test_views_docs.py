"""Every view exists in the catalog, readers can time-travel, and every docs/sql.md
example runs through the sql command.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from agentwatch.processors.query.sql import query
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.views import view_statements
from tests.view_helpers import (
    DOCS_SQL,
    T0,
    Row,
    event,
    land,
    spread_events,
)

# --------------------------------------------------------------------------- catalog, docs


def test_every_view_is_created_in_the_catalog(tmp_path: Path) -> None:
    con = land(tmp_path)
    names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    created = set(re.findall(r"CREATE VIEW (\w+)", "\n".join(view_statements())))
    assert created == {
        "sessions",
        "metrics_1m",
        "metrics_1h",
        "metrics_1d",
        "tool_metrics_1m",
        "policy_metrics_1m",
        "security_metrics_1m",
        "error_metrics_1m",
        "late_events",
        "unpriced_models",
    }
    assert created <= names


def test_a_reader_reads_the_lake_as_it_stood_at_an_earlier_snapshot(tmp_path: Path) -> None:
    # docs/sql.md, "Snapshots and time travel": AT (VERSION => n) through `agentwatch sql`.
    land(tmp_path, *([event("tool_call", "s1", i, tool_name="kb.search")] for i in range(3)))
    db = tmp_path / METADATA_FILE
    _, snapshots = query(
        db, "SELECT snapshot_id FROM ducklake_snapshots(current_database()) ORDER BY 1"
    )
    latest = snapshots[-1][0]
    counts = [
        query(db, f"SELECT count(*) FROM events AT (VERSION => {latest - back})")[1][0][0]
        for back in (2, 1, 0)
    ]
    assert counts == [1, 2, 3]
    _, rows = query(db, f"SELECT sum(calls) FROM tool_metrics_1m AT (VERSION => {latest - 1})")
    assert rows == [(2,)]


def sql_examples() -> list[Any]:
    """Each ```sql block of docs/sql.md, named by the bold question before it."""
    text = DOCS_SQL.read_text(encoding="utf-8")
    examples = []
    for block in re.finditer(r"```sql\n(.*?)```", text, flags=re.DOTALL):
        question = re.findall(r"\*\*(.+?)\*\*", text[: block.start()])[-1]
        examples.append(pytest.param(block.group(1).strip(), id=question))
    return examples


def test_docs_have_a_dozen_sql_examples() -> None:
    assert len(sql_examples()) >= 12


def _docs_events() -> list[Row]:
    """The rollup events moved to the last hours, plus one of each thing the examples seek."""
    rows = spread_events()
    shift = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3) - rows[0]["ts"]
    for r in rows:
        r["ts"] += shift
    start = next(r["ts"] for r in rows if r["session_id"] == "s5")  # s5 escalates at +50 s
    at = (start - T0).total_seconds()
    return [
        *rows,
        event("policy_check", "s5", at + 10, policy_id="pii", outcome="blocked", severity="high"),
        event("security", "s5", at + 11, category="jailbreak", action="blocked", severity="high"),
        event("error", "s5", at + 12, error_type="ToolTimeout", status="error"),
        event("tool_call", "s5", at - 600, tool_name="kb.search", _late=True),
        event("llm_call", "s5", at + 13, model="acme-7b", cost_usd_effective=None),
    ]


@pytest.mark.parametrize("sql", sql_examples())
def test_docs_sql_examples_run(tmp_path: Path, sql: str) -> None:
    land(tmp_path, _docs_events()).close()
    # Through the sql command's own read-only path, as a reader of the docs would run it.
    columns, rows = query(tmp_path / METADATA_FILE, sql)
    assert columns, sql
    if re.search(r"\b(hour|day)_rollups\b", sql):  # no pass has run: all is untiered
        assert rows, f"a coarser tier read alone misses the minutes not added yet: {sql}"
