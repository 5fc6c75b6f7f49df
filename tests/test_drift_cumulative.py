"""The cumulative test: per-bucket scores that are calibrated when nothing changes, and
add up when a shift persists or grows; its rows in the evaluator, seasonal baseline
included; its settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from agentwatch.processors.drift import config_from_mapping, stats
from agentwatch.processors.drift.evaluate import DriftEvaluator
from agentwatch.processors.drift.stats import Counts, Steps
from agentwatch.settings import ConfigError
from bench.traffic import Change, Fleet, Profile, generate, write_store

TRIALS = 2000
BUCKETS = 12
AGES = np.arange(BUCKETS - 1, -1, -1, dtype=np.float64)


def _p(z: np.ndarray, dispersion: float = 1.0) -> float:
    steps = Steps(z, AGES[-z.size :], dispersion)
    outcome = stats.cusum(Counts(np.array([1000.0]), np.array([float(z.size)]), steps=steps))
    assert outcome.p_value is not None
    return outcome.p_value


def _mean_z(r: np.random.Generator, shift: float, n: int = 100) -> np.ndarray:
    """Scores of ``BUCKETS`` buckets of ``n`` normal values, each against a 5,000-value
    baseline, the values shifted by ``shift`` standard deviations."""
    base = r.normal(0, 1, 5000)
    cur = r.normal(shift, 1, (BUCKETS, n))
    return stats.mean_scores(
        np.full(BUCKETS, float(n)), cur.mean(axis=1), np.full(BUCKETS, 5000.0),
        np.full(BUCKETS, base.mean()), np.full(BUCKETS, base.var()),
    )  # fmt: skip


def test_the_cusum_of_mean_scores_keeps_its_false_alarm_rate() -> None:
    r = np.random.default_rng(1)
    alarms = sum(_p(_mean_z(r, 0.0)) <= 0.01 for _ in range(TRIALS))
    assert alarms / TRIALS <= 0.017


def test_rate_scores_keep_their_false_alarm_rate_for_a_rare_event_in_quiet_buckets() -> None:
    """A tenth of an expected event per bucket: a normal approximation would alarm often."""
    r = np.random.default_rng(2)
    n = np.full(BUCKETS, 10.0)
    base_x, base_n = np.full(BUCKETS, 100.0), np.full(BUCKETS, 10000.0)
    alarms = 0
    for _ in range(TRIALS):
        z = stats.rate_scores(r.binomial(10, 0.01, BUCKETS).astype(float), n, base_x, base_n)
        alarms += _p(z) <= 0.01
    assert alarms / TRIALS <= 0.01


def test_a_small_shift_that_persists_adds_up_across_buckets() -> None:
    """0.15 standard deviations in buckets of 100: about 1.5 standard errors each."""
    r = np.random.default_rng(3)
    found_last_bucket = found_cusum = 0
    for _ in range(200):
        z = _mean_z(r, 0.15)
        found_last_bucket += 2 * sps.norm.sf(abs(z[-1])) <= 0.01
        found_cusum += _p(z) <= 0.01
    assert found_cusum >= 150 and found_cusum >= 3 * found_last_bucket


def test_an_abrupt_change_in_the_last_bucket_is_not_averaged_away() -> None:
    z = np.zeros(BUCKETS)
    z[-1] = 5.0
    assert _p(z) < 1e-5


def test_the_sums_run_over_doubling_spans_up_to_the_horizon() -> None:
    assert stats.spans(12) == [1, 2, 4, 8, 12]
    assert stats.spans(8) == [1, 2, 4, 8]
    assert stats.spans(1) == [1]


def test_buckets_that_vary_more_than_sampling_explains_widen_the_test() -> None:
    z = np.full(BUCKETS, 1.5)
    assert _p(z) < 0.001
    assert _p(z, dispersion=4.0) > 0.01


def test_the_cumulative_test_refuses_counts_without_steps() -> None:
    with pytest.raises(ValueError, match="per-bucket steps"):
        stats.cusum(Counts(np.array([1.0, 2.0]), np.array([2.0, 1.0])))


def test_cumulative_settings_are_checked() -> None:
    assert config_from_mapping({}).cumulative.tests == {"numeric": "cusum", "rate": "cusum_rate"}
    with pytest.raises(ConfigError, match="no cumulative"):
        config_from_mapping({"cumulative": {"tests": {"numeric": "ks"}}})
    with pytest.raises(ConfigError, match="is cumulative"):
        config_from_mapping({"tests": {"numeric": {"small": "cusum", "large": "wasserstein"}}})
    with pytest.raises(ConfigError, match="horizn"):
        config_from_mapping({"cumulative": {"horizn": "6h"}})


# --------------------------------------------------------------------------- evaluator

START = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)
CHANGE_H = 40
CONFIG = config_from_mapping({"reference": "24h", "min_reference": "6h"})


@pytest.fixture(scope="module")
def scores(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """A busy agent whose LLM latency grows 10% an hour from hour 40, and one that stays."""
    base = Profile(sessions_per_hour=150.0, traffic_cycle=0.5, latency_cycle=0.3)
    fleet = Fleet(
        {"steady": base, "slowing": base},
        (Change("slowing", CHANGE_H,
                lambda p, h: replace(p, latency_scale=p.latency_scale * 1.1**h)),),
    )  # fmt: skip
    db = write_store(generate(fleet, START, CHANGE_H + 2, seed=11), tmp_path_factory.mktemp("c"))
    evaluator = DriftEvaluator(db, CONFIG)
    return pl.concat(
        [evaluator.evaluate(START + dt.timedelta(hours=h)) for h in range(30, CHANGE_H + 3)]
    )


def _llm(scores: pl.DataFrame, agent: str, test: str) -> pl.DataFrame:
    return scores.filter(
        (pl.col("agent_id") == agent) & (pl.col("signal") == "llm_latency_ms")
        & (pl.col("test") == test)
    ).sort("window_end")  # fmt: skip


def test_a_latency_that_grows_ten_percent_an_hour_is_found_within_two_windows(
    scores: pl.DataFrame,
) -> None:
    found = _llm(scores, "slowing", "cusum").filter(pl.col("verdict") == "drift")
    assert found.height and found["window_end"][0] <= START + dt.timedelta(hours=CHANGE_H + 2)
    assert found["statistic"][0] > 0


def test_the_cumulative_test_compares_the_same_hours_of_earlier_days(
    scores: pl.DataFrame,
) -> None:
    rows = _llm(scores, "steady", "cusum")
    assert rows.height == 13 and set(rows["verdict"].to_list()) == {"ok"}
    assert rows["baseline"].str.ends_with(" every 1d").all()
