"""Cumulative drift: a signal's last buckets against their baseline, added up over hours.

A drift that builds up (latency growing 10% an hour) is small in any one window: the
windowed tests see it once it has grown large. Here, for a window ending at T, every
numeric and rate signal of every agent gets one more result:

- **moments** per bucket, agent, environment and signal (count, sum and sum of squares
  of the value: a numeric bin's position, 1 for a rate's ``true``), computed once per
  bucket as evaluation moves forward (:class:`Moments`), so a window costs a few
  thousand rows whatever the traffic;
- **baseline**: the rolling reference before the horizon, ``[T - H - reference, T - H)``,
  or, for a signal that follows a cycle (``season``), the buckets of that reference at
  the same position of the cycle, as the windowed tests use;
- **scores**: each bucket of the horizon ``[T - H, T)`` against its baseline, in standard
  errors (:func:`stats.mean_scores`, :func:`stats.rate_scores`);
- **dispersion**: the mean squared score of the reference's own buckets, each against
  the baseline without itself, at least 1: traffic whose hours vary more than sampling
  explains (sessions alike within, an undetected cycle) widens the test instead of
  raising alarms;
- the kind's cumulative test (``cumulative.tests``: ``cusum``) over the scores.

The result is a ``rolling`` row like the others (its candidate the horizon) and joins
the agent's FDR family.

**Pools.** An agent's numeric signals measured in the same unit (its LLM and tool
latencies, say) often move together: a slower host, a busier network. Each bucket's
scores of those signals, each over its own dispersion, are added up into one more
cumulative test, the pool's *gate* (:func:`pool_gates`), with the dispersion of the same
sums over the reference. The gate joins the agent's family; when it passes, its members
are tested again among themselves (:func:`compare.decide`), so evidence that is
consistent across signals is not diluted by the agent's unrelated tests.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import polars as pl

from agentwatch.processors.drift import stats
from agentwatch.processors.drift.compare import ROLLING, period_label
from agentwatch.processors.drift.config import DriftConfig
from agentwatch.processors.drift.season import key_positions, seasonal_label
from agentwatch.processors.drift.signals import SESSIONS_SUFFIX, SIGNALS, signal_of
from agentwatch.processors.drift.stats import Counts, Steps
from agentwatch.processors.drift.summaries import AGENT_KEYS, COUNT_KEYS, bucket_start

PAIR: Final = (*AGENT_KEYS, "signal")
MOMENTS_SCHEMA: Final = pl.Schema(
    {"bucket": pl.Int64(), "agent_id": pl.String(), "environment": pl.String(),
     "signal": pl.String(), "n": pl.Float64(), "s1": pl.Float64(), "s2": pl.Float64()}
)  # fmt: skip
KIND_OF: Final = {name: s.kind for name, s in SIGNALS.items() if s.kind != "categorical"}
UNIT_OF: Final = {name: s.unit for name, s in SIGNALS.items() if s.kind == "numeric" and s.unit}
POOL: Final = (*AGENT_KEYS, "pool")


class Moments:
    """Per-bucket moments of the numeric and rate signals, kept for the buckets in use."""

    def __init__(self) -> None:
        self.frame = pl.DataFrame(schema=MOMENTS_SCHEMA)
        self.lo: int | None = None
        self.hi: int | None = None
        self._positions = pl.DataFrame(
            schema={"signal": pl.String(), "key": pl.String(), "pos": pl.Float64()}
        )

    def between(self, collapsed: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
        """Moments of buckets ``[lo, hi)`` from ``collapsed``, computing only new buckets."""
        if self.lo is None or self.hi is None or lo < self.lo or hi < self.hi:
            self.frame = self._compute(collapsed, lo, hi)
        elif hi > self.hi:
            fresh = self._compute(collapsed, max(lo, self.hi), hi)
            self.frame = pl.concat([self.frame.filter(pl.col("bucket") >= lo), fresh])
        self.lo, self.hi = lo, hi
        return self.frame.filter(pl.col("bucket").is_between(lo, hi - 1))

    def _compute(self, collapsed: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
        rows = collapsed.filter(
            pl.col("bucket").is_between(lo, hi - 1)
            & ~pl.col("signal").str.ends_with(SESSIONS_SUFFIX)
            & pl.col("signal").str.replace(r"\[.*$", "").is_in(list(KIND_OF))
        )
        new = rows.select(*COUNT_KEYS).unique().join(self._positions, on=COUNT_KEYS, how="anti")
        if new.height:
            self._positions = pl.concat([self._positions, key_positions(new)])
        n = pl.col("n").cast(pl.Float64)
        return (
            rows.join(self._positions, on=COUNT_KEYS, how="inner")
            .filter(pl.col("pos").is_not_null())
            .group_by("bucket", *PAIR)
            .agg(n=n.sum(), s1=(n * pl.col("pos")).sum(), s2=(n * pl.col("pos") ** 2).sum())
            .select(list(MOMENTS_SCHEMA))
            .cast(MOMENTS_SCHEMA)  # type: ignore[arg-type]
        )


def scores(frame: pl.DataFrame) -> np.ndarray:
    """Each row's score: its bucket (n, s1) against its baseline (N, S1, S2)."""
    n, s1 = frame["n"].to_numpy(), frame["s1"].to_numpy()
    big_n, big_s1, big_s2 = (frame[c].to_numpy() for c in ("N", "S1", "S2"))
    rate = (frame["kind"] == "rate").to_numpy()
    out = np.zeros(frame.height)
    if rate.any():
        out[rate] = stats.rate_scores(s1[rate], n[rate], big_s1[rate], big_n[rate])
    num = ~rate
    if num.any():
        mean = s1[num] / np.maximum(n[num], 1.0)
        base_mean = big_s1[num] / big_n[num]
        base_var = np.maximum(big_s2[num] / big_n[num] - base_mean**2, 0.0)
        out[num] = stats.mean_scores(n[num], mean, big_n[num], base_mean, base_var)
    return out


