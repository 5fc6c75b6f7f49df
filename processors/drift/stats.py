"""Drift tests: small pure functions over aligned counts, behind one registry.

Every test receives the same input, :class:`Counts`: how often each key occurred in the
reference and in the current window. A key is a histogram bin (with a representative
value) for a numeric signal, a category for a mix, or ``false``/``true`` for a rate. So
a test runs equally on a compact precomputed summary and, for the golden tests, on raw
samples (:meth:`Counts.from_samples` keeps every distinct value as its own key, which
makes the results equal scipy's on the raw data).

A cumulative test (``cusum``) also receives :class:`Steps`: how far each bucket before
the window end stood from its baseline, in standard errors (:func:`mean_scores`,
:func:`rate_scores`), so that a small shift that persists adds up across buckets.

A test returns its statistic and, when it has one, a p-value. Tests with a p-value are
decided after Benjamini-Hochberg across a window (:mod:`.fdr`); distance scores are
compared with their threshold as they are. Adding a test is one decorated function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial import distance

Kind = Literal["numeric", "categorical", "rate"]
FloatArray = npt.NDArray[np.float64]

RATE_KEYS: Final = ("false", "true")
# Half a count added to every PSI bin, so that an empty bin gives a finite, small term
# rather than an infinite one (a common smoothing; documented in docs/drift.md).
PSI_SMOOTHING: Final = 0.5
PSI_BINS: Final = 10
# Categories expected fewer times than this in either window are pooled before chi-square,
# whose p-value is unreliable for sparse cells.
CHI2_MIN_EXPECTED: Final = 5.0


@dataclass(frozen=True)
class Steps:
    """Each bucket's standardised deviation from its baseline, for a cumulative test.

    ``z``: the deviation in standard errors; ``age``: buckets from each to the window
    end (0 for the last one); ``dispersion``: the variance of the same scores over the
    reference's own buckets (at least 1), so that traffic whose buckets vary more than
    sampling alone explains does not read as drift. ``df``: the number of reference
    buckets the dispersion was estimated from when nothing bounds it from below (a
    pool's members may move alike): the tail is then Student's t, not the normal one.
    """

    z: FloatArray
    age: FloatArray
    dispersion: float = 1.0
    df: int | None = None


@dataclass(frozen=True)
class Counts:
    """Counts of the reference and the current window over the same keys.

    ``values`` gives each key's position for numeric signals (ascending; a bin's
    representative value); it is None for categories and rates. ``steps`` holds the
    per-bucket scores a cumulative test reads (None for the windowed tests).
    """

    ref: FloatArray
    cur: FloatArray
    values: FloatArray | None = None
    steps: Steps | None = None

    def __post_init__(self) -> None:
        if self.ref.shape != self.cur.shape:
            raise ValueError("reference and current counts need the same keys")
        if self.values is not None and self.values.shape != self.ref.shape:
            raise ValueError("one value per key")

    @property
    def n_ref(self) -> int:
        return round(float(self.ref.sum()))

    @property
    def n_cur(self) -> int:
        return round(float(self.cur.sum()))

    @classmethod
    def from_samples(
        cls, ref: Sequence[float] | FloatArray, cur: Sequence[float] | FloatArray
    ) -> Counts:
        """Exact counts of raw numeric samples: every distinct value is a key."""
        a = np.asarray(ref, dtype=np.float64)
        b = np.asarray(cur, dtype=np.float64)
        values = np.unique(np.concatenate([a, b]))
        idx_a = np.searchsorted(values, a)
        idx_b = np.searchsorted(values, b)
        return cls(
            np.bincount(idx_a, minlength=values.size).astype(np.float64),
            np.bincount(idx_b, minlength=values.size).astype(np.float64),
            values,
        )

    @classmethod
    def from_categories(cls, ref: Sequence[str], cur: Sequence[str]) -> Counts:
        keys = sorted(set(ref) | set(cur))
        pos = {k: i for i, k in enumerate(keys)}
        a = np.zeros(len(keys))
        b = np.zeros(len(keys))
        for k in ref:
            a[pos[k]] += 1
        for k in cur:
            b[pos[k]] += 1
        return cls(a, b)

    @classmethod
    def from_rates(cls, ref: tuple[int, int], cur: tuple[int, int]) -> Counts:
        """``(successes, total)`` of each window, as counts of ``false`` and ``true``."""
        (s_ref, n_ref), (s_cur, n_cur) = ref, cur
        return cls(
            np.array([n_ref - s_ref, s_ref], dtype=np.float64),
            np.array([n_cur - s_cur, s_cur], dtype=np.float64),
        )


@dataclass(frozen=True)
class Outcome:
    statistic: float
    p_value: float | None  # None for distance scores


TestFn = Callable[[Counts], Outcome]


@dataclass(frozen=True)
class StatTest:
    name: str
    kind: Kind
    p_valued: bool
    fn: TestFn
    description: str
    steps: bool = False  # cumulative: reads the per-bucket ``Counts.steps``

    def __call__(self, counts: Counts) -> Outcome:
        return self.fn(counts)


TESTS: dict[str, StatTest] = {}
"""Every drift test by name, filled once as this module loads (one function each below)."""


def _stat_test(
    name: str, kind: Kind, *, p_valued: bool, description: str, steps: bool = False
) -> Callable[[TestFn], TestFn]:
    """Add a test to TESTS under ``name`` (the ``test`` column of drift_scores)."""

    def add(fn: TestFn) -> TestFn:
        if name in TESTS:
            raise ValueError(f"drift test {name!r} is registered twice")
        TESTS[name] = StatTest(name, kind, p_valued, fn, description, steps)
        return fn

    return add


def get(name: str) -> StatTest:
    try:
        return TESTS[name]
    except KeyError:
        known = ", ".join(sorted(TESTS))
        raise KeyError(f"unknown drift test {name!r} (known: {known})") from None


# --------------------------------------------------------------------------- numeric


def _numeric(counts: Counts) -> FloatArray:
    if counts.values is None:
        raise ValueError("a numeric test needs the keys' values")
    return counts.values


def _cdfs(counts: Counts) -> tuple[FloatArray, FloatArray]:
    return np.cumsum(counts.ref) / counts.ref.sum(), np.cumsum(counts.cur) / counts.cur.sum()


@_stat_test(
    "ks",
    "numeric",
    p_valued=True,
    description="two-sample Kolmogorov-Smirnov: largest gap between the two CDFs; "
    "p-value from Smirnov's asymptotic distribution (scipy's ks_2samp method='asymp')",
)
def ks(counts: Counts) -> Outcome:
    _numeric(counts)
    f_ref, f_cur = _cdfs(counts)
    d = float(np.max(np.abs(f_ref - f_cur))) if f_ref.size else 0.0
    m, n = sorted((float(counts.n_ref), float(counts.n_cur)), reverse=True)
    en = m * n / (m + n)
    p = float(np.clip(stats.kstwo.sf(d, round(en)), 0.0, 1.0))
    return Outcome(d, p)


@_stat_test(
    "wasserstein",
    "numeric",
    p_valued=False,
    description="Wasserstein-1 (earth mover's) distance divided by the reference's standard "
    "deviation: how far, in reference spreads, the distribution moved",
)
def wasserstein(counts: Counts) -> Outcome:
    values = _numeric(counts)
    w = float(stats.wasserstein_distance(values, values, counts.ref, counts.cur))
    scale = _std(values, counts.ref)
    if scale == 0.0:  # a constant reference: measure in the pooled spread instead
        scale = _std(values, counts.ref + counts.cur)
    return Outcome(w / scale if scale > 0.0 else 0.0, None)


def _std(values: FloatArray, weights: FloatArray) -> float:
    total = float(weights.sum())
    if total <= 0.0:
        return 0.0
    mean = float(np.dot(values, weights)) / total
    return math.sqrt(max(float(np.dot((values - mean) ** 2, weights)) / total, 0.0))


def psi_groups(counts: Counts, bins: int = PSI_BINS) -> npt.NDArray[np.int64]:
    """PSI bin of each key: deciles of the reference (keys sorted by value).

    A key goes to bin ``floor(bins * F_ref(before it))``, so each bin holds about a tenth
    of the reference; values below or above the reference's range fall in the outer
    bins, and a value holding many tied observations fills its bin alone.
    """
    _numeric(counts)
    before = (np.cumsum(counts.ref) - counts.ref) / counts.ref.sum()
    groups: npt.NDArray[np.int64] = np.minimum((before * bins + 1e-9).astype(np.int64), bins - 1)
    return groups


def psi_proportions(counts: Counts, bins: int = PSI_BINS) -> tuple[FloatArray, FloatArray]:
    """Smoothed proportions of the reference and the current window in the PSI bins."""
    groups = psi_groups(counts, bins)
    ref = np.bincount(groups, weights=counts.ref, minlength=bins)
    cur = np.bincount(groups, weights=counts.cur, minlength=bins)
    used = (ref + cur) > 0
    smoothed_ref = ref[used] + PSI_SMOOTHING
    smoothed_cur = cur[used] + PSI_SMOOTHING
    return smoothed_ref / smoothed_ref.sum(), smoothed_cur / smoothed_cur.sum()


@_stat_test(
    "psi",
    "numeric",
    p_valued=False,
    description="population stability index over the reference's deciles: "
    "sum((cur - ref) * ln(cur / ref)) of the bin shares, half a count added per bin",
)
def psi(counts: Counts) -> Outcome:
    ref, cur = psi_proportions(counts)
    return Outcome(float(np.sum((cur - ref) * np.log(cur / ref))), None)


# --------------------------------------------------------------------------- categorical


def pooled_table(counts: Counts, min_expected: float = CHI2_MIN_EXPECTED) -> FloatArray:
    """2 x k table with empty categories dropped and sparse ones pooled into one column."""
    table = np.vstack([counts.ref, counts.cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return table
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    sparse = (expected < min_expected).any(axis=0)
    if sparse.sum() >= 2:
        pooled = table[:, sparse].sum(axis=1, keepdims=True)
        table = np.hstack([table[:, ~sparse], pooled])
    return table


@_stat_test(
    "chi2",
    "categorical",
    p_valued=True,
    description="chi-square test of homogeneity on the 2 x k table of category counts "
    "(categories expected fewer than 5 times pooled)",
)
def chi2(counts: Counts) -> Outcome:
    table = pooled_table(counts)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return Outcome(0.0, 1.0)  # one category: nothing can differ
    result = stats.chi2_contingency(table, correction=False)
    return Outcome(float(result.statistic), float(result.pvalue))


@_stat_test(
    "jensen_shannon",
    "categorical",
    p_valued=False,
    description="Jensen-Shannon distance (base 2, from 0 to 1) between the category shares",
)
def jensen_shannon(counts: Counts) -> Outcome:
    if counts.ref.sum() == 0 or counts.cur.sum() == 0:
        return Outcome(0.0, None)
    p = counts.ref / counts.ref.sum()
    q = counts.cur / counts.cur.sum()
    return Outcome(float(distance.jensenshannon(p, q, base=2.0)), None)


# --------------------------------------------------------------------------- rates


def _rates(counts: Counts) -> tuple[float, float, float, float]:
    if counts.ref.shape != (2,):
        raise ValueError("a rate test needs the counts of false and true")
    return (
        float(counts.ref[1]),
        float(counts.ref.sum()),
        float(counts.cur[1]),
        float(counts.cur.sum()),
    )


@_stat_test(
    "two_proportion",
    "rate",
    p_valued=True,
    description="two-proportion z-test with the pooled proportion; statistic is z "
    "(current minus reference)",
)
def two_proportion(counts: Counts) -> Outcome:
    s1, n1, s2, n2 = _rates(counts)
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return Outcome(0.0, 1.0)
    z = (s2 / n2 - s1 / n1) / se
    return Outcome(z, float(2.0 * stats.norm.sf(abs(z))))


@_stat_test(
    "fisher_exact",
    "rate",
    p_valued=True,
    description="Fisher's exact test on the 2 x 2 table, for rates whose expected counts "
    "are too small for the z-test; statistic is the difference of the rates (current minus "
    "reference)",
)
def fisher_exact(counts: Counts) -> Outcome:
    s1, n1, s2, n2 = _rates(counts)
    table = np.array([[s2, n2 - s2], [s1, n1 - s1]], dtype=np.int64)
    result = stats.fisher_exact(table)
    return Outcome(s2 / n2 - s1 / n1, float(result.pvalue))


def min_expected(counts: Counts) -> float:
    """Smallest expected cell of the 2 x 2 table: the z-test wants every one >= 5."""
    table = np.vstack([counts.ref, counts.cur])
    total = table.sum()
    if total == 0:
        return 0.0
    return float((np.outer(table.sum(axis=1), table.sum(axis=0)) / total).min())


# --------------------------------------------------------------------------- cumulative


def mean_scores(
    n: FloatArray, mean: FloatArray, base_n: FloatArray, base_mean: FloatArray,
    base_var: FloatArray,
) -> FloatArray:  # fmt: skip
    """How far each bucket's mean lies from its baseline's, in standard errors.

    The standard error counts both the bucket's and the baseline's sampling noise
    (``var * (1/n + 1/N)``); a bucket without data or a constant baseline scores 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(base_var * (1.0 / n + 1.0 / base_n))
        z = (mean - base_mean) / se
    return np.asarray(np.where((se > 0) & np.isfinite(z), z, 0.0), dtype=np.float64)


