"""Analysts' views: each metric checked against values computed by hand from a few events.

Events are written as real Parquet segments through the store and read through the
catalog read-only, exactly as an analyst would.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest

from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.query.sql import query
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.histograms import RELATIVE_ERROR
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import CATALOG_FILE
from agentwatch.processors.store.rollups import minute_rollups, tiers
from agentwatch.processors.store.tables import EVENTS_SCHEMA
from agentwatch.processors.store.views import view_statements

T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
DOCS_SQL = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
_ids = itertools.count()

Row = dict[str, Any]


def event(kind: str, session_id: str, at_s: float, **fields: Any) -> Row:
    """One stored event row, ``at_s`` seconds after T0; unset columns are NULL."""
    n = next(_ids)
    row: Row = {
        "schema_version": 1,
        "event_id": f"e-{n}",
        "ts": T0 + dt.timedelta(seconds=at_s),
        "kind": kind,
        "agent_id": "hr-assistant",
        "session_id": session_id,
        "agent_version": "2.3.0",
        "environment": "prod",
        "status": "ok",
        "_late": False,
        "_topic": "t",
        "_partition": 0,
        "_offset": n,
        "_kafka_ts": T0 + dt.timedelta(seconds=at_s),
    }
    if kind == "llm_call":
        row.update(
            model="gpt-4o-mini",
            provider="openai",
            prompt_version="v7",
            input_tokens=100,
            output_tokens=10,
            cost_usd_effective=0.001,
            cost_source="pricing",
        )
    row.update(fields)
    return row


def session(session_id: str, start_s: float, end_s: float | None, **end: Any) -> list[Row]:
    """A session_start and (unless ``end_s`` is None) a session_end, resolved by default."""
    rows = [event("session_start", session_id, start_s, channel="chat", intent="payslip")]
    if end_s is not None:
        rows.append(event("session_end", session_id, end_s, **{"resolution": "resolved", **end}))
    return rows


def write_batch(store: LakeStore, frame: pl.DataFrame, sessions: SessionTracker) -> None:
    """Store one batch of events with its minute rollups, as the processor lands it."""
    context = sessions.context(frame)
    sessions.update(frame)
    store.insert_tables({**tiers(minute_rollups(frame, context)), "events": frame})


def land(tmp_path: Path, *segments: Iterable[Row]) -> duckdb.DuckDBPyConnection:
    """Write each group of rows as one batch and open the lake read-only."""
    store = LakeStore(tmp_path / CATALOG_FILE)
    store.prepare()
    sessions = SessionTracker()
    for rows in segments:
        write_batch(store, pl.DataFrame(list(rows), schema=EVENTS_SCHEMA), sessions)
    return connect_lake(Path(store.db))


def rows_of(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = con.execute(sql)
    columns = [d[0] for d in result.description or []]
    return [dict(zip(columns, r, strict=True)) for r in result.fetchall()]


def one(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    found = rows_of(con, sql)
    assert len(found) == 1, found
    return found[0]


def minute(m: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=m)


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


# --------------------------------------------------------------------------- metrics


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
    store = LakeStore(tmp_path / CATALOG_FILE)
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


# --------------------------------------------------------------------------- rollups


def _spread_events() -> list[Row]:
    """Sessions over three hours that cross midnight UTC, with known latencies."""
    start = dt.datetime(2026, 11, 20, 22, 50, tzinfo=dt.UTC)
    offset_s = (start - T0).total_seconds()
    rows: list[Row] = []
    for i in range(40):
        sid = f"s{i}"
        at = offset_s + i * 271.0  # 40 sessions over three hours
        rows += session(sid, at, at + 95 + i, resolution="resolved" if i % 3 else "failed")
        rows.append(
            event(
                "llm_call",
                sid,
                at + 2,
                latency_ms=100.0 + (i * 37) % 900,
                input_tokens=500 + i,
                model="gpt-4o" if i % 2 else "gpt-4o-mini",
                cost_usd_effective=None if i % 7 == 0 else 0.001 * i,
            )
        )
        rows.append(event("tool_call", sid, at + 40, latency_ms=10.0 + i, tool_name="kb.search"))
        if i % 5 == 0:
            rows.append(event("escalation", sid, at + 50))
    return rows


def _reaggregate(rows: Sequence[Row], width: dt.timedelta) -> dict[tuple[Any, ...], Row]:
    """metrics_* computed in Python from the raw rows: the rollup's expected values."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    model_of: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["ts"]):
        if r["kind"] == "llm_call":
            model_of.setdefault(r["session_id"], r["model"])
    escalated = {r["session_id"] for r in rows if r["kind"] == "escalation"}
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        bucket = epoch + (r["ts"] - epoch) // width * width
        groups.setdefault((bucket, r.get("model") or model_of.get(r["session_id"])), []).append(r)
    expected = {}
    for key, group in groups.items():
        llm = [r for r in group if r["kind"] == "llm_call"]
        ends = [r for r in group if r["kind"] == "session_end"]
        contained = [
            r for r in ends if r["resolution"] == "resolved" and r["session_id"] not in escalated
        ]
        costs = [r["cost_usd_effective"] for r in llm if r["cost_usd_effective"] is not None]
        latencies = [r["latency_ms"] for r in llm]
        expected[key] = {
            "events": len(group),
            "llm_calls": len(llm),
            "input_tokens": sum(r["input_tokens"] for r in llm),
            "cost_usd": sum(costs) if costs else (0.0 if not llm else None),
            "unpriced_llm_calls": len(llm) - len(costs),
            "sessions_ended": len(ends),
            "contained_sessions": len(contained),
            "escalations": sum(r["kind"] == "escalation" for r in group),
            "llm_latency_p95_ms": float(np.quantile(latencies, 0.95)) if latencies else None,
        }
    return expected