def cumulative_rows(
    moments: pl.DataFrame,
    choice: pl.DataFrame,
    config: DriftConfig,
    end: int,
    too_new: frozenset[tuple[str, str]] = frozenset(),
) -> list[dict[str, Any]]:
    """Cumulative results of every agent's numeric and rate signals for the window ending
    at bucket ``end``; ``moments`` covers at least ``[end - horizon - reference, end)``,
    ``choice`` is ``season.cyclic``'s (agent, environment, signal, period)."""
    c = config.cumulative
    if not c.tests:
        return []
    g = config.grain_s
    cur_lo = end - int(c.horizon.total_seconds()) // g
    ref_lo = cur_lo - int(config.reference.total_seconds()) // g
    kind = pl.col("signal").str.replace(r"\[.*$", "").replace_strict(KIND_OF, default=None)
    phased = (
        moments.filter(pl.col("bucket").is_between(ref_lo, end - 1))
        .join(choice, on=PAIR, how="left")
        .with_columns(
            kind=kind,
            phase=pl.when(pl.col("period").is_null())
            .then(0)
            .otherwise((pl.col("bucket") - cur_lo) % pl.col("period")),
        )
        .filter(pl.col("kind").is_in(list(c.tests)))
    )
    ref = phased.filter(pl.col("bucket") < cur_lo)
    # As for the windowed tests, a reference of a few fresh hours is no baseline.
    latest_first = cur_lo - int(config.min_reference.total_seconds()) // g
    young = (
        ref.group_by(AGENT_KEYS).agg(pl.col("bucket").min()).filter(pl.col("bucket") > latest_first)
    )
    too_new = too_new | frozenset((a, e) for a, e, _ in young.iter_rows())
    # ... and an agent without events in its own window gets no verdict.
    window = int(config.window.total_seconds()) // g
    active = frozenset(
        (a, e)
        for a, e in phased.filter(pl.col("bucket") >= end - window)
        .select(*AGENT_KEYS)
        .unique()
        .iter_rows()
    )
    base = ref.group_by(*PAIR, "phase").agg(N=pl.col("n").sum(), S1=pl.col("s1").sum(),
                                            S2=pl.col("s2").sum())  # fmt: skip
    keys = [*PAIR, "phase"]
    cur = phased.filter(pl.col("bucket") >= cur_lo).join(base, on=keys, how="inner")
    cur = cur.filter((pl.col("N") > 0) & (pl.col("n") > 0))
    if cur.is_empty():
        return []
    own = ref.join(base, on=keys, how="inner").with_columns(
        N=pl.col("N") - pl.col("n"), S1=pl.col("S1") - pl.col("s1"), S2=pl.col("S2") - pl.col("s2")
    )
    own = own.filter((pl.col("N") > 0) & (pl.col("n") > 0))
    own = own.with_columns(z=pl.Series(scores(own), dtype=pl.Float64))
    dispersion = own.group_by(PAIR).agg(dispersion=(pl.col("z") ** 2).mean().clip(lower_bound=1.0))
    totals = ref.group_by(PAIR).agg(n_ref=pl.col("n").sum())
    cur = cur.with_columns(
        z=pl.Series(scores(cur), dtype=pl.Float64), age=end - 1 - pl.col("bucket")
    )
    per_pair = (
        cur.group_by(PAIR)
        .agg("z", "age", "period", n_cur=pl.col("n").sum())
        .join(totals, on=PAIR, how="left")
        .join(dispersion, on=PAIR, how="left")
        .sort(PAIR)
    )
    baseline = period_label(bucket_start(ref_lo, g), bucket_start(cur_lo, g))
    meta = {
        "comparison": ROLLING,
        "dimension": None,
        "candidate": period_label(bucket_start(cur_lo, g), bucket_start(end, g)),
    }
    out: list[dict[str, Any]] = []
    members: list[tuple[str, str, str, float]] = []
    for agent, env, name, z, age, periods, n_cur, n_ref, phi in per_pair.iter_rows():
        signal = signal_of(name)
        test = c.tests[signal.kind]
        if not config.enabled(agent, signal.name) or (agent, env) not in active:
            continue
        n_ref, n_cur = round(n_ref or 0), round(n_cur)
        minimum = config.min_sample(agent, signal.name, test)
        outcome = None
        if (agent, env) not in too_new and min(n_ref, n_cur) >= max(minimum, 1):
            steps = Steps(np.array(z), np.array(age, dtype=np.float64), phi or 1.0)
            outcome = stats.get(test)(Counts(np.array([n_ref]), np.array([n_cur]), steps=steps))
        period = periods[0]
        threshold = config.threshold(agent, signal.name, test)
        pool = UNIT_OF.get(signal.name) if outcome is not None else None
        if pool is not None:
            members.append((agent, env, name, threshold))
        out.append(
            meta
            | {
                "pool": pool,
                "agent_id": agent,
                "environment": env,
                "signal": name,
                "test": test,
                "baseline": baseline
                if period is None
                else seasonal_label(baseline, config.grain * period),
                "statistic": None if outcome is None else outcome.statistic,
                "p_value": None if outcome is None else outcome.p_value,
                "threshold": threshold,
                "n_ref": n_ref,
                "n_cur": n_cur,
            }
        )
    return out + pool_gates(cur, own, dispersion, members, c.tests.get("numeric"), end)


