"""Errors, violations, blocks and containment: one definition, the same counts everywhere."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from agentwatch.frames import register
from agentwatch.processors.metrics import series
from agentwatch.processors.query.report import SECTIONS
from agentwatch.processors.store.definitions import (
    DEFINITIONS,
    ERROR,
    FAILED_CHECK,
    IS_BLOCKED,
    IS_BLOCKED_ACTION,
    IS_CONTAINED,
    IS_ERROR,
    IS_FAILED_CHECK,
    IS_SECURITY_BLOCK,
    IS_VIOLATION,
    Definition,
)
from tests.view_helpers import event, land, one, rows_of, session

COLUMNS: dict[str, pl.DataType] = {
    "kind": pl.String(),
    "status": pl.String(),
    "outcome": pl.String(),
    "action": pl.String(),
    "resolution": pl.String(),
    "escalated": pl.Boolean(),
}
# Every combination of these values, NULL included, is a row each form must agree on.
VALUES: dict[str, tuple[Any, ...]] = {
    "kind": ("llm_call", "error", "policy_check", "security", "session_end"),
    "status": (None, "ok", "error"),
    "outcome": (None, "pass", "violation", "blocked"),
    "action": (None, "flagged", "blocked"),
    "resolution": (None, "resolved", "escalated"),
    "escalated": (None, True, False),
}

# (definition, the row's columns (others NULL), whether the row is one)
CASES: list[tuple[Definition, dict[str, Any], bool]] = [
    (IS_ERROR, {"kind": "llm_call", "status": "error"}, True),
    (IS_ERROR, {"kind": "error"}, True),
    (IS_ERROR, {"kind": "tool_call", "status": "ok"}, False),
    (IS_ERROR, {"kind": "tool_call"}, False),
    (IS_VIOLATION, {"kind": "policy_check", "outcome": "violation"}, True),
    (IS_VIOLATION, {"kind": "policy_check", "outcome": "blocked"}, False),
    (IS_BLOCKED, {"kind": "policy_check", "outcome": "blocked"}, True),
    (IS_BLOCKED, {"kind": "security", "action": "blocked"}, False),
    (IS_FAILED_CHECK, {"kind": "policy_check", "outcome": "violation"}, True),
    (IS_FAILED_CHECK, {"kind": "policy_check", "outcome": "blocked"}, True),
    (IS_FAILED_CHECK, {"kind": "policy_check", "outcome": "pass"}, False),
    (IS_SECURITY_BLOCK, {"kind": "security", "action": "blocked"}, True),
    (IS_SECURITY_BLOCK, {"kind": "security", "action": "flagged"}, False),
    (IS_SECURITY_BLOCK, {"kind": "security"}, False),
    (IS_BLOCKED_ACTION, {"kind": "policy_check", "outcome": "blocked"}, True),
    (IS_BLOCKED_ACTION, {"kind": "security", "action": "blocked"}, True),
    (IS_BLOCKED_ACTION, {"kind": "policy_check", "outcome": "violation"}, False),
    (IS_BLOCKED_ACTION, {"kind": "security", "action": "flagged"}, False),
    (IS_CONTAINED, {"resolution": "resolved", "escalated": False}, True),
    (IS_CONTAINED, {"resolution": "resolved", "escalated": True}, False),
    (IS_CONTAINED, {"resolution": "abandoned", "escalated": False}, False),
    (IS_CONTAINED, {"resolution": None, "escalated": False}, False),
    (IS_CONTAINED, {"resolution": "resolved", "escalated": None}, False),
]

# The series whose labels carry a definition's column, for its PromQL matcher.
MATCHED = {
    IS_VIOLATION: series.POLICY_CHECKS,
    IS_BLOCKED: series.POLICY_CHECKS,
    IS_FAILED_CHECK: series.POLICY_CHECKS,
}
_MATCHER = re.compile(r'(\w+)(=~|=)"([^"]*)"')


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        [{c: row.get(c) for c in COLUMNS} for row in rows], schema=COLUMNS, orient="row"
    )


def by_sql(definition: Definition, rows: pl.DataFrame) -> list[bool]:
    """The SQL predicate over the rows in DuckDB, an unknown (NULL) answer as false."""
    con = duckdb.connect()
    register(con, "rows", rows)
    sql = f"SELECT coalesce(({definition.sql}), false) FROM rows"
    return [bool(r[0]) for r in con.execute(sql).fetchall()]


def by_polars(definition: Definition, rows: pl.DataFrame) -> list[bool]:
    return rows.select(definition.polars()).to_series().to_list()


def by_promql(matcher: str, rows: pl.DataFrame) -> list[bool]:
    """The label matcher over the rows as exported label sets (a NULL column is "")."""
    found = _MATCHER.fullmatch(matcher)
    assert found, matcher
    label, op, value = found.groups()
    exported = ["" if v is None else str(v) for v in rows[label].to_list()]
    if op == "=":
        return [v == value for v in exported]
    return [re.fullmatch(value, v) is not None for v in exported]


@pytest.mark.parametrize(("definition", "row", "expected"), CASES)
def test_each_form_of_a_definition_decides_a_row_alike(
    definition: Definition, row: dict[str, Any], expected: bool
) -> None:
    rows = frame(row)
    assert by_sql(definition, rows) == [expected]
    assert by_polars(definition, rows) == [expected]
    assert definition.holds(rows.to_dicts()[0]) == expected
    if definition in MATCHED:
        assert by_promql(definition.matcher(MATCHED[definition].labels), rows) == [expected]


@pytest.mark.parametrize("definition", DEFINITIONS, ids=[d.name for d in DEFINITIONS])
def test_sql_and_polars_select_the_same_rows_of_every_combination(definition: Definition) -> None:
    rows = frame(*(dict(zip(VALUES, v, strict=True)) for v in itertools.product(*VALUES.values())))
    selected = by_sql(definition, rows)
    assert any(selected) and not all(selected)
    assert by_polars(definition, rows) == selected
    assert [definition.holds(row) for row in rows.to_dicts()] == selected


@pytest.mark.parametrize("definition", list(MATCHED), ids=[d.name for d in MATCHED])
def test_a_label_matcher_selects_the_rows_the_sql_selects(definition: Definition) -> None:
    rows = frame(*({"kind": "policy_check", "outcome": o} for o in VALUES["outcome"]))
    matcher = definition.matcher(MATCHED[definition].labels)
    assert by_promql(matcher, rows) == by_sql(definition, rows)


@pytest.mark.parametrize(
    ("definition", "labels"),
    [
        (IS_ERROR, series.EVENTS.labels),
        (IS_BLOCKED_ACTION, series.POLICY_CHECKS.labels),
        (IS_CONTAINED, series.SESSIONS_ENDED.labels),
        (IS_VIOLATION, series.EVENTS.labels),
    ],
)
def test_a_definition_no_single_label_carries_has_no_matcher(
    definition: Definition, labels: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=definition.name):
        definition.matcher(labels)


def test_a_blocked_action_is_a_policy_block_or_a_security_block() -> None:
    assert IS_BLOCKED_ACTION.alternatives == IS_BLOCKED.alternatives + (
        IS_SECURITY_BLOCK.alternatives
    )


def test_the_demo_report_counts_errors_as_the_views_do(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            *session("s1", 0, 30),
            event("llm_call", "s1", 1, status="error", error_type="timeout"),
            event("error", "s1", 2, error_type="crash"),
            event("tool_call", "s1", 3, tool_name="lookup"),
        ],
    )
    per_agent = next(s for s in SECTIONS if "Per agent" in s.title)
    (report,) = rows_of(con, per_agent.sql)
    view = one(con, "SELECT sum(errors) AS errors FROM sessions")
    assert report["errors"] == view["errors"] == 2


def test_the_demo_report_counts_containment_and_policy_blocks_as_the_views_do(
    tmp_path: Path,
) -> None:
    con = land(
        tmp_path,
        [
            *session("s1", 0, 30),
            *session("s2", 0, 30),
            event("escalation", "s2", 5),
            event("policy_check", "s1", 1, policy_id="pii", outcome="blocked"),
            event("security", "s1", 2, category="injection", action="blocked"),
        ],
    )
    per_agent = next(s for s in SECTIONS if "Per agent" in s.title)
    (report,) = rows_of(con, per_agent.sql)
    view = one(
        con,
        "SELECT 100 * avg(contained::INT) AS pct, sum(policy_blocks) AS blocks FROM sessions",
    )
    assert report["contained %"] == view["pct"] == 50.0
    assert report["blocked"] == view["blocks"] == 1


def test_a_failed_check_is_a_violation_or_a_block(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            *session("s1", 0, 30),
            *(event("policy_check", "s1", i, policy_id="pii", outcome=o)
              for i, o in enumerate(("pass", "violation", "blocked"), start=1)),
        ],
    )  # fmt: skip
    found = one(con, f"SELECT count(*) FILTER (WHERE {FAILED_CHECK}) AS failed FROM events")
    view = one(con, "SELECT policy_violations + policy_blocks AS failed FROM sessions")
    assert found["failed"] == view["failed"] == 2
    assert one(con, f"SELECT count(*) FILTER (WHERE {ERROR}) AS n FROM events")["n"] == 0
