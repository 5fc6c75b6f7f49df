"""The sessions view, containment, and the model and prompt version each event is
attributed to: each checked against values computed by hand from a few events.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.view_helpers import (
    T0,
    event,
    land,
    one,
    rows_of,
    session,
)

# --------------------------------------------------------------------------- sessions


def test_sessions_view_shows_contained_escalated_and_open_sessions(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            *session("contained", 0, 30),
            *session("escalated-then-resolved", 0, 40),
            event("escalation", "escalated-then-resolved", 20, target="hr-l1"),
            *session("handed-over", 0, 50, resolution="escalated"),
            *session("still-open", 0, None),
        ],
    )
    got = {
        r["session_id"]: r
        for r in rows_of(con, "SELECT session_id, state, escalated, contained FROM sessions")
    }
    assert got["contained"] == {
        "session_id": "contained",
        "state": "ended",
        "escalated": False,
        "contained": True,
    }
    assert (
        got["escalated-then-resolved"]["escalated"],
        got["escalated-then-resolved"]["contained"],
    ) == (True, False)
    assert got["handed-over"]["contained"] is False
    assert (got["still-open"]["state"], got["still-open"]["contained"]) == ("open", None)


def test_session_totals_and_first_values(tmp_path: Path) -> None:
    sid = "s1"
    con = land(
        tmp_path,
        [
            *session(sid, 0, 90, intent="payslip-dispute"),
            event(
                "llm_call",
                sid,
                5,
                input_tokens=1000,
                output_tokens=50,
                cache_read_tokens=512,
                reasoning_tokens=20,
            ),
            event(
                "llm_call",
                sid,
                10,
                input_tokens=1100,
                output_tokens=60,
                model="gpt-4o",
                prompt_version="v8",
            ),
            event("tool_call", sid, 12, tool_name="workday.get_payslip"),
            event("policy_check", sid, 13, policy_id="pii", outcome="violation"),
            event("policy_check", sid, 14, policy_id="pii", outcome="blocked"),
            event("policy_check", sid, 15, policy_id="pii", outcome="pass"),
            event("security", sid, 16, category="jailbreak"),
            event("error", sid, 17, error_type="ToolTimeout", status="error"),
            event("tool_call", sid, 18, tool_name="kb.search", status="error"),
            event("feedback", sid, 80, score=1.0),
            event("feedback", sid, 81, score=0.0),
        ],
    )
    got = one(
        con,
        "SELECT * EXCLUDE (started_at, ended_at, first_event_at, last_event_at) FROM sessions",
    )
    assert got == {
        "session_id": sid,
        "agent_id": "hr-assistant",
        "agent_version": "2.3.0",
        "environment": "prod",
        "intent": "payslip-dispute",  # session_end's final intent wins
        "channel": "chat",
        "duration_s": 90.0,
        "state": "ended",
        "resolution": "resolved",
        "llm_calls": 2,
        "tool_calls": 2,
        "input_tokens": 2100,
        "output_tokens": 110,
        "cache_read_tokens": 512,
        "reasoning_tokens": 20,
        "cost_usd": pytest.approx(0.002),
        "unpriced_llm_calls": 0,
        "policy_checks": 3,
        "policy_violations": 1,
        "policy_blocks": 1,
        "security_events": 1,
        "errors": 2,
        "escalated": False,
        "contained": True,
        "feedback_score": 0.5,
        "model": "gpt-4o-mini",
        "prompt_version": "v7",
    }


def test_a_session_without_session_start_starts_at_its_first_event(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [event("llm_call", "s1", 12), event("session_end", "s1", 42, resolution="failed")],
    )
    got = one(con, "SELECT started_at, ended_at, duration_s, contained FROM sessions")
    assert got == {
        "started_at": T0 + dt.timedelta(seconds=12),
        "ended_at": T0 + dt.timedelta(seconds=42),
        "duration_s": 30.0,
        "contained": False,
    }


def test_containment_rate_is_contained_over_ended_sessions(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            *session("contained", 0, 30),
            *session("escalated-then-resolved", 0, 40),
            event("escalation", "escalated-then-resolved", 20),
            *session("abandoned", 0, 50, resolution="abandoned"),
            *session("open", 0, None),
        ],
    )
    got = one(
        con,
        "SELECT sessions_started, sessions_ended, contained_sessions, containment_rate, "
        "escalations, resolved_sessions, abandoned_sessions, escalated_sessions "
        "FROM metrics_1m",
    )
    assert got == {
        "sessions_started": 4,
        "sessions_ended": 3,  # the open session is in neither numerator nor denominator
        "contained_sessions": 1,
        "containment_rate": pytest.approx(1 / 3),
        "escalations": 1,
        "resolved_sessions": 2,
        "abandoned_sessions": 1,
        "escalated_sessions": 0,
    }


def test_containment_rate_is_null_when_no_session_ended(tmp_path: Path) -> None:
    con = land(tmp_path, session("open", 0, None))
    got = one(con, "SELECT sessions_ended, containment_rate FROM metrics_1m")
    assert got == {"sessions_ended": 0, "containment_rate": None}


def test_events_take_the_model_and_prompt_of_their_sessions_first_llm_call(
    tmp_path: Path,
) -> None:
    sid = "s1"
    con = land(
        tmp_path,
        [
            *session(sid, 0, 40),
            # Arrives after the v8 call (higher offset) but happened first: it is the first.
            event("llm_call", sid, 10, model="gpt-4o", prompt_version="v8", cost_usd_effective=0.5),
            event("llm_call", sid, 5, model="gpt-4o-mini", prompt_version="v7"),
            event("tool_call", sid, 15, tool_name="kb.search"),
        ],
    )
    got = rows_of(
        con,
        "SELECT model, prompt_version, events, llm_calls, sessions_started, sessions_ended, "
        "contained_sessions, cost_usd FROM metrics_1m ORDER BY model",
    )
    assert got == [
        {
            "model": "gpt-4o",
            "prompt_version": "v8",
            "events": 1,
            "llm_calls": 1,
            "sessions_started": 0,
            "sessions_ended": 0,
            "contained_sessions": 0,
            "cost_usd": 0.5,
        },
        {
            "model": "gpt-4o-mini",
            "prompt_version": "v7",
            "events": 4,  # its own llm_call, the tool call, session_start and session_end
            "llm_calls": 1,
            "sessions_started": 1,
            "sessions_ended": 1,
            "contained_sessions": 1,
            "cost_usd": 0.001,
        },
    ]


def test_a_session_without_llm_calls_has_no_model(tmp_path: Path) -> None:
    con = land(tmp_path, session("s1", 0, 10))
    assert one(con, "SELECT model, prompt_version, events FROM metrics_1m") == {
        "model": None,
        "prompt_version": None,
        "events": 2,
    }
