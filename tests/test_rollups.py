"""Minute rollups: mergeable histograms within their error bound, partial rows that add up,
windows cut exactly, and the session context a batch lands with."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from agentwatch.alerts.rules.metrics import Window, metrics
from agentwatch.frames import register
from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.histograms import (
    RELATIVE_ERROR,
    bin_expr,
    bin_sql,
    histogram_agg_sql,
    histograms_by_group,
    quantiles_sql,
)
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.rollups import (
    KEYS,
    cost_corrections,
    merge_rows,
    minute_rollups,
    tiers,
)
from tests.frames import T0, at, events, store_batch

QUANTILES = (0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)
latencies = st.lists(
    st.floats(min_value=1e-3, max_value=1e7, allow_nan=False), min_size=1, max_size=300
)


def merged_quantiles(parts: list[list[float]]) -> list[float]:
    """Quantiles of the histograms of ``parts``, merged in SQL as the views merge them."""
    frames = [
        histograms_by_group(
            pl.DataFrame({"_g": [0]}, schema={"_g": pl.UInt32()}),
            pl.DataFrame({"_g": 0, "v": p}, schema={"_g": pl.UInt32(), "v": pl.Float64()}),
            {"h": pl.col("v")},
        )
        for p in parts
    ]
    con = duckdb.connect()
    register(con, "h", pl.concat(frames))
    row = con.execute(quantiles_sql("h", [], "h", QUANTILES)).fetchone()
    assert row is not None
    return [float(v) for v in row[1:]]


@settings(max_examples=150, deadline=None)
@given(values=latencies, cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=5))
def test_a_quantile_of_merged_histograms_is_within_the_relative_error_of_the_exact_one(
    values: list[float], cuts: list[int]
) -> None:
    bounds = sorted({0, len(values), *(c for c in cuts if c < len(values))})
    parts = [values[a:b] for a, b in itertools.pairwise(bounds)]
    estimates = merged_quantiles(parts)
    # numpy's "linear" method is DuckDB's quantile_cont.
    exact = np.quantile(np.array(values), QUANTILES)
    for q, got, want in zip(QUANTILES, estimates, exact, strict=True):
        assert abs(got - want) <= RELATIVE_ERROR * want * (1 + 1e-9), (q, got, want)


@settings(deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=True), min_size=2, max_size=50))
def test_bins_are_in_value_order_and_the_same_in_polars_and_sql(values: list[float]) -> None:
    frame = pl.DataFrame({"v": sorted(values)}, schema={"v": pl.Float64()})
    bins = frame.select(bin_expr(pl.col("v")))["v"].to_list()
    assert bins == sorted(bins)
    con = duckdb.connect()
    register(con, "f", frame)
    in_sql = [r[0] for r in con.execute(f"SELECT {bin_sql('v')} FROM f").fetchall()]
    assert in_sql == bins


def test_zero_has_an_exact_bin_and_null_values_none() -> None:
    con = duckdb.connect()
    got = con.execute(f"SELECT {histogram_agg_sql('v')} FROM (VALUES (0.0), (0.0), (NULL)) t(v)")
    row = got.fetchone()
    assert row is not None and len(row[0]) == 1 and row[0][0]["n"] == 2
    assert merged_quantiles([[0.0, 0.0]]) == [0.0] * len(QUANTILES)


# --------------------------------------------------------------------------- partial rows

SUMMED = ["events", "errors", "violations", "blocked", "input_tokens", "priced_calls", "scored"]


def _mixed(n: int) -> pl.DataFrame:
    kinds = ["llm_call", "tool_call", "policy_check", "error", "feedback"]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        row: dict[str, Any] = {"kind": kind, "ts": at(i * 7.3), "session_id": f"s{i % 4}"}
        if kind == "llm_call":
            row |= {"model": "gpt-4o", "latency_ms": 100.0 + i, "input_tokens": i,
                    "cost_usd_effective": 0.01 if i % 3 else None}  # fmt: skip
        elif kind == "tool_call":
            row |= {"tool_name": "kb.search", "latency_ms": 5.0 + i, "status": "error" * (i % 2)}
        elif kind == "policy_check":
            row |= {"outcome": ["pass", "violation", "blocked"][i % 3]}
        elif kind == "feedback":
            row |= {"score": 0.5}
        rows.append(row)
    return events(*rows)


def _merged(rollups: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The counts per minute and keys, and the bin counts per minute, keys and bin."""
    keys = [k for k in KEYS if not k.startswith("session_")]
    counts = rollups.group_by(keys).agg(pl.col(SUMMED).sum()).sort(keys, nulls_last=True)
    bins = (
        rollups.explode("latency_ms")
        .drop_nulls("latency_ms")
        .unnest("latency_ms")
        .group_by([*keys, "bin"])
        .agg(pl.col("n").sum())
        .sort([*keys, "bin"], nulls_last=True)
    )
    return counts, bins


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(min_value=0, max_value=60))
def test_partial_rows_of_a_minute_from_several_batches_add_up_to_one_batchs(cut: int) -> None:
    frame = _mixed(60)
    whole = minute_rollups(frame, SessionTracker().context(frame))
    a, b = frame[:cut], frame[cut:]
    parts = pl.concat(
        [
            minute_rollups(a, SessionTracker().context(a)),
            minute_rollups(b, SessionTracker().context(b)),
        ]
    )
    # Counts and bins of every minute are the same, however the batch was cut (only the
    # rows' split differs; per-row fields such as events are summed on read).
    (counts, bins), (whole_counts, whole_bins) = _merged(parts), _merged(whole)
    assert counts.equals(whole_counts)
    assert bins.equals(whole_bins)