def pool_gates(
    cur: pl.DataFrame,
    own: pl.DataFrame,
    dispersion: pl.DataFrame,
    members: list[tuple[str, str, str, float]],
    test: str | None,
    end: int,
) -> list[dict[str, Any]]:
    """One gate per agent and unit with two or more tested numeric signals (``members``:
    agent, environment, signal, threshold): the cumulative test of their bucket scores
    added up, each over its signal's dispersion, the sum over the square root of their
    number. Members may move alike, so the dispersion is that of the same sums over the
    reference's buckets, and the tail Student's t with as many degrees of freedom."""
    if test is None or not members:
        return []
    tested = pl.DataFrame(members, schema=[*PAIR, "threshold"], orient="row").with_columns(
        pool=pl.col("signal").str.replace(r"\[.*$", "").replace_strict(UNIT_OF)
    )
    tested = tested.filter(pl.len().over(POOL) >= 2)
    if tested.is_empty():
        return []

    def pooled(frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.join(tested.select(*PAIR, "pool"), on=PAIR, how="inner")
            .join(dispersion, on=PAIR, how="left")
            .with_columns(z=pl.col("z") / pl.col("dispersion").fill_null(1.0).sqrt())
            .group_by(*POOL, "bucket")
            .agg(z=pl.col("z").sum() / pl.len().sqrt(), n=pl.col("n").sum())
        )

    ref = (
        pooled(own)
        .group_by(POOL)
        .agg(
            n_ref=pl.col("n").sum(),
            dispersion=(pl.col("z") ** 2).mean().clip(lower_bound=1.0),
            df=pl.len(),
        )
    )
    gates = (
        pooled(cur)
        .with_columns(age=end - 1 - pl.col("bucket"))
        .group_by(POOL)
        .agg("z", "age", n_cur=pl.col("n").sum())
        .join(ref, on=POOL, how="left")
        .join(tested.group_by(POOL).agg(pl.col("threshold").min()), on=POOL, how="inner")
        .sort(POOL)
    )
    out: list[dict[str, Any]] = []
    for agent, env, pool, z, age, n_cur, n_ref, phi, df, threshold in gates.iter_rows():
        steps = Steps(np.array(z), np.array(age, dtype=np.float64), phi or 1.0, df or 1)
        outcome = stats.get(test)(
            Counts(np.array([float(n_ref or 0)]), np.array([float(n_cur)]), steps=steps)
        )
        out.append({"agent_id": agent, "environment": env, "pool": pool, "gate": True,
                    "statistic": outcome.statistic, "p_value": outcome.p_value,
                    "threshold": threshold})  # fmt: skip
    return out
