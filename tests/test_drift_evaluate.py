"""The drift evaluator on a small hand-built store: summaries against direct counts, a
latency shift flagged on the right agent and signal, a regressing canary flagged by a
release comparison, a stable agent left alone; output to drift_scores, gauges and CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agentwatch.cli import main
from agentwatch.frames import query
from agentwatch.processors.drift import backfill, config_from_mapping
from agentwatch.processors.drift.evaluate import DriftEvaluator
from agentwatch.processors.drift.metrics import DriftCollector
from agentwatch.processors.drift.signals import MILLISECONDS
from agentwatch.processors.drift.summaries import bucket_of, load_counts
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.tables import DRIFT_SCORES_SCHEMA, EVENTS_SCHEMA

T0 = dt.datetime(2026, 11, 20, 0, 0, tzinfo=dt.UTC)
HOURS = 30
SESSIONS_PER_HOUR = 100
CONFIG = config_from_mapping(
    {
        "reference": "24h",
        "min_reference": "6h",
        "release": {"window": "6h", "min_history": "2h"},
    }
)


def _agent_events(
    agent: str, seed: int, *, slow_from: int | None, canary_from: int | None
) -> list[dict[str, Any]]:
    """Sessions of one agent: start, an LLM call, a tool call, maybe an escalation, end."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for hour in range(HOURS):
        for i in range(SESSIONS_PER_HOUR):
            t = T0 + dt.timedelta(hours=hour, seconds=float(rng.uniform(0, 3500)))
            sid = f"{agent}-{hour}-{i}"
            canary = canary_from is not None and hour >= canary_from and rng.random() < 0.5
            version = "2.0" if canary else "1.0"
            model = "gpt-4o" if rng.random() < 0.5 else "gpt-4o-mini"
            latency = float(rng.lognormal(np.log(400), 0.3))
            if slow_from is not None and hour >= slow_from and model == "gpt-4o":
                latency *= 2.0
            escalated = rng.random() < (0.4 if canary else 0.1)
            base = {"agent_id": agent, "session_id": sid, "agent_version": version}
            rows += [
                base | {"kind": "session_start", "ts": t, "intent": "payslip"},
                base | {"kind": "llm_call", "ts": t + dt.timedelta(seconds=1), "model": model,
                        "prompt_version": "v1", "latency_ms": latency, "input_tokens": 1000,
                        "output_tokens": int(rng.integers(50, 200)), "cost_usd_effective": 0.001},
                base | {"kind": "tool_call", "ts": t + dt.timedelta(seconds=2),
                        "tool_name": "lookup", "latency_ms": float(rng.lognormal(4, 0.3))},
            ]  # fmt: skip
            if escalated:
                rows.append(base | {"kind": "escalation", "ts": t + dt.timedelta(seconds=3)})
            rows.append(
                base | {"kind": "session_end", "ts": t + dt.timedelta(seconds=20),
                        "resolution": "escalated" if escalated else "resolved"}
            )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = (
        _agent_events("stable", 1, slow_from=None, canary_from=None)
        + _agent_events("slow", 2, slow_from=HOURS - 1, canary_from=None)
        + _agent_events("canary", 3, slow_from=None, canary_from=HOURS - 6)
    )
    full = [
        {c: None for c in EVENTS_SCHEMA}
        | {"schema_version": 1, "event_id": f"e{i}", "environment": "prod", "status": "ok",
           "_late": False, "_topic": "t", "_partition": 0, "_offset": i, "_kafka_ts": T0}
        | row
        for i, row in enumerate(rows)
    ]  # fmt: skip
    frame = pl.DataFrame(full, schema=EVENTS_SCHEMA)
    store = LakeStore(tmp_path_factory.mktemp("drift") / METADATA_FILE)
    store.prepare()
    store.insert("events", frame)
    return Path(store.db)


END = T0 + dt.timedelta(hours=HOURS)


@pytest.fixture(scope="module")
def scores(db: Path) -> pl.DataFrame:
    return DriftEvaluator(db, CONFIG).evaluate(END)


def test_summaries_equal_direct_counts(db: Path) -> None:
    counts = load_counts(db, T0, T0 + dt.timedelta(hours=2), CONFIG, "slow")
    got = (
        counts.filter(pl.col("signal") == "llm_latency_ms")
        .group_by("bucket", "key").agg(pl.col("n").sum()).sort("bucket", "key")
    )  # fmt: skip
    con = connect_lake(db)
    events = query(
        con,
        "SELECT ts, latency_ms FROM events WHERE agent_id = 'slow' AND kind = 'llm_call' "
        "AND ts < $hi", {"hi": T0 + dt.timedelta(hours=2)},
    )  # fmt: skip
    con.close()
    edges = MILLISECONDS.edges()
    want = (
        events.with_columns(
            bucket=pl.col("ts").dt.epoch("s") // 3600,
            key=pl.Series(np.searchsorted(edges, events["latency_ms"].to_numpy(), "right") - 1)
            .cast(pl.String),
        )
        .group_by("bucket", "key").agg(pl.len().cast(pl.Int64).alias("n")).sort("bucket", "key")
    )  # fmt: skip
    assert got.to_dicts() == want.to_dicts()
    sessions = counts.filter(pl.col("signal") == "escalation_rate")["n"].sum()
    assert sessions == 2 * SESSIONS_PER_HOUR
    assert bucket_of(T0, CONFIG.grain_s) == got["bucket"].min()


