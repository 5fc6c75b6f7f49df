"""The metrics views and their breakdowns: percentiles, costs, late rows, errors,
policies, security events and feedback, checked against values computed by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.histograms import RELATIVE_ERROR
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.tables import EVENTS_SCHEMA
from tests.view_helpers import (
    T0,
    event,
    land,
    minute,
    one,
    rows_of,
    session,
    write_batch,
)

# --------------------------------------------------------------------------- metrics


def test_latency_percentiles_are_within_the_histogram_error_of_exact(tmp_path: Path) -> None:
    llm = [100.0, 200.0, 300.0, 400.0, 1000.0]
    tools = [10.0, 20.0, 30.0, 40.0]
    con = land(
        tmp_path,
        [
            *(
                event("llm_call", "s1", i, latency_ms=v, time_to_first_token_ms=v / 10)
                for i, v in enumerate(llm)
            ),
            *(
                event("tool_call", "s1", 10 + i, latency_ms=v, tool_name="kb.search")
                for i, v in enumerate(tools)
            ),
            event("policy_check", "s1", 20, latency_ms=99_999.0, policy_id="p", outcome="pass"),
        ],
    )
    got = one(con, "SELECT COLUMNS('latency|ttft') FROM metrics_1m")
    # quantile_cont interpolates: position (n - 1) * q between the sorted values; the
    # rollups' histograms give it within their relative error.
    assert got == pytest.approx(
        {
            "llm_latency_p50_ms": 300.0,
            "llm_latency_p95_ms": 400.0 + 0.8 * 600.0,
            "llm_latency_p99_ms": 400.0 + 0.96 * 600.0,
            "tool_latency_p50_ms": 25.0,
            "tool_latency_p95_ms": 30.0 + 0.85 * 10.0,
            "tool_latency_p99_ms": 30.0 + 0.97 * 10.0,
            "ttft_p50_ms": 30.0,
            "ttft_p95_ms": 88.0,
        },
        rel=RELATIVE_ERROR,
    )
    # The breakdowns read the raw events: exact.
    tool = one(con, "SELECT calls, COLUMNS('latency') FROM tool_metrics_1m")
    assert tool == pytest.approx(
        {"calls": 4, "latency_p50_ms": 25.0, "latency_p95_ms": 38.5, "latency_p99_ms": 39.7}
    )


def test_cost_sums_priced_calls_and_counts_unpriced_ones(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            event("llm_call", "s1", 1, cost_usd=0.01, cost_usd_effective=0.01, cost_source="event"),
            event("llm_call", "s1", 2, cost_usd_effective=0.02, cost_source="pricing"),
            event(
                "llm_call",
                "s1",
                3,
                model="acme-7b",
                provider="acme",
                cost_usd_effective=None,
                cost_source="unpriced",
            ),
        ],
    )
    metrics = rows_of(
        con, "SELECT model, llm_calls, cost_usd, unpriced_llm_calls FROM metrics_1m ORDER BY 1"
    )
    assert metrics == [
        {"model": "acme-7b", "llm_calls": 1, "cost_usd": None, "unpriced_llm_calls": 1},
        {
            "model": "gpt-4o-mini",
            "llm_calls": 2,
            "cost_usd": pytest.approx(0.03),
            "unpriced_llm_calls": 0,
        },
    ]
    per_session = one(con, "SELECT cost_usd, unpriced_llm_calls FROM sessions")
    assert per_session == {"cost_usd": pytest.approx(0.03), "unpriced_llm_calls": 1}
    unpriced = one(con, "SELECT * FROM unpriced_models")
    assert unpriced == {
        "model": "acme-7b",
        "provider": "acme",
        "llm_calls": 1,
        "first_seen": T0 + dt.timedelta(seconds=3),
        "last_seen": T0 + dt.timedelta(seconds=3),
    }


def test_cost_is_null_when_every_call_is_unpriced_and_zero_without_calls(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            event("llm_call", "s1", 1, cost_usd_effective=None, cost_source="unpriced"),
            event("tool_call", "s2", 61, tool_name="kb.search"),
        ],
    )
    got = rows_of(con, "SELECT window_start, cost_usd FROM metrics_1m ORDER BY 1")
    assert got == [
        {"window_start": minute(0), "cost_usd": None},
        {"window_start": minute(1), "cost_usd": 0.0},
    ]


def test_late_rows_are_left_out_of_metrics_but_counted_as_late(tmp_path: Path) -> None:
    late = event("tool_call", "s1", 15, tool_name="kb.search", _late=True)
    late["_kafka_ts"] = T0 + dt.timedelta(seconds=195)
    con = land(
        tmp_path,
        [
            event("tool_call", "s1", 10, tool_name="kb.search"),
            late,
            event("error", "s1", 20, error_type="X", status="error", _late=True),
            event("policy_check", "s1", 21, policy_id="p", outcome="pass", _late=True),
            event("security", "s1", 22, category="jailbreak", _late=True),
        ],
    )
    assert one(con, "SELECT events, tool_calls, errors FROM metrics_1m") == {
        "events": 1,
        "tool_calls": 1,
        "errors": 0,
    }
    assert one(con, "SELECT calls FROM tool_metrics_1m") == {"calls": 1}
    for view in ("error_metrics_1m", "policy_metrics_1m", "security_metrics_1m"):
        assert rows_of(con, f"SELECT * FROM {view}") == []
    assert one(con, "SELECT * FROM late_events") == {
        "window_start": minute(0),
        "agent_id": "hr-assistant",
        "late_events": 4,
        "max_delay_s": 180.0,
    }
    # Late rows stay part of their session.
    assert one(con, "SELECT tool_calls, errors FROM sessions") == {"tool_calls": 2, "errors": 1}


def test_rows_without_a_late_flag_count_as_on_time(tmp_path: Path) -> None:
    unflagged = pl.DataFrame([event("tool_call", "s1", 2, _late=None)], schema=EVENTS_SCHEMA)
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    write_batch(store, unflagged, SessionTracker())
    con = connect_lake(Path(store.db))
    assert one(con, "SELECT events FROM metrics_1m") == {"events": 1}
    assert rows_of(con, "SELECT * FROM late_events") == []


def test_session_duration_lands_in_the_bucket_of_its_end(tmp_path: Path) -> None:
    con = land(tmp_path, [*session("a", 30, 105), *session("b", 50, 110), *session("c", 55, 58)])
    got = rows_of(
        con,
        "SELECT window_start, sessions_started, sessions_ended, session_duration_p50_s, "
        "session_duration_p99_s FROM metrics_1m ORDER BY 1",
    )
    exact = pytest.approx
    assert got == [
        {
            "window_start": minute(0),
            "sessions_started": 3,
            "sessions_ended": 1,
            "session_duration_p50_s": exact(3.0, rel=RELATIVE_ERROR),
            "session_duration_p99_s": exact(3.0, rel=RELATIVE_ERROR),
        },
        {
            "window_start": minute(1),
            "sessions_started": 0,
            "sessions_ended": 2,
            "session_duration_p50_s": exact(67.5, rel=RELATIVE_ERROR),  # of 60 s and 75 s
            "session_duration_p99_s": exact(60 + 0.99 * 15, rel=RELATIVE_ERROR),
        },
    ]


def test_out_of_order_rows_give_the_same_views_as_ordered_ones(tmp_path: Path) -> None:
    rows = [
        *session("a", 0, 70),
        event("llm_call", "a", 5, model="gpt-4o", latency_ms=800.0),
        event("tool_call", "a", 20, tool_name="kb.search", latency_ms=30.0),
        event("escalation", "a", 65),
        *session("b", 10, 30),
        event("llm_call", "b", 12, latency_ms=500.0),
    ]
    # Same events, arriving newest first and split over two segments.
    shuffled = [{**r, "_offset": i, "event_id": f"x-{i}"} for i, r in enumerate(reversed(rows))]
    ordered = land(tmp_path / "ordered", rows)
    reversed_ = land(tmp_path / "reversed", shuffled[:3], shuffled[3:])
    for view in ("sessions", "metrics_1m", "metrics_1h", "tool_metrics_1m"):
        query = f"SELECT * FROM {view} ORDER BY ALL"
        assert rows_of(ordered, query) == rows_of(reversed_, query), view
    assert one(reversed_, "SELECT started_at, model FROM sessions WHERE session_id = 'a'") == {
        "started_at": T0,
        "model": "gpt-4o",
    }


def test_errors_count_error_events_and_failed_steps_once_each(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            event("error", "s1", 1, error_type="ToolTimeout", status="error"),
            event("error", "s1", 2, error_type="ToolTimeout"),
            event("llm_call", "s1", 3, status="error", error_type="RateLimitError"),
            event("tool_call", "s1", 4, tool_name="kb.search"),
        ],
    )
    got = one(con, "SELECT events, errors, error_rate FROM metrics_1m")
    assert got == {"events": 4, "errors": 3, "error_rate": 0.75}
    by_type = rows_of(con, "SELECT error_type, kind, errors FROM error_metrics_1m ORDER BY ALL")
    assert by_type == [
        {"error_type": "RateLimitError", "kind": "llm_call", "errors": 1},
        {"error_type": "ToolTimeout", "kind": "error", "errors": 2},
    ]


def test_policy_and_security_breakdowns_count_by_their_keys(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            event("policy_check", "s1", 1, policy_id="pii", outcome="pass", severity="high"),
            event("policy_check", "s1", 2, policy_id="pii", outcome="pass", severity="high"),
            event("policy_check", "s1", 3, policy_id="pii", outcome="blocked", severity="high"),
            event("policy_check", "s1", 4, policy_id="tone", outcome="violation", severity="low"),
            event("security", "s1", 5, category="jailbreak", action="blocked", severity="high"),
            event("security", "s1", 6, category="jailbreak", action="blocked", severity="high"),
        ],
    )
    policies = rows_of(
        con, "SELECT policy_id, severity, outcome, checks FROM policy_metrics_1m ORDER BY ALL"
    )
    assert policies == [
        {"policy_id": "pii", "severity": "high", "outcome": "blocked", "checks": 1},
        {"policy_id": "pii", "severity": "high", "outcome": "pass", "checks": 2},
        {"policy_id": "tone", "severity": "low", "outcome": "violation", "checks": 1},
    ]
    security = one(con, "SELECT category, action, severity, events FROM security_metrics_1m")
    assert security == {
        "category": "jailbreak",
        "action": "blocked",
        "severity": "high",
        "events": 2,
    }
    totals = one(
        con,
        "SELECT policy_checks, policy_violations, policy_blocks, security_events FROM metrics_1m",
    )
    assert totals == {
        "policy_checks": 4,
        "policy_violations": 1,
        "policy_blocks": 1,
        "security_events": 2,
    }


def test_feedback_count_and_mean(tmp_path: Path) -> None:
    con = land(
        tmp_path,
        [
            event("feedback", "s1", 1, score=1.0),
            event("feedback", "s2", 2, score=-1.0),
            event("feedback", "s3", 3, score=0.5),
            event("feedback", "s4", 4, label="thumbs_up"),
        ],
    )
    got = one(con, "SELECT feedback_count, feedback_mean FROM metrics_1m")
    assert got == {"feedback_count": 4, "feedback_mean": pytest.approx(0.5 / 3)}
