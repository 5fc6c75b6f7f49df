"""Drift on traffic that is not flat, with known distributions: FDR families, daily cycles,
quiet agents, per-tool and security signals."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from agentwatch.processors.drift import config_from_mapping, fdr
from agentwatch.processors.drift.compare import decide, parse_period
from agentwatch.processors.drift.config import Seasonality
from agentwatch.processors.drift.evaluate import DriftEvaluator
from agentwatch.processors.drift.season import cyclic, seasonal_sum
from bench.traffic import Change, Fleet, Profile, generate, scaled, write_store

START = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
HOURS = 48
CHANGE_H = 40
CONFIG = config_from_mapping({"reference": "24h", "min_reference": "6h"})


# --------------------------------------------------------------------------- FDR families


def _rows(agent: str, p_values: list[float]) -> list[dict[str, object]]:
    return [
        {"agent_id": agent, "environment": "prod", "statistic": 1.0, "p_value": p,
         "threshold": 0.01}
        for p in p_values
    ]  # fmt: skip


def _fleet_rows(seed: int = 0) -> list[dict[str, object]]:
    """One agent with two clear results and one overwhelming among 40 tests; 49 agents
    with none."""
    rng = np.random.default_rng(seed)
    rows = _rows("canary", [0.0001, 0.0002, 1e-7, *rng.uniform(0.05, 1, 37)])
    for i in range(49):
        rows += _rows(f"agent-{i}", list(rng.uniform(0, 1, 40)))
    return rows


def test_a_big_fleet_drowns_one_agent_when_the_whole_window_is_one_family() -> None:
    out = decide(_fleet_rows(), fdr="window")
    drifted = {(r["agent_id"], r["p_value"]) for r in out if r["verdict"] == "drift"}
    assert drifted == {("canary", 1e-7)}


def test_per_agent_families_keep_one_agents_evidence() -> None:
    out = decide(_fleet_rows(), fdr="agent")
    drifted = {r["p_value"] for r in out if r["verdict"] == "drift" and r["agent_id"] == "canary"}
    assert drifted == {0.0001, 0.0002, 1e-7}


def test_hierarchical_selects_the_agent_first_and_needs_stronger_evidence() -> None:
    out = decide(_fleet_rows(), fdr="hierarchical")
    drifted = {(r["agent_id"], r["p_value"]) for r in out if r["verdict"] == "drift"}
    assert drifted == {("canary", 1e-7)}


def test_simes_is_a_valid_p_value_of_a_null_family() -> None:
    rng = np.random.default_rng(1)
    combined = np.array([fdr.simes(rng.uniform(0, 1, 20)) for _ in range(4000)])
    assert abs(float(np.mean(combined <= 0.05)) - 0.05) < 0.012


# --------------------------------------------------------------------------- seasonality


def _rate_counts(days: int, amplitude: float, seed: int) -> pl.DataFrame:
    """Hourly counts of a rate whose share follows the hour of day with ``amplitude``."""
    rng = np.random.default_rng(seed)
    rows = []
    for bucket in range(days * 24):
        share = 0.2 * (1 + amplitude * np.sin(2 * np.pi * (bucket % 24) / 24))
        n = 400
        true = int(rng.binomial(n, share))
        rows += [("a", "prod", "escalation_rate", "true", true, bucket),
                 ("a", "prod", "escalation_rate", "false", n - true, bucket)]  # fmt: skip
    return pl.DataFrame(
        rows, schema=["agent_id", "environment", "signal", "key", "n", "bucket"], orient="row"
    )


def test_a_daily_cycle_is_found_and_a_flat_signal_is_not() -> None:
    season = Seasonality()
    cycling = cyclic(_rate_counts(7, 0.5, 2), 0, 7 * 24, 3600, season)
    flat = cyclic(_rate_counts(7, 0.0, 3), 0, 7 * 24, 3600, season)
    assert cycling.rows() == [("a", "prod", "escalation_rate", 24)]
    assert flat.is_empty()


def test_a_young_agents_daily_cycle_is_found_from_half_a_day() -> None:
    counts = _rate_counts(1, 0.8, 4).filter(pl.col("bucket") < 14)
    assert cyclic(counts, -24 * 7 + 14, 14, 3600, Seasonality()).height == 1


def test_the_seasonal_reference_is_the_same_hours_of_earlier_days() -> None:
    counts = pl.DataFrame(
        {"agent_id": "a", "environment": "prod", "signal": "s", "key": "k",
         "n": [1] * 96, "bucket": list(range(96))}
    )  # fmt: skip
    ref, lo = seasonal_sum(counts.with_columns(n=pl.col("bucket")), 72 + 13, 72 + 15, 0, 24)
    assert lo == 13 and ref["n"].to_list() == [13 + 14 + 37 + 38 + 61 + 62]


# --------------------------------------------------------------------------- traffic


@pytest.fixture(scope="module")
def scores(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    base = Profile(traffic_cycle=0.5, latency_cycle=0.3)
    fleet = Fleet(
        {
            "busy": base,
            "quiet": replace(base, sessions_per_hour=10.0),
            "tools": base,
            "attacked": base,
        },
        (
            Change("quiet", CHANGE_H, scaled(escalation=0.5)),
            Change("tools", CHANGE_H, scaled(tool_errors=(0.02, 0.35, 0.02))),  # type: ignore[arg-type]
            Change("attacked", CHANGE_H, lambda p, _: replace(
                p, security=0.15, security_mix=(0.93, 0.03, 0.04))),
        ),
    )  # fmt: skip
    db = write_store(generate(fleet, START, HOURS, seed=9), tmp_path_factory.mktemp("traffic"))
    evaluator = DriftEvaluator(db, CONFIG)
    return evaluator.evaluate(START + dt.timedelta(hours=CHANGE_H + 3))


def _drifted(scores: pl.DataFrame, agent: str) -> set[str]:
    mine = scores.filter((pl.col("agent_id") == agent) & (pl.col("verdict") == "drift"))
    return set(mine["signal"].to_list())


def test_a_quiet_agents_window_grows_until_its_escalations_get_a_verdict(
    scores: pl.DataFrame,
) -> None:
    escalation = scores.filter(
        (pl.col("agent_id") == "quiet")
        & (pl.col("signal") == "escalation_rate")
        & (pl.col("test") != "cusum_rate")
    )
    assert escalation["verdict"].to_list() == ["drift"]
    lo, hi = parse_period(escalation["candidate"][0])
    assert hi == START + dt.timedelta(hours=CHANGE_H + 3) and hi - lo > dt.timedelta(hours=1)
    assert escalation["n_cur"][0] >= 30


def test_a_failing_tool_is_named(scores: pl.DataFrame) -> None:
    drifted = _drifted(scores, "tools")
    assert "tool_error_rate[create_ticket]" in drifted
    assert not {"tool_error_rate[search_kb]", "tool_error_rate[lookup_user]"} & drifted


def test_a_prompt_injection_spike_is_found_on_security_signals(scores: pl.DataFrame) -> None:
    assert {"security_rate", "security_mix"} <= _drifted(scores, "attacked")


def test_the_unchanged_agent_under_a_daily_cycle_is_left_alone(scores: pl.DataFrame) -> None:
    assert _drifted(scores, "busy") == set()
    latency = scores.filter((pl.col("agent_id") == "busy") & (pl.col("signal") == "llm_latency_ms"))
    assert latency["baseline"].str.ends_with(" every 1d").all()


def test_per_agent_windows_from_the_config() -> None:
    config = config_from_mapping({"agents": {"quiet-*": {"window": "2h", "max_window": "1d"}}})
    assert config.windows_for("quiet-1") == (dt.timedelta(hours=2), dt.timedelta(days=1))
    assert config.windows_for("busy") == (dt.timedelta(hours=1), dt.timedelta(hours=12))
