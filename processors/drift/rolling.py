"""Rolling comparisons: each agent's own window, grown while it is too quiet for a verdict.

A test that lacks samples in the agent's window (default 1h) is retried over 2, 4, 8, ...
windows ending at the same time, up to ``max_window``: a quiet agent gets a verdict a
few hours late rather than never. The reference is the ``reference`` period before the
grown window, or the same hours of earlier cycles for a signal that follows the clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from agentwatch.processors.drift import season
from agentwatch.processors.drift.compare import ROLLING, Comparison, compare, period_label
from agentwatch.processors.drift.config import DriftConfig
from agentwatch.processors.drift.summaries import AGENT_KEYS, SummaryCache, bucket_start


def ladder(config: DriftConfig, agent_id: str) -> list[int]:
    """The agent's window and its longer retries, in buckets: W, 2W, 4W, ... max."""
    g = config.grain_s
    window, longest = config.windows_for(agent_id)
    w, cap = int(window.total_seconds()) // g, int(longest.total_seconds()) // g
    out = [w]
    while out[-1] < cap:
        out.append(min(cap, out[-1] * 2))
    return out


def rolling_rows(
    cache: SummaryCache,
    config: DriftConfig,
    b: dict[str, int],
    too_new: frozenset[tuple[str, str]],
    choice: pl.DataFrame,
) -> list[dict[str, Any]]:
    """Rolling results of every agent: its own window, retried longer while too quiet.

    ``choice`` holds the signals that follow a cycle (``season.cyclic``) and its period.
    """
    g = config.grain_s
    end, ref_len = b["end"], b["cur_lo"] - b["ref_lo"]
    present = (
        cache.collapsed.filter(pl.col("bucket").is_between(b["ref_lo"], end - 1))
        .select(*AGENT_KEYS)
        .unique()
    )
    ladders = {(a, e): ladder(config, a) for a, e in present.iter_rows()}
    periods = {p: dt.timedelta(seconds=p * g) for p in choice["period"].unique().to_list()}
    seasonal_pairs = {(a, e, sig): p for a, e, sig, p in choice.iter_rows()}
    kept: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    waiting: pl.DataFrame | None = None  # (agent, env, signal) still without a verdict
    active: set[tuple[str, str]] = set()
    step = 0
    while True:
        lengths: dict[int, list[tuple[str, str]]] = {}
        for agent, steps in ladders.items():
            if step < len(steps):
                lengths.setdefault(steps[step], []).append(agent)
        if not lengths:
            break
        found: list[dict[str, Any]] = []
        for length, agents in sorted(lengths.items()):
            found += _rolling_at(
                cache, config, b, length, ref_len, agents, waiting, choice, seasonal_pairs,
                periods, too_new,
            )  # fmt: skip
        by_pair: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for row in found:
            by_pair.setdefault((row["agent_id"], row["environment"], row["signal"]), []).append(row)
        if step == 0:  # an agent without events in its own window is not retried
            active = {(r["agent_id"], r["environment"]) for r in found if r["n_cur"]}
        quiet = []
        for pair, pair_rows in by_pair.items():
            kept[pair] = pair_rows
            lacking = all(r["statistic"] is None for r in pair_rows)
            if lacking and pair[:2] in active and pair[:2] not in too_new:
                quiet.append(pair)
        if not quiet:
            break
        waiting = pl.DataFrame(quiet, schema=["agent_id", "environment", "signal"], orient="row")
        step += 1
    return [row for pair_rows in kept.values() for row in pair_rows]


def _rolling_at(
    cache: SummaryCache,
    config: DriftConfig,
    b: dict[str, int],
    length: int,
    ref_len: int,
    agents: list[tuple[str, str]],
    waiting: pl.DataFrame | None,
    choice: pl.DataFrame,
    seasonal_pairs: dict[tuple[str, str, str], int],
    periods: dict[int, dt.timedelta],
    too_new: frozenset[tuple[str, str]],
) -> list[dict[str, Any]]:
    """Rolling results over a current window of ``length`` buckets ending at ``end``."""
    g = config.grain_s
    end = b["end"]
    cur_lo = end - length
    ref_lo = cur_lo - ref_len
    cur = cache.window_sum(f"current-{length}", cur_lo, end)
    trailing = cache.window_sum(f"reference-{length}", ref_lo, cur_lo)
    seasonal: dict[int, pl.DataFrame] = {}
    labels: dict[int, str] = {}
    for period, span in periods.items():
        if length >= period:
            continue
        seasonal[period], lo = season.seasonal_sum(cache.collapsed, cur_lo, end, ref_lo, period)
        labels[period] = season.seasonal_label(
            period_label(bucket_start(lo, g), bucket_start(cur_lo, g)), span
        )
    usable = choice.filter(pl.col("period").is_in(list(seasonal)))
    ref = season.assign(trailing, seasonal, usable)
    mine = pl.DataFrame(agents, schema=list(AGENT_KEYS), orient="row")
    ref = ref.join(mine, on=list(AGENT_KEYS), how="semi")
    cur = cur.join(mine, on=list(AGENT_KEYS), how="semi")
    if waiting is not None:
        pair = [*AGENT_KEYS, "signal"]
        ref = ref.join(waiting, on=pair, how="semi")
        cur = cur.join(waiting, on=pair, how="semi")
    comparison = Comparison(
        ROLLING,
        None,
        period_label(bucket_start(ref_lo, g), bucket_start(cur_lo, g)),
        period_label(bucket_start(cur_lo, g), bucket_start(end, g)),
    )
    rows = compare(ref, cur, comparison, config, too_new)
    for row in rows:
        cycle = seasonal_pairs.get((row["agent_id"], row["environment"], row["signal"]))
        if cycle is not None and cycle in labels:
            row["baseline"] = labels[cycle]
    return rows