@pytest.mark.parametrize(
    ("view", "width"),
    [
        ("metrics_1m", dt.timedelta(minutes=1)),
        ("metrics_1h", dt.timedelta(hours=1)),
        ("metrics_1d", dt.timedelta(days=1)),
    ],
)
def test_rollups_equal_reaggregating_the_raw_events(
    tmp_path: Path, view: str, width: dt.timedelta
) -> None:
    rows = _spread_events()
    con = land(tmp_path, rows)
    got = {
        (r.pop("window_start"), r.pop("model")): r
        for r in rows_of(
            con,
            "SELECT window_start, model, events, llm_calls, input_tokens, cost_usd, "
            "unpriced_llm_calls, sessions_ended, contained_sessions, escalations, "
            f"llm_latency_p95_ms FROM {view}",
        )
    }
    expected = _reaggregate(rows, width)
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        p95 = want.pop("llm_latency_p95_ms")
        estimate = got[key].pop("llm_latency_p95_ms")
        assert estimate == (p95 and pytest.approx(p95, rel=RELATIVE_ERROR)), key
        assert got[key] == pytest.approx(want), key
    if view == "metrics_1d":
        assert {k[0] for k in got} == {
            dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 21, tzinfo=dt.UTC),
        }


def test_buckets_are_utc_whatever_the_readers_time_zone(tmp_path: Path) -> None:
    # 23:45 UTC on the 20th is already the 21st in Kolkata (UTC+05:30).
    con = land(tmp_path, [event("tool_call", "s1", 14.75 * 3600, tool_name="kb.search")])
    con.execute("SET TimeZone = 'Asia/Kolkata'")
    day = one(con, "SELECT window_start FROM metrics_1d")["window_start"]
    hour = one(con, "SELECT window_start FROM metrics_1h")["window_start"]
    assert day == dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert hour == dt.datetime(2026, 11, 20, 23, tzinfo=dt.UTC)


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
    db = tmp_path / CATALOG_FILE
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
    rows = _spread_events()
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
    columns, _rows = query(tmp_path / CATALOG_FILE, sql)
    assert columns, sql
