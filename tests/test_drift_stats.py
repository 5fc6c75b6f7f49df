"""Drift tests on known distributions: golden values against scipy, false alarm and
detection rates over seeded trials, and the edges (empty, constant, one category)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from agentwatch.processors.drift import fdr, stats
from agentwatch.processors.drift.config import config_from_mapping
from agentwatch.processors.drift.evaluate import decide, run_tests
from agentwatch.processors.drift.signals import SIGNALS
from agentwatch.processors.drift.stats import Counts

TRIALS = 200


def _m(r: np.random.Generator, n: int, p: list[float]) -> np.ndarray:
    return r.multinomial(n, p).astype(float)


def _binned(x: np.ndarray) -> np.ndarray:
    """log10 of ``x`` on a grid of 1/24 decade, the drift summaries' latency bins."""
    binned: np.ndarray = np.floor(np.log10(x) * 24) / 24
    return binned


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- golden


def test_ks_equals_scipy_asymptotic() -> None:
    a, b = rng(1).normal(0, 1, 300), rng(2).normal(0.2, 1, 120)
    got = stats.ks(Counts.from_samples(a, b))
    want = sps.ks_2samp(a, b, method="asymp")
    assert got.statistic == pytest.approx(want.statistic, abs=1e-12)
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-9)


def test_wasserstein_is_scipy_distance_over_reference_spread() -> None:
    a, b = rng(3).normal(0, 2, 400), rng(4).normal(1, 2, 300)
    got = stats.wasserstein(Counts.from_samples(a, b))
    assert got.p_value is None
    assert got.statistic == pytest.approx(sps.wasserstein_distance(a, b) / np.std(a), rel=1e-9)


def test_chi2_equals_scipy_contingency() -> None:
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cur = ["a"] * 20 + ["b"] * 30 + ["c"] * 25
    got = stats.chi2(Counts.from_categories(ref, cur))
    want = sps.chi2_contingency([[50, 30, 20], [20, 30, 25]], correction=False)
    assert got.statistic == pytest.approx(want.statistic)
    assert got.p_value == pytest.approx(want.pvalue)


def test_jensen_shannon_equals_scipy() -> None:
    counts = Counts(np.array([10.0, 20.0, 70.0]), np.array([30.0, 30.0, 40.0]))
    want = distance.jensenshannon([0.1, 0.2, 0.7], [0.3, 0.3, 0.4], base=2)
    assert stats.jensen_shannon(counts).statistic == pytest.approx(want)


def test_two_proportion_z_squared_is_the_2x2_chi_square() -> None:
    counts = Counts.from_rates((30, 400), (45, 300))
    got = stats.two_proportion(counts)
    want = sps.chi2_contingency([[30, 370], [45, 255]], correction=False)
    assert got.statistic**2 == pytest.approx(want.statistic)
    assert got.statistic > 0  # the current rate is the higher
    assert got.p_value == pytest.approx(want.pvalue)


def test_fisher_equals_scipy() -> None:
    got = stats.fisher_exact(Counts.from_rates((2, 400), (6, 100)))
    assert got.p_value == pytest.approx(sps.fisher_exact(np.array([[6, 94], [2, 398]])).pvalue)
    assert got.statistic == pytest.approx(0.06 - 0.005)


def test_psi_uses_reference_deciles_and_matches_its_formula() -> None:
    a = np.arange(1000.0)  # deciles: 0-99, 100-199, ...
    b = np.concatenate([np.arange(0.0, 500.0), np.arange(0.0, 100.0)])  # half in the lower half
    counts = Counts.from_samples(a, b)
    groups = stats.psi_groups(counts)
    assert np.bincount(groups, weights=counts.ref).tolist() == [100.0] * 10
    ref, cur = stats.psi_proportions(counts)
    want = sps.entropy(cur, ref) + sps.entropy(ref, cur)  # PSI is the symmetric KL
    assert stats.psi(counts).statistic == pytest.approx(want)
    raw_cur = np.array([200, 100, 100, 100, 100, 0, 0, 0, 0, 0]) + 0.5
    assert cur == pytest.approx(raw_cur / raw_cur.sum())


