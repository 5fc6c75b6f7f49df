"""Errors, violations, blocks and containment: one definition, the same counts everywhere."""

from __future__ import annotations

from pathlib import Path

from agentwatch.processors.query.report import SECTIONS
from agentwatch.processors.store.definitions import ERROR, FAILED_CHECK
from tests.view_helpers import event, land, one, rows_of, session


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
