"""The metrics views over their rollup tiers equal re-aggregating the raw events, in UTC."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentwatch.processors.store.histograms import RELATIVE_ERROR
from tests.view_helpers import (
    Row,
    event,
    land,
    one,
    rows_of,
    spread_events,
)

# --------------------------------------------------------------------------- rollups


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
    rows = spread_events()
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