def test_benjamini_hochberg_equals_scipy() -> None:
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    got = fdr.fdr_adjust(p)
    assert got == pytest.approx(sps.false_discovery_control(p, method="bh"))
    assert fdr.fdr_adjust([]).size == 0


# --------------------------------------------------------------------------- rates


def _alarm_rate(make: object, test: str, trials: int = TRIALS) -> float:
    fn = stats.get(test)
    hits = 0
    for seed in range(trials):
        counts = make(rng(seed))  # type: ignore[operator]
        outcome = fn(counts)
        alarm = (outcome.p_value is not None and outcome.p_value <= 0.01) or (
            outcome.p_value is None and outcome.statistic >= stats_threshold(test)
        )
        hits += alarm
    return hits / trials


def stats_threshold(test: str) -> float:
    return config_from_mapping({}).thresholds[test]


@pytest.mark.parametrize(
    ("test", "make"),
    [
        ("ks", lambda r: Counts.from_samples(r.lognormal(6, 0.4, 2000), r.lognormal(6, 0.4, 150))),
        ("chi2", lambda r: Counts(_m(r, 3000, [0.5, 0.3, 0.2]),
                                  _m(r, 200, [0.5, 0.3, 0.2]))),
        ("two_proportion", lambda r: Counts.from_rates((int(r.binomial(5000, 0.12)), 5000),
                                                       (int(r.binomial(300, 0.12)), 300))),
        ("fisher_exact", lambda r: Counts.from_rates((int(r.binomial(5000, 0.01)), 5000),
                                                     (int(r.binomial(100, 0.01)), 100))),
        # On log10 positions in bins, as the evaluator gives a log-binned signal's values.
        ("wasserstein", lambda r: Counts.from_samples(_binned(r.lognormal(6, 0.4, 5000)),
                                                      _binned(r.lognormal(6, 0.4, 1000)))),
        ("psi", lambda r: Counts.from_samples(r.lognormal(6, 0.4, 5000),
                                              r.lognormal(6, 0.4, 500))),
        ("jensen_shannon", lambda r: Counts(_m(r, 5000, [0.4, 0.3, 0.2, 0.1]),
                                            _m(r, 1000, [0.4, 0.3, 0.2, 0.1]))),
    ],
)  # fmt: skip
def test_identical_samples_raise_drift_at_no_more_than_the_stated_rate(
    test: str, make: object
) -> None:
    # p-valued tests at p <= 0.01: 2 alarms expected in 200; 6 or more has chance < 2%.
    # Distances at their default thresholds: at these sizes noise stays far below them.
    limit = 0.025 if stats.get(test).p_valued else 0.0
    assert _alarm_rate(make, test) <= limit


@pytest.mark.parametrize(
    ("test", "make"),
    [
        ("ks", lambda r: Counts.from_samples(r.lognormal(6, 0.4, 2000),
                                             r.lognormal(6 + math.log(1.3), 0.4, 150))),
        ("chi2", lambda r: Counts(_m(r, 3000, [0.5, 0.3, 0.2]),
                                  _m(r, 200, [0.3, 0.3, 0.4]))),
        ("two_proportion", lambda r: Counts.from_rates((int(r.binomial(5000, 0.12)), 5000),
                                                       (int(r.binomial(300, 0.24)), 300))),
        ("fisher_exact", lambda r: Counts.from_rates((int(r.binomial(5000, 0.01)), 5000),
                                                     (int(r.binomial(100, 0.10)), 100))),
        ("wasserstein", lambda r: Counts.from_samples(_binned(r.lognormal(6, 0.4, 5000)),
                                                      _binned(r.lognormal(6.2, 0.4, 1000)))),
        ("psi", lambda r: Counts.from_samples(r.lognormal(6, 0.4, 5000),
                                              r.lognormal(6.5, 0.4, 500))),
        ("jensen_shannon", lambda r: Counts(_m(r, 5000, [0.4, 0.3, 0.2, 0.1]),
                                            _m(r, 1000, [0.1, 0.3, 0.2, 0.4]))),
    ],
)  # fmt: skip
def test_shifted_samples_are_detected(test: str, make: object) -> None:
    assert _alarm_rate(make, test, trials=50) >= 0.95