def test_output_has_the_drift_scores_columns(scores: pl.DataFrame) -> None:
    assert dict(scores.schema) == dict(DRIFT_SCORES_SCHEMA)
    assert set(scores["window_end"].to_list()) == {END}
    assert set(scores["verdict"].unique().to_list()) <= {"ok", "drift", "insufficient_data"}


def test_latency_shift_is_flagged_on_the_right_agent_and_signal(scores: pl.DataFrame) -> None:
    drift = scores.filter((pl.col("verdict") == "drift") & (pl.col("comparison") == "rolling"))
    assert ("slow", "llm_latency_ms") in set(drift.select("agent_id", "signal").iter_rows())
    assert drift.filter(pl.col("agent_id") == "slow")["signal"].unique().to_list() == [
        "llm_latency_ms"
    ]


def test_a_canary_that_escalates_more_is_flagged_in_a_release_comparison(
    scores: pl.DataFrame,
) -> None:
    release = scores.filter((pl.col("comparison") == "release") & (pl.col("agent_id") == "canary"))
    row = release.filter(
        (pl.col("signal") == "escalation_rate") & (pl.col("dimension") == "agent_version")
    ).row(0, named=True)
    assert (row["baseline"], row["candidate"], row["verdict"]) == ("1.0", "2.0", "drift")
    assert row["test"] == "two_proportion" and row["statistic"] > 0
    assert scores.filter(pl.col("comparison") == "release")["agent_id"].unique().to_list() == [
        "canary"
    ]


def test_a_stable_agent_is_not_flagged(scores: pl.DataFrame) -> None:
    stable = scores.filter(pl.col("agent_id") == "stable")
    assert stable.height > 0
    assert stable.filter(pl.col("verdict") == "drift").is_empty()
    assert stable.filter(pl.col("verdict") == "ok").height > 10


def test_young_reference_and_empty_window_are_insufficient_data(db: Path) -> None:
    early = DriftEvaluator(db, CONFIG).evaluate(T0 + dt.timedelta(hours=4))
    assert set(early["verdict"].to_list()) == {"insufficient_data"}
    after = DriftEvaluator(db, CONFIG).evaluate(END + dt.timedelta(hours=1))
    assert set(after["verdict"].to_list()) == {"insufficient_data"}
    assert after["n_cur"].max() == 0


def test_backfill_writes_drift_scores_and_feeds_the_gauges(db: Path) -> None:
    rows = backfill(db, END - dt.timedelta(hours=1), END, dt.timedelta(hours=1), CONFIG)
    assert rows["window_end"].unique().sort().to_list() == [END - dt.timedelta(hours=1), END]
    con = connect_lake(db)
    stored = con.execute(
        "SELECT count(*) FROM drift_scores WHERE agent_id = 'slow' AND verdict = 'drift' "
        "AND signal = 'llm_latency_ms' AND window_end = $end", {"end": END}
    ).fetchone()  # fmt: skip
    con.close()
    assert stored is not None and stored[0] >= 1
    collector = DriftCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update(rows)
    text = generate_latest(registry).decode()
    assert 'agentwatch_drift_detected{agent_id="slow",signal="llm_latency_ms"} 1.0' in text
    assert 'agentwatch_drift_detected{agent_id="stable",signal="llm_latency_ms"} 0.0' in text
    assert 'agentwatch_drift_score{agent_id="slow",signal="llm_latency_ms"}' in text


def test_report_prints_the_drift_and_writes_html(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backfill(db, END, END, dt.timedelta(hours=1), CONFIG)
    out = tmp_path / "report.html"
    assert main(["drift", "report", "--agent", "slow", "--db", str(db), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "llm_latency_ms" in printed and "drift" in printed
    # Key columns whole (a split signal's subject is not taken for a style), counts too.
    assert "tool_error_rate[lookup]" in printed and "9,853/4,906" in printed
    first = printed.split("\n\n")[0]
    assert first.startswith("slow: latency of successful LLM calls changed (p95 ")
    assert "x) since" in first and "evidence" in first
    assert max(len(line) for line in printed.splitlines()) <= 100
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 2 and "llm_latency_ms" in page
    told = page.index("<h2>What changed</h2>")
    assert told < page.index("<table>") < page.index("<section>")
    assert page[told:].split("<li>", 1)[1].startswith("slow: latency of successful LLM calls")