def rate_scores(x: FloatArray, n: FloatArray, base_x: FloatArray, base_n: FloatArray) -> FloatArray:
    """Each bucket's count of successes as a normal score under its baseline's rate.

    The exact binomial mid-p upper tail, ``P(X > x) + P(X = x) / 2``, is turned into the
    normal quantile it has: unlike ``(p - p0) / se`` it keeps its meaning for a quiet
    bucket or a rare event (a tenth of an expected event), where the normal
    approximation of a rate would raise false alarms. The baseline's rate is smoothed by
    half an event, so a rate that was never seen before can still be scored.
    """
    p0 = (base_x + 0.5) / (base_n + 1.0)
    upper = stats.binom.sf(x, n, p0) + 0.5 * stats.binom.pmf(x, n, p0)
    z = stats.norm.isf(np.clip(upper, 1e-300, 1.0 - 1e-16))
    return np.asarray(np.where(n > 0, z, 0.0), dtype=np.float64)


def spans(horizon: int) -> list[int]:
    """The lengths a cumulative test sums over: 1, 2, 4, ... buckets, and the horizon."""
    out = [1]
    while out[-1] * 2 < horizon:
        out.append(out[-1] * 2)
    return out if horizon <= 1 else [*out, horizon]


def _cusum(counts: Counts) -> Outcome:
    steps = counts.steps
    if steps is None:
        raise ValueError("a cumulative test needs the per-bucket steps")
    lengths = spans(int(steps.age.max()) + 1) if steps.age.size else []
    best = 0.0
    for length in lengths:
        recent = steps.z[steps.age < length]
        if recent.size:
            z = float(recent.sum()) / math.sqrt(steps.dispersion * recent.size)
            best = z if abs(z) > abs(best) else best
    tail = stats.norm.sf(abs(best)) if steps.df is None else stats.t.sf(abs(best), steps.df)
    p = min(1.0, len(lengths) * 2.0 * float(tail)) if lengths else 1.0
    return Outcome(best, p)


_CUSUM_DOC = (
    "cumulative sum of the last 1, 2, 4, ... buckets' deviations from their baseline (in "
    "standard errors; {what}) over the square root of its length: the largest of those "
    "z-scores, so a shift is weighed from about when it began, whether it is abrupt, "
    "small and persistent, or growing; p-value Bonferroni-corrected over the lengths; "
    "statistic is that z (positive: above the baseline)"
)
cusum = _stat_test(
    "cusum", "numeric", p_valued=True, steps=True,
    description=_CUSUM_DOC.format(what="the mean value"),
)(_cusum)  # fmt: skip
cusum_rate = _stat_test(
    "cusum_rate", "rate", p_valued=True, steps=True,
    description=_CUSUM_DOC.format(what="the binomial mid-p score of the rate"),
)(_cusum)  # fmt: skip