# --------------------------------------------------------------------------- edges


def test_all_equal_values_show_no_drift() -> None:
    counts = Counts.from_samples([5.0] * 100, [5.0] * 40)
    assert stats.ks(counts) == stats.Outcome(0.0, 1.0)
    assert stats.wasserstein(counts).statistic == 0.0
    assert stats.psi(counts).statistic == pytest.approx(0.0)


def test_a_constant_reference_still_measures_a_move() -> None:
    counts = Counts.from_samples([5.0] * 100, [6.0] * 40)
    assert stats.wasserstein(counts).statistic > 1.0
    assert stats.ks(counts).statistic == 1.0


def test_one_category_and_no_successes_give_no_drift() -> None:
    one = Counts.from_categories(["a"] * 50, ["a"] * 30)
    assert stats.chi2(one) == stats.Outcome(0.0, 1.0)
    assert stats.jensen_shannon(one).statistic == 0.0
    none = Counts.from_rates((0, 500), (0, 80))
    assert stats.two_proportion(none) == stats.Outcome(0.0, 1.0)
    assert stats.fisher_exact(none).p_value == 1.0


def test_sparse_categories_are_pooled_for_chi_square() -> None:
    counts = Counts(np.array([500.0, 400.0, 2.0, 1.0]), np.array([50.0, 40.0, 0.0, 1.0]))
    table = stats.pooled_table(counts)
    assert table.shape == (2, 3)
    assert table[:, -1].tolist() == [3.0, 1.0]


def test_below_the_minimum_sample_the_verdict_is_insufficient_not_ok() -> None:
    config = config_from_mapping({})
    signal = SIGNALS["llm_latency_ms"]
    for ref, cur in (([], []), ([1.0] * 500, []), ([1.0] * 500, [2.0] * 29)):
        counts = Counts.from_samples(ref, cur)
        rows = decide(list(run_tests("a", "prod", signal, counts, config)))
        assert rows and {r["verdict"] for r in rows} == {"insufficient_data"}
        assert all(r["score"] is None and r["p_value"] is None for r in rows)


def test_decide_adjusts_p_values_across_the_window_and_compares_distances() -> None:
    rows = [
        {"statistic": 1.0, "p_value": p, "threshold": 0.01} for p in (0.001, 0.004, 0.03, 0.9)
    ] + [{"statistic": 0.3, "p_value": None, "threshold": 0.25},
         {"statistic": 0.2, "p_value": None, "threshold": 0.25}]  # fmt: skip
    out = decide(rows, fdr="window")
    assert [r["verdict"] for r in out] == ["drift", "drift", "ok", "ok", "drift", "ok"]
    assert out[1]["score"] == pytest.approx(0.008)  # 0.004 * 4 / 2
    assert out[4]["score"] == 0.3


def test_severity_is_one_at_the_threshold_on_every_scale() -> None:
    assert fdr.severity(0.01, 0.01, p_valued=True) == pytest.approx(1.0)
    assert fdr.severity(0.0001, 0.01, p_valued=True) == pytest.approx(2.0)
    assert fdr.severity(1.0, 0.01, p_valued=True) == 0.0
    assert fdr.severity(0.5, 0.25, p_valued=False) == pytest.approx(2.0)
    assert fdr.severity(None, 0.25, p_valued=False) is None


def test_registry_names_every_test_once_and_refuses_duplicates() -> None:
    assert set(stats.TESTS) == {
        "ks", "wasserstein", "psi", "chi2", "jensen_shannon", "two_proportion", "fisher_exact",
        "cusum", "cusum_rate",
    }  # fmt: skip
    with pytest.raises(ValueError):
        stats._stat_test("ks", "numeric", p_valued=True, description="again")(stats.ks)
