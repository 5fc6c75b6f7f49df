"""Seasonality: which signals follow the clock, and their same-time-of-cycle reference.

Traffic and latency of many agents follow the hour of day (and the day of week). Against
the whole trailing week, a busy afternoon hour then looks like drift every day. For each
agent and signal, the reference buckets are tested for a cycle of each configured period
(longest first): a weighted one-way analysis of variance of the buckets' means (numeric:
mean of the binned value; rate: the share; mix: the share of the reference's most common
category) grouped by their position in the cycle. When the position explains the means
(F-test p-value below ``seasonality.p_value``, with ``min_cycles`` whole cycles to learn
from), the signal's reference becomes the same positions of the earlier cycles: for a
window of 13:00-14:00, the 13:00-14:00 hours of the previous days. The reference label
then reads ``<period> every <cycle>`` so the report and drift_scores show the choice.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import numpy as np
import polars as pl
from scipy import stats as scipy_stats

from agentwatch.durations import format_duration
from agentwatch.processors.drift.config import Seasonality
from agentwatch.processors.drift.signals import SESSIONS_SUFFIX, SIGNALS, base_signal, signal_of
from agentwatch.processors.drift.summaries import AGENT_KEYS, COUNT_KEYS

PAIR: Final = (*AGENT_KEYS, "signal")
EVERY: Final = " every "
CHOICE_SCHEMA: Final = pl.Schema(
    {"agent_id": pl.String(), "environment": pl.String(), "signal": pl.String(),
     "period": pl.Int64()}
)  # fmt: skip


def seasonal_label(period_label: str, period: dt.timedelta) -> str:
    """``2026-11-13T09:00Z/2026-11-20T08:00Z every 1d``: the same hours of each day."""
    return f"{period_label}{EVERY}{format_duration(period)}"


def split_label(label: str) -> tuple[str, str | None]:
    """A reference label's period and, when seasonal, its cycle (``1d``)."""
    period, _, cycle = label.partition(EVERY)
    return period, cycle or None


def key_positions(keys: pl.DataFrame) -> pl.DataFrame:
    """Each (signal, key)'s value for the cycle test: a numeric bin's position, 1.0 for a
    rate's ``true``; categories get null here (their top category is found per pair)."""
    out: list[float | None] = []
    for name, key in keys.iter_rows():
        signal = signal_of(name)
        if signal.kind == "numeric" and signal.bins is not None:
            try:
                out.append(float(signal.bins.positions(np.array([int(key)]))[0]))
            except ValueError:
                out.append(None)
        elif signal.kind == "rate":
            out.append(1.0 if key == "true" else 0.0)
        else:
            out.append(None)
    return keys.with_columns(pos=pl.Series(out, dtype=pl.Float64))


