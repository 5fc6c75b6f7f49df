"""Comparisons of two windows' counts: the tests each signal gets, and the verdicts.

Pure functions over counts (frames in, result rows out); ``evaluate`` decides which
windows to compare and ``rolling`` how long a quiet agent's window grows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import polars as pl

from agentwatch.processors.drift import stats
from agentwatch.processors.drift.config import DriftConfig
from agentwatch.processors.drift.fdr import fdr_adjust, fdr_by_family, fdr_hierarchical
from agentwatch.processors.drift.signals import SESSIONS_SUFFIX, SIGNALS, Signal, signal_of
from agentwatch.processors.drift.stats import RATE_KEYS, Counts
from agentwatch.processors.drift.summaries import AGENT_KEYS

ROLLING: Final = "rolling"
RELEASE: Final = "release"
OK: Final = "ok"
DRIFT: Final = "drift"
INSUFFICIENT: Final = "insufficient_data"


def period_label(lo: dt.datetime, hi: dt.datetime) -> str:
    """An ISO 8601 interval, e.g. ``2026-11-13T09:00Z/2026-11-20T08:00Z``."""
    return f"{_iso(lo)}/{_iso(hi)}"


def parse_period(label: str) -> tuple[dt.datetime, dt.datetime]:
    """The bounds of a period label (a seasonal reference's ``every`` part left aside)."""
    lo, _, hi = label.split(" every ", 1)[0].partition("/")
    return _parse_iso(lo), _parse_iso(hi)


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Comparison:
    comparison: str  # rolling | release
    dimension: str | None
    baseline: str
    candidate: str


def counts_for(signal: Signal, keys: list[str], ref: np.ndarray, cur: np.ndarray) -> Counts:
    """Aligned counts of one signal, keys in the order its tests need."""
    ref = np.asarray(ref, dtype=np.float64)
    cur = np.asarray(cur, dtype=np.float64)
    if signal.kind == "numeric":
        assert signal.bins is not None
        index = np.array([int(k) for k in keys], dtype=np.int64)
        order = np.argsort(index)
        return Counts(ref[order], cur[order], signal.bins.positions(index[order]))
    if signal.kind == "rate":
        pos = {k: i for i, k in enumerate(keys)}
        pick = [pos.get(k) for k in RATE_KEYS]
        return Counts(
            np.array([ref[i] if i is not None else 0.0 for i in pick]),
            np.array([cur[i] if i is not None else 0.0 for i in pick]),
        )
    order = np.argsort(np.array(keys, dtype=object))
    return Counts(ref[order], cur[order])


def choose_tests(signal: Signal, counts: Counts, config: DriftConfig) -> list[str]:
    """The kind's small- or large-sample test, then its ``always`` tests."""
    choice = config.tests_for(signal.kind)
    if signal.kind == "rate":
        large = stats.min_expected(counts) >= config.min_expected
    else:
        large = min(counts.n_ref, counts.n_cur) >= config.large_sample
    return [choice.large if large else choice.small, *choice.always]


def run_tests(
    agent_id: str,
    environment: str,
    signal: Signal,
    counts: Counts,
    config: DriftConfig,
    guarded: bool = False,
    label: str | None = None,
) -> Iterator[dict[str, Any]]:
    """One raw result per test: statistic and p-value, or None below the minimum sample."""
    for name in choose_tests(signal, counts, config):
        test = stats.get(name)
        minimum = config.min_sample(agent_id, signal.name, name)
        guarded = guarded or min(counts.n_ref, counts.n_cur) < max(minimum, 1)
        outcome = None if guarded else test(counts)
        yield {
            "agent_id": agent_id,
            "environment": environment,
            "signal": label or signal.name,
            "test": name,
            "statistic": None if outcome is None else outcome.statistic,
            "p_value": None if outcome is None else outcome.p_value,
            "threshold": config.threshold(agent_id, signal.name, name),
            "n_ref": counts.n_ref,
            "n_cur": counts.n_cur,
        }


def compare(
    ref: pl.DataFrame,
    cur: pl.DataFrame,
    comparison: Comparison,
    config: DriftConfig,
    too_new: frozenset[tuple[str, str]] = frozenset(),
) -> list[dict[str, Any]]:
    """Test every signal of every agent present in either frame (agent, env, signal, key, n).

    Agents in ``too_new`` (agent_id, environment) get ``insufficient_data`` throughout.
    A clustered signal's counts are scaled to its number of sessions (its design effect
    taken as the rows per session), so its tests do not count alike rows as independent.
    """
    keys = [*AGENT_KEYS, "signal", "key"]
    joined = (
        ref.select(*keys, pl.col("n").alias("n_ref"))
        .join(cur.select(*keys, pl.col("n").alias("n_cur")), on=keys, how="full", coalesce=True)
        .with_columns(pl.col("n_ref", "n_cur").fill_null(0))
    )
    sessions = {
        (a, e, s.removesuffix(SESSIONS_SUFFIX)): (float(r), float(c))
        for a, e, s, _, r, c in joined.filter(
            pl.col("signal").str.ends_with(SESSIONS_SUFFIX)
        ).iter_rows()
    }
    grouped = (
        joined.filter(
            pl.col("signal").str.replace(r"\[.*$", "").is_in(list(SIGNALS))
            & ~pl.col("signal").str.ends_with(SESSIONS_SUFFIX)
        )
        .group_by(*AGENT_KEYS, "signal")
        .agg(pl.col("key"), pl.col("n_ref"), pl.col("n_cur"))
        .sort(*AGENT_KEYS, "signal")
    )
    out: list[dict[str, Any]] = []
    meta = {
        "comparison": comparison.comparison,
        "dimension": comparison.dimension,
        "baseline": comparison.baseline,
        "candidate": comparison.candidate,
    }
    for agent_id, environment, name, key, n_ref, n_cur in grouped.iter_rows():
        signal = signal_of(name)
        if not config.enabled(agent_id, signal.name):
            continue
        raw = counts_for(signal, key, np.array(n_ref), np.array(n_cur))
        counts = raw
        if signal.clustered:
            units = sessions.get((agent_id, environment, name), (0.0, 0.0))
            counts = Counts(
                raw.ref * _unit_share(units[0], raw.ref.sum()),
                raw.cur * _unit_share(units[1], raw.cur.sum()),
                raw.values,
            )
        guarded = (agent_id, environment) in too_new
        for row in run_tests(agent_id, environment, signal, counts, config, guarded, name):
            out.append(row | meta | {"n_ref": raw.n_ref, "n_cur": raw.n_cur})
    return out


def _unit_share(units: float, rows: float) -> float:
    """Sessions per row (at most 1): the factor that turns row counts into session counts."""
    return min(1.0, units / rows) if rows > 0 and units > 0 else 1.0


def decide(rows: list[dict[str, Any]], fdr: str = "agent") -> list[dict[str, Any]]:
    """Scores and verdicts: BH over each family of p-valued results, thresholds for distances.

    ``fdr`` names the families: ``window`` (all rows), ``agent`` (each agent and
    environment), ``hierarchical`` (agents selected first, then their tests). A pool's
    gate (``cumulative.pool_gates``) is one more member of its agent's family and is
    dropped from the result; see :func:`open_pools`.
    """
    p_rows = [r for r in rows if r["p_value"] is not None]
    p_values = [r["p_value"] if not math.isnan(r["p_value"]) else 1.0 for r in p_rows]
    if fdr == "window":
        q_values = fdr_adjust(p_values)
    else:
        families = [(r["agent_id"], r["environment"]) for r in p_rows]
        if fdr == "agent":
            q_values = fdr_by_family(p_values, families)
        else:
            level = max((r["threshold"] for r in p_rows), default=0.01)
            q_values = fdr_hierarchical(p_values, families, level)
    for row, q in zip(p_rows, q_values, strict=True):
        row["score"] = float(q)
    open_pools(p_rows)
    rows = [r for r in rows if not r.get("gate")]
    for row in rows:
        if row["statistic"] is None:
            row["score"] = None
            row["verdict"] = INSUFFICIENT
        elif row["p_value"] is None:
            row["score"] = row["statistic"]
            row["verdict"] = DRIFT if row["statistic"] >= row["threshold"] else OK
        else:
            row["verdict"] = DRIFT if row["score"] <= row["threshold"] else OK
    return rows


def open_pools(p_rows: list[dict[str, Any]]) -> None:
    """The second level of a pool: when its gate's score passes, BH among its members.

    A member's score becomes the smaller of its own and the larger of the gate's score
    and its BH q-value among the pool's members (Yekutieli's hierarchical testing): a
    false alarm still needs a first-level rejection in the agent's family, while a
    change that moves several signals of one unit a little is found on them together.
    """
    gates = [r for r in p_rows if r.get("gate")]
    for gate in gates:
        if gate["score"] > gate["threshold"]:
            continue
        key = (gate["agent_id"], gate["environment"], gate["pool"])
        members = [
            r
            for r in p_rows
            if not r.get("gate") and (r["agent_id"], r["environment"], r.get("pool")) == key
        ]
        within = fdr_adjust([r["p_value"] for r in members])
        for row, q in zip(members, within, strict=True):
            row["score"] = min(row["score"], max(gate["score"], float(q)))
