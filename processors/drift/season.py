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
from agentwatch.processors.drift.signals import SESSIONS_SUFFIX, base_signal, signal_of
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
    collapsed: pl.DataFrame, ref_lo: int, cur_lo: int, grain_s: int, season: Seasonality
) -> pl.DataFrame:
    """(agent_id, environment, signal, period in buckets) of the signals that follow a cycle."""
    if season.mode == "off":
        return pl.DataFrame(schema=CHOICE_SCHEMA)
    ref = collapsed.filter(
        pl.col("bucket").is_between(ref_lo, cur_lo - 1)
        & ~pl.col("signal").str.ends_with(SESSIONS_SUFFIX)
    )
    if ref.is_empty():
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
        .filter(pl.col("w") > 0)
        .with_columns(y=pl.col("y") / pl.col("w"))
    )
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
    out = []
    for key, group in means.sort("bucket").group_by(PAIR, maintain_order=True):
        if group.height < max(8, period // 2):
            continue
        w = group["w"].to_numpy()
        y = group["y"].to_numpy()
        phase = 2 * np.pi * (group["bucket"].to_numpy() % period) / period
        x = np.column_stack([np.ones_like(phase), np.sin(phase), np.cos(phase)])
        root = np.sqrt(w)
        beta, *_ = np.linalg.lstsq(x * root[:, None], y * root, rcond=None)
        rss1 = float(np.sum(w * (y - x @ beta) ** 2))
        rss0 = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
        df2 = group.height - 3
        if rss1 <= 0:
            p_value = 0.0 if rss0 > 1e-12 else 1.0
        else:
            p_value = float(scipy_stats.f.sf(((rss0 - rss1) / 2) / (rss1 / df2), 2, df2))
        if p_value < alpha:
            out.append(key)
    return pl.DataFrame(out, schema=list(PAIR), orient="row")


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