def _rolled(frame: pl.DataFrame) -> pl.DataFrame:
    return minute_rollups(frame, SessionTracker().context(frame))


def _own_keys(rows: pl.DataFrame) -> pl.DataFrame:
    # What a batch knows of its sessions depends on the batches before it (tested below).
    return rows.with_columns(session_model=None, session_prompt_version=None)


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(min_value=0, max_value=60), every=st.sampled_from(["1m", "1h", "1d"]))
def test_merged_rows_are_the_same_however_the_batches_were_cut(cut: int, every: str) -> None:
    frame = _mixed(60)
    whole = merge_rows(_own_keys(_rolled(frame)), every).sort(KEYS, nulls_last=True)
    parts = pl.concat([_rolled(frame[:cut]), _rolled(frame[cut:])])
    merged = merge_rows(_own_keys(parts), every).sort(KEYS, nulls_last=True)
    assert_frame_equal(merged, whole, check_exact=False)
    assert merged.select(KEYS).is_unique().all()


def test_tiers_put_each_minute_row_into_its_hour_and_day() -> None:
    frame = _mixed(1200)  # 2.4 hours of events
    minutes = _rolled(frame)
    tiered = tiers(minutes)
    assert tiered["minute_rollups"] is minutes
    hours = tiered["hour_rollups"].group_by("window_start").agg(pl.col("events").sum())
    assert hours.sort("window_start").rows() == (
        frame.group_by(pl.col("ts").dt.truncate("1h").alias("window_start"))
        .agg(pl.len().cast(pl.Int64).alias("events"))
        .sort("window_start")
        .rows()
    )
    assert tiered["day_rollups"]["events"].sum() == frame.height


def test_each_tier_is_its_minutes_merged_alone_even_an_hour_that_starts_a_day() -> None:
    midnight = T0.replace(hour=0)
    frame = _mixed(900).with_columns(ts=pl.col("ts") - (T0 - midnight))  # 00:00 to 01:49
    minutes = _rolled(frame)
    tiered = tiers(minutes)
    for table, every in (("hour_rollups", "1h"), ("day_rollups", "1d")):
        alone = merge_rows(minutes, every).sort(KEYS, nulls_last=True)
        assert_frame_equal(tiered[table].sort(KEYS, nulls_last=True), alone)


def test_a_merged_cost_stays_null_where_no_call_was_priced() -> None:
    calls = [{"kind": "llm_call", "ts": at(i), "session_id": "s", "model": "m"} for i in range(3)]
    (cost,) = merge_rows(_rolled(events(*calls)), "1h")["cost_usd"]
    assert cost is None


# --------------------------------------------------------------------------- windows

WINDOWED = ["events", "error_rate", "failed_check_rate", "tool_error_rate", "cost_usd",
            "unpriced_llm_calls", "security_events"]  # fmt: skip
RAW = {
    "events": "count(*)",
    "error_rate": "count(*) FILTER (WHERE status = 'error' OR kind = 'error') / count(*)",
}


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    data = tmp_path_factory.mktemp("rollups")
    store = LakeStore(data / METADATA_FILE)
    frame = _mixed(400)
    store_batch(store, frame[:200])
    store_batch(store, frame[200:])
    return connect_lake(store.db)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.floats(min_value=-100, max_value=3000), span=st.floats(min_value=0.5, max_value=2000)
)
def test_a_window_cut_anywhere_counts_exactly_the_events_inside_it(
    landed: duckdb.DuckDBPyConnection, start: float, span: float
) -> None:
    window = Window(at(start), at(start + span))
    registry = metrics()
    raw = landed.execute(
        f"SELECT agent_id, {RAW['events']}, {RAW['error_rate']} FROM events "
        "WHERE ts >= $start AND ts < $end GROUP BY agent_id",
        {"start": window.start, "end": window.end},
    ).fetchall()
    expected = {agent: (float(n), rate) for agent, n, rate in raw}
    got_events = {s.labels["agent_id"]: s.value for s in registry["events"].measure(landed, window)}
    got_rate = {
        s.labels["agent_id"]: s.value for s in registry["error_rate"].measure(landed, window)
    }
    assert got_events == {a: v[0] for a, v in expected.items()}
    assert got_rate == pytest.approx({a: v[1] for a, v in expected.items()})


