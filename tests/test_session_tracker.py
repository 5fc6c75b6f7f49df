"""Session ends carry their duration and containment, across batches and restarts."""

from __future__ import annotations

import gc
import tracemalloc

import polars as pl

from agentwatch.processors.landing.sessions import SessionTracker
from tests.frames import at, events


def test_a_resolved_session_without_escalation_is_contained() -> None:
    tracker = SessionTracker()
    out = tracker.update(
        events(
            {"kind": "session_start", "ts": at(0)},
            {"kind": "llm_call", "ts": at(3)},
            {"kind": "session_end", "resolution": "resolved", "ts": at(42)},
        )
    )
    assert out.to_dicts() == [
        {"agent_id": "hr-assistant", "agent_version": "1.0.0", "environment": "prod",
         "resolution": "resolved", "duration_s": 42.0, "contained": True}
    ]  # fmt: skip


def test_a_resolved_session_with_an_escalation_is_not_contained() -> None:
    out = SessionTracker().update(
        events(
            {"kind": "session_start", "ts": at(0)},
            {"kind": "escalation", "ts": at(5)},
            {"kind": "session_end", "resolution": "resolved", "ts": at(9)},
        )
    )
    assert out["contained"].to_list() == [False]


def test_a_session_spanning_batches_keeps_its_start() -> None:
    tracker = SessionTracker()
    tracker.update(events({"kind": "session_start", "ts": at(0), "session_id": "a"}))
    out = tracker.update(
        events({"kind": "session_end", "resolution": "abandoned", "ts": at(90), "session_id": "a"})
    )
    assert out["duration_s"].to_list() == [90.0]
    assert tracker.open == {}


def test_an_end_without_a_known_start_has_no_duration() -> None:
    out = SessionTracker().update(events({"kind": "session_end", "resolution": "failed"}))
    assert out["duration_s"].to_list() == [None]


def test_a_rebuilt_tracker_remembers_open_sessions_and_escalations() -> None:
    stored = events(
        {"kind": "session_start", "ts": at(0), "session_id": "open"},
        {"kind": "escalation", "ts": at(1), "session_id": "open"},
        {"kind": "session_start", "ts": at(0), "session_id": "done"},
        {"kind": "session_end", "resolution": "resolved", "ts": at(2), "session_id": "done"},
    )
    tracker = SessionTracker()
    tracker.rebuild(stored, at(2))
    assert set(tracker.open) == {"open"}
    out = tracker.update(
        events(
            {"kind": "session_end", "resolution": "resolved", "ts": at(60), "session_id": "open"}
        )
    )
    assert out.select("duration_s", "contained").row(0) == (60.0, False)


def test_sessions_older_than_the_age_limit_are_forgotten() -> None:
    tracker = SessionTracker(max_age_s=3600)
    tracker.update(events({"kind": "session_start", "ts": at(0), "session_id": "old"}))
    tracker.update(events({"kind": "session_start", "ts": at(7200), "session_id": "new"}))
    assert set(tracker.open) == {"new"}


def test_the_open_session_count_is_bounded() -> None:
    tracker = SessionTracker(max_sessions=2)
    tracker.update(events(*({"kind": "session_start", "session_id": f"s{i}"} for i in range(5))))
    assert list(tracker.open) == ["s3", "s4"]


def test_the_first_models_of_a_session_are_kept_until_it_ends() -> None:
    tracker = SessionTracker()
    tracker.update(
        events(
            {"kind": "session_start", "ts": at(0), "session_id": "a"},
            {"kind": "llm_call", "ts": at(1), "session_id": "a", "model": "gpt-4o",
             "prompt_version": "v1"},
        )
    )  # fmt: skip
    tracker.update(
        events({"kind": "llm_call", "ts": at(2), "session_id": "a", "model": "claude-3-5-sonnet"})
    )
    context = tracker.context(events({"kind": "tool_call", "ts": at(3), "session_id": "a"}))
    assert context.select("session_model", "session_prompt_version").row(0) == ("gpt-4o", "v1")


def test_an_open_session_costs_a_few_hundred_bytes() -> None:
    """A fleet has hundreds of thousands of sessions open at once."""
    n = 20_000
    starts = events(*({"kind": "session_start", "ts": at(i / 100), "session_id": f"session-{i:08}"}
                      for i in range(n)))  # fmt: skip
    calls = starts.with_columns(kind=pl.lit("llm_call"), model=pl.lit("gpt-4o"))
    tracker = SessionTracker()
    gc.collect()
    tracemalloc.start()
    try:
        tracker.update(starts)
        tracker.update(calls)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tracker.open) == n
    assert held / n < 300