def cyclic(
    collapsed: pl.DataFrame,
    ref_lo: int,
    cur_lo: int,
    grain_s: int,
    season: Seasonality,
    moments: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """(agent_id, environment, signal, period in buckets) of the signals that follow a cycle.

    ``moments`` (``cumulative.Moments``: count ``n`` and sum ``s1`` of the value per bucket
    and pair), when given, supplies the bucket means of numeric and rate signals, which
    are then not recounted from ``collapsed`` for every window.
    """
    if season.mode == "off":
        return pl.DataFrame(schema=CHOICE_SCHEMA)
    ref = collapsed.filter(
        pl.col("bucket").is_between(ref_lo, cur_lo - 1)
        & ~pl.col("signal").str.ends_with(SESSIONS_SUFFIX)
    )
    if moments is not None:
        categorical = (
            pl.col("signal")
            .str.replace(r"\[.*$", "")
            .is_in([n for n, s in SIGNALS.items() if s.kind == "categorical"])
        )
        ref = ref.filter(categorical)
    if ref.is_empty() and moments is None:
        return pl.DataFrame(schema=CHOICE_SCHEMA)
    tops = (
        ref.group_by(*PAIR, "key")
        .agg(pl.col("n").sum())
        .sort("n", "key", descending=[True, False])
        .group_by(PAIR, maintain_order=True)
        .first()
        .select(*PAIR, top_key="key")
    )
    positions = key_positions(ref.select(*COUNT_KEYS).unique())
    top = (pl.col("key") == pl.col("top_key")).cast(pl.Float64)
    means = (
        ref.join(tops, on=list(PAIR), how="left")
        .join(positions, on=list(COUNT_KEYS), how="left")
        .with_columns(y=pl.coalesce(pl.col("pos"), top))
        .group_by(*PAIR, "bucket")
        .agg(w=pl.col("n").sum().cast(pl.Float64), y=(pl.col("n") * pl.col("y")).sum())
    )
    if moments is not None:
        valued = moments.filter(pl.col("bucket").is_between(ref_lo, cur_lo - 1))
        means = pl.concat(
            [means, valued.select(*PAIR, "bucket", w=pl.col("n"), y=pl.col("s1"))],
            how="vertical_relaxed",
        )
    means = means.filter(pl.col("w") > 0).with_columns(y=pl.col("y") / pl.col("w"))
    found: list[pl.DataFrame] = []
    shortest = min(season.periods)
    for period in season.periods:
        p = int(period.total_seconds()) // grain_s
        cycles = (cur_lo - ref_lo) // p if p > 1 else 0
        if cycles < 1:
            continue
        recent = means.filter(pl.col("bucket") >= cur_lo - cycles * p)
        chosen = _anova(recent, p, cur_lo).filter(
            (pl.col("p_value") < season.p_value) & (pl.col("buckets") >= season.min_cycles * p)
        )
        chosen = chosen.select(*PAIR)
        if period == shortest:  # young history: a smooth daily cycle is seen in half a day
            chosen = pl.concat([chosen, _harmonic(recent, p, season.p_value)]).unique()
        if found:
            chosen = chosen.join(pl.concat(found).select(*PAIR), on=list(PAIR), how="anti")
        found.append(chosen.with_columns(period=pl.lit(p, pl.Int64)))
    if not found:
        return pl.DataFrame(schema=CHOICE_SCHEMA)
    return pl.concat(found).cast(CHOICE_SCHEMA)  # type: ignore[arg-type]


def _anova(means: pl.DataFrame, period: int, cur_lo: int) -> pl.DataFrame:
    """Weighted one-way ANOVA of bucket means by position in the cycle, per pair."""
    phased = means.with_columns(phase=(pl.col("bucket") - cur_lo) % period)
    phased = phased.with_columns(
        grand=(pl.col("w") * pl.col("y")).sum().over(PAIR) / pl.col("w").sum().over(PAIR),
        phase_mean=(pl.col("w") * pl.col("y")).sum().over(*PAIR, "phase")
        / pl.col("w").sum().over(*PAIR, "phase"),
    )
    table = phased.group_by(PAIR).agg(
        ssw=(pl.col("w") * (pl.col("y") - pl.col("phase_mean")) ** 2).sum(),
        ssb=(pl.col("w") * (pl.col("phase_mean") - pl.col("grand")) ** 2).sum(),
        buckets=pl.len(),
        phases=pl.col("phase").n_unique(),
    )
    table = table.filter((pl.col("phases") >= 2) & (pl.col("buckets") - pl.col("phases") >= 2))
    if table.is_empty():
        return table.with_columns(p_value=pl.lit(1.0))
    df1 = (table["phases"] - 1).to_numpy().astype(np.float64)
    df2 = (table["buckets"] - table["phases"]).to_numpy().astype(np.float64)
    ssb = table["ssb"].to_numpy()
    ssw = table["ssw"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (ssb / df1) / (ssw / df2)
    f = np.where(ssw > 0, f, np.where(ssb > 1e-12, np.inf, 0.0))
    p_values = np.atleast_1d(np.asarray(scipy_stats.f.sf(f, df1, df2), dtype=np.float64))
    return table.with_columns(p_value=pl.Series(p_values))


def _harmonic(means: pl.DataFrame, period: int, alpha: float) -> pl.DataFrame:
    """Pairs whose bucket means follow a sine of ``period`` (weighted least squares F-test).

    Unlike the analysis of variance it needs no repeated cycle, so a young agent's daily
    cycle is recognised from half a day of history; its seasonal reference is then empty
    for the hours not seen yet, and those windows get insufficient_data, not an alarm.
    """
    weighted_mean = (pl.col("w") * pl.col("y")).sum().over(PAIR) / pl.col("w").sum().over(PAIR)
    angle = 2 * np.pi * (pl.col("bucket") % period) / period
    terms = means.with_columns(s=angle.sin(), c=angle.cos(), y=pl.col("y") - weighted_mean)
    w, s, c, y = (pl.col(n) for n in ("w", "s", "c", "y"))
    # The weighted normal equations of y ~ 1 + sin + cos, per pair, in one pass.
    sums = (
        terms.group_by(PAIR)
        .agg(
            n=pl.len(),
            a00=w.sum(),
            a01=(w * s).sum(),
            a02=(w * c).sum(),
            a11=(w * s * s).sum(),
            a12=(w * s * c).sum(),
            a22=(w * c * c).sum(),
            b0=(w * y).sum(),
            b1=(w * s * y).sum(),
            b2=(w * c * y).sum(),
            rss0=(w * y * y).sum(),
        )
        .filter(pl.col("n") >= max(8, period // 2))
    )
    if sums.is_empty():
        return pl.DataFrame(schema=dict.fromkeys(PAIR, pl.String()))
    col = {name: sums[name].to_numpy() for name in sums.columns if name not in PAIR}
    a = np.stack(
        [np.stack([col["a00"], col["a01"], col["a02"]], -1),
         np.stack([col["a01"], col["a11"], col["a12"]], -1),
         np.stack([col["a02"], col["a12"], col["a22"]], -1)], 1,
    )  # fmt: skip
    b = np.stack([col["b0"], col["b1"], col["b2"]], -1)
    beta = np.einsum("kij,kj->ki", np.linalg.pinv(a, hermitian=True), b)
    rss0 = col["rss0"]
    rss1 = np.maximum(rss0 - np.einsum("ki,ki->k", beta, b), 0.0)
    df2 = col["n"].astype(np.float64) - 3
    with np.errstate(divide="ignore", invalid="ignore"):
        f = ((rss0 - rss1) / 2) / (rss1 / df2)
    exact = rss1 <= 1e-12 * np.maximum(rss0, 1e-300)
    p_value = np.where(exact, np.where(rss0 > 1e-12, 0.0, 1.0), scipy_stats.f.sf(f, 2, df2))
    return sums.filter(pl.Series(p_value < alpha)).select(PAIR)


def seasonal_sum(
    collapsed: pl.DataFrame, cur_lo: int, end: int, ref_lo: int, period: int
) -> tuple[pl.DataFrame, int]:
    """Counts of the reference's buckets at the current window's positions in the cycle.

    Returns the counts and the first bucket of the whole cycles used.
    """
    cycles = (cur_lo - ref_lo) // period
    lo = cur_lo - cycles * period
    length = end - cur_lo
    frame = (
        collapsed.filter(
            pl.col("bucket").is_between(lo, cur_lo - 1)
            & ((pl.col("bucket") - cur_lo) % period < length)
        )
        .group_by(*AGENT_KEYS, *COUNT_KEYS)
        .agg(pl.col("n").sum())
    )
    return frame, lo


def assign(
    trailing: pl.DataFrame, seasonal: dict[int, pl.DataFrame], choice: pl.DataFrame
) -> pl.DataFrame:
    """The reference of every pair: its seasonal counts when chosen, else the trailing ones."""
    keys = list(PAIR)
    parts = [trailing.join(choice.select(*PAIR), on=keys, how="anti")]
    for period, frame in seasonal.items():
        mine = choice.filter(pl.col("period") == period).select(*PAIR)
        parts.append(frame.join(mine, on=keys, how="semi"))
    return pl.concat(parts)


__all__ = [
    "base_signal",
    "cyclic",
    "key_positions",
    "seasonal_label",
    "seasonal_sum",
    "split_label",
]