def test_a_window_cut_anywhere_gives_every_rolled_up_metric_its_raw_value(
    landed: duckdb.DuckDBPyConnection,
) -> None:
    window = Window(at(61.5), at(1800.25))
    raw = {
        "failed_check_rate": "SELECT agent_id, count(*) FILTER (WHERE outcome IN ('violation', "
        "'blocked')) / count(*) FROM events WHERE kind = 'policy_check' AND {w} GROUP BY 1",
        "cost_usd": "SELECT agent_id, sum(cost_usd_effective) FROM events "
        "WHERE kind = 'llm_call' AND {w} GROUP BY 1",
        "tool_latency_p95_ms": "SELECT agent_id, quantile_cont(latency_ms, 0.95) FROM events "
        "WHERE kind = 'tool_call' AND {w} GROUP BY 1",
    }
    for name, sql in raw.items():
        rows = landed.execute(
            sql.format(w="ts >= $start AND ts < $end"), {"start": window.start, "end": window.end}
        ).fetchall()
        got = {s.labels["agent_id"]: s.value for s in metrics()[name].measure(landed, window)}
        rel = RELATIVE_ERROR if name.endswith("p95_ms") else 1e-9
        assert got == pytest.approx(dict(rows), rel=rel), name


# --------------------------------------------------------------------------- session context


def test_an_event_after_its_sessions_first_llm_call_takes_its_model_across_batches() -> None:
    tracker = SessionTracker()
    first = events(
        {"kind": "session_start", "ts": at(0)},
        {"kind": "llm_call", "ts": at(1), "model": "gpt-4o", "prompt_version": "v3"},
    )
    tracker.context(first)
    tracker.update(first)
    later = events({"kind": "escalation", "ts": at(20)}, {"kind": "tool_call", "ts": at(30)})
    rows = minute_rollups(later, tracker.context(later))
    assert set(rows["session_model"].to_list()) == {"gpt-4o"}
    assert set(rows["session_prompt_version"].to_list()) == {"v3"}


def test_a_session_end_knows_its_start_and_escalation_from_earlier_batches() -> None:
    tracker = SessionTracker()
    for batch in (
        events({"kind": "session_start", "ts": at(0)}),
        events({"kind": "escalation", "ts": at(10)}),
    ):
        tracker.context(batch)
        tracker.update(batch)
    end = events({"kind": "session_end", "ts": at(90), "resolution": "resolved"})
    row = minute_rollups(end, tracker.context(end)).row(0, named=True)
    assert row["contained"] == 0
    assert row["duration_s"] and len(row["duration_s"]) == 1
    con = duckdb.connect()
    register(con, "r", minute_rollups(end, tracker.context(end)))
    duration = con.execute(quantiles_sql("r", [], "duration_s", [0.5])).fetchone()
    assert duration is not None and duration[1] == pytest.approx(90.0, rel=RELATIVE_ERROR)


# --------------------------------------------------------------------------- repricing


def test_cost_corrections_bring_the_rollups_to_the_repriced_costs_once() -> None:
    frame = _mixed(50)
    calls = frame.filter(pl.col("kind") == "llm_call").height
    stored = minute_rollups(frame, SessionTracker().context(frame))
    repriced = frame.with_columns(
        cost_usd_effective=pl.when(pl.col("kind") == "llm_call").then(pl.lit(0.02))
    )
    fixed = pl.concat([stored, cost_corrections(frame, repriced)])
    assert fixed["cost_usd"].sum() == pytest.approx(0.02 * calls)
    assert fixed["priced_calls"].sum() == calls
    assert fixed["events"].sum() == frame.height
    assert cost_corrections(repriced, repriced).is_empty()


def test_a_rollup_minute_is_the_events_minute_in_utc() -> None:
    frame = events({"kind": "tool_call", "ts": T0 + dt.timedelta(seconds=59.999)})
    assert minute_rollups(frame, SessionTracker().context(frame))["window_start"].to_list() == [T0]
