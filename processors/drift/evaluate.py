"""Evaluate drift for a window end: rolling and release comparisons, FDR, verdicts.

For a window ending at T (a bucket boundary):

- **rolling**: per agent and environment, the reference period ``[T - window -
  reference, T - window)`` against the current window ``[T - window, T)``;
- **release**: per agent, environment and dimension (agent_version, prompt_version,
  model), a value first seen within ``[T - release.window, T)`` (the candidate: a canary
  or a new release) against the value with most traffic there among those seen before
  (the stable one), both over that same period.

Every signal is tested with the test its kind and sample size select, plus the kind's
``always`` tests. Below a test's minimum sample the verdict is ``insufficient_data``.
The p-values of one window, all agents and comparisons together, are adjusted with
Benjamini-Hochberg; a p-valued test's score is its adjusted p-value.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from agentwatch.clock import utc_now
from agentwatch.processors.drift import stats
from agentwatch.processors.drift.config import DriftConfig, load_config
from agentwatch.processors.drift.signals import SESSIONS_SUFFIX, SIGNALS, Signal
from agentwatch.processors.drift.stats import RATE_KEYS, Counts
from agentwatch.processors.drift.summaries import (
    AGENT_KEYS,
    PRESENCE_SIGNAL,
    SummaryCache,
    bucket_of,
    bucket_start,
)
from agentwatch.processors.store.segments import SegmentStore
from agentwatch.processors.store.tables import DRIFT_SCORES_SCHEMA

log = logging.getLogger(__name__)

ROLLING: Final = "rolling"
RELEASE: Final = "release"
OK: Final = "ok"
DRIFT: Final = "drift"
INSUFFICIENT: Final = "insufficient_data"
# Windows a backfill evaluates between two appends to drift_scores.
APPEND_EVERY: Final = 24
# A backfill loads the buckets of this much event time ahead at once (fewer queries).
PRELOAD: Final = dt.timedelta(days=1)


def period_label(lo: dt.datetime, hi: dt.datetime) -> str:
    """An ISO 8601 interval, e.g. ``2026-11-13T09:00Z/2026-11-20T08:00Z``."""
    return f"{_iso(lo)}/{_iso(hi)}"


def parse_period(label: str) -> tuple[dt.datetime, dt.datetime]:
    lo, _, hi = label.partition("/")
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
            "signal": signal.name,
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
        joined.filter(pl.col("signal").is_in(list(SIGNALS)))
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
        signal = SIGNALS[name]
        if not config.enabled(agent_id, name):
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
        for row in run_tests(agent_id, environment, signal, counts, config, guarded):
            out.append(row | meta | {"n_ref": raw.n_ref, "n_cur": raw.n_cur})
    return out


def _unit_share(units: float, rows: float) -> float:
    """Sessions per row (at most 1): the factor that turns row counts into session counts."""
    return min(1.0, units / rows) if rows > 0 and units > 0 else 1.0


def decide(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scores and verdicts: BH across the p-valued results, thresholds for distances."""
    p_rows = [r for r in rows if r["p_value"] is not None]
    q_values = stats.fdr_adjust(
        [r["p_value"] if not math.isnan(r["p_value"]) else 1.0 for r in p_rows]
    )
    for row, q in zip(p_rows, q_values, strict=True):
        row["score"] = float(q)
        row["verdict"] = DRIFT if q <= row["threshold"] else OK
    for row in rows:
        if row["statistic"] is None:
            row["score"] = None
            row["verdict"] = INSUFFICIENT
        elif row["p_value"] is None:
            row["score"] = row["statistic"]
            row["verdict"] = DRIFT if row["statistic"] >= row["threshold"] else OK
    return rows


def release_pairs(
    presence: pl.DataFrame, lo: int, release_lo: int, min_history: int
) -> pl.DataFrame:
    """(agent, environment, dimension, stable, candidate) for each new value in the window.

    ``presence`` holds events per bucket and dimension value from ``lo`` on. A candidate
    is first seen at or after ``release_lo``, at least ``min_history`` buckets after the
    agent's first bucket with any value of that dimension; the stable value is the one
    seen before ``release_lo`` with most traffic since ``release_lo`` (then overall).
    """
    group = [*AGENT_KEYS, "dimension"]
    per_value = (
        presence.filter(pl.col("bucket") >= lo)
        .group_by(*group, "value")
        .agg(
            first=pl.col("bucket").min(),
            n_release=pl.col("n").filter(pl.col("bucket") >= release_lo).sum(),
            n_all=pl.col("n").sum(),
        )
        .with_columns(agent_first=pl.col("first").min().over(group))
    )
    candidates = per_value.filter(
        (pl.col("first") >= release_lo) & (pl.col("first") - pl.col("agent_first") >= min_history)
    ).select(*group, candidate="value")
    stable = (
        per_value.filter(pl.col("first") < release_lo)
        .sort("n_release", "n_all", "value", descending=[True, True, False])
        .group_by(group, maintain_order=True)
        .first()
        .select(*group, stable="value")
    )
    return candidates.join(stable, on=group, how="inner").sort(*group, "candidate")


class DriftEvaluator:
    """Evaluates successive window ends over one catalog, reusing its bucket summaries."""

    def __init__(
        self,
        db: Path,
        config: DriftConfig | None = None,
        *,
        agent_id: str | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.db = db
        self.config = config or load_config()
        self.cache = SummaryCache(db, self.config, agent_id)
        self.clock = clock

    def align(self, ts: dt.datetime) -> dt.datetime:
        """The bucket boundary at or before ``ts``: the window end evaluated for it."""
        return bucket_start(bucket_of(ts, self.config.grain_s), self.config.grain_s)

    def bounds(self, window_end: dt.datetime) -> dict[str, int]:
        g = self.config.grain_s
        end = bucket_of(window_end, g)
        cur_lo = end - int(self.config.window.total_seconds()) // g
        ref_lo = cur_lo - int(self.config.reference.total_seconds()) // g
        release_lo = end - int(self.config.release_window.total_seconds()) // g
        history = int(self.config.release_min_history.total_seconds()) // g
        return {
            "end": end,
            "cur_lo": cur_lo,
            "ref_lo": ref_lo,
            "release_lo": release_lo,
            "lo": min(ref_lo, release_lo - history),
            "history": history,
            "min_reference": int(self.config.min_reference.total_seconds()) // g,
        }

    def too_new(self, ref_lo: int, latest_first: int) -> frozenset[tuple[str, str]]:
        """Agents first seen in the reference after ``latest_first``: too little history.

        Right after an agent starts (or its data begins) its reference is short and not
        representative (only its short sessions have ended yet, say): no verdict then.
        """
        collapsed = self.cache.collapsed
        first = (
            collapsed.filter((pl.col("signal") == PRESENCE_SIGNAL) & (pl.col("bucket") >= ref_lo))
            .group_by(*AGENT_KEYS)
            .agg(pl.col("bucket").min())
            .filter(pl.col("bucket") > latest_first)
        )
        return frozenset((a, e) for a, e, _ in first.iter_rows())

    def preload(self, first_end: dt.datetime, last_end: dt.datetime) -> None:
        """Load at once the buckets that windows ending from ``first_end`` to ``last_end`` need."""
        first, last = self.bounds(first_end), self.bounds(last_end)
        if self.cache.hi is None or first["end"] > self.cache.hi:
            self.cache.ensure(first["lo"], last["end"], detail_from=first["release_lo"])

    def evaluate(self, window_end: dt.datetime) -> pl.DataFrame:
        """drift_scores rows for the window ending at ``window_end`` (aligned down to grain)."""
        g = self.config.grain_s
        b = self.bounds(window_end)
        self.cache.ensure(b["lo"], b["end"], detail_from=b["release_lo"])
        end_ts = bucket_start(b["end"], g)
        cur_lo_ts = bucket_start(b["cur_lo"], g)
        rolling = Comparison(
            ROLLING,
            None,
            period_label(bucket_start(b["ref_lo"], g), cur_lo_ts),
            period_label(cur_lo_ts, end_ts),
        )
        rows = compare(
            self.cache.window_sum("reference", b["ref_lo"], b["cur_lo"]),
            self.cache.window_sum("current", b["cur_lo"], b["end"]),
            rolling,
            self.config,
            self.too_new(b["ref_lo"], b["cur_lo"] - b["min_reference"]),
        )
        pairs = release_pairs(self.cache.presence, b["lo"], b["release_lo"], b["history"])
        sums: dict[str, pl.DataFrame] = {}
        for agent_id, environment, dimension, candidate, stable in pairs.iter_rows():
            if dimension not in sums:
                sums[dimension] = self.cache.dimension_sum(dimension, b["release_lo"], b["end"])
            mine = sums[dimension].filter(
                (pl.col("agent_id") == agent_id) & (pl.col("environment") == environment)
            )
            rows += compare(
                mine.filter(pl.col("value") == stable),
                mine.filter(pl.col("value") == candidate),
                Comparison(RELEASE, dimension, stable, candidate),
                self.config,
            )
        self.cache.prune(b["lo"], b["release_lo"])
        return to_frame(decide(rows), end_ts, self.clock())


def to_frame(
    rows: list[dict[str, Any]], window_end: dt.datetime, ran_at: dt.datetime
) -> pl.DataFrame:
    schema = dict(DRIFT_SCORES_SCHEMA)
    if not rows:
        return pl.DataFrame(schema=schema)
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        ts=pl.lit(ran_at), window_end=pl.lit(window_end)
    )
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()])


def evaluate(db: Path, window_end: dt.datetime, config: DriftConfig | None = None) -> pl.DataFrame:
    """drift_scores rows for one window end (no write)."""
    return DriftEvaluator(db, config).evaluate(window_end)


def window_ends(
    start: dt.datetime, end: dt.datetime, step: dt.timedelta, config: DriftConfig
) -> list[dt.datetime]:
    """Bucket boundaries from ``start`` (rounded up) to ``end``, ``step`` apart."""
    g = config.grain_s
    step_s = int(step.total_seconds())
    if step_s <= 0 or step_s % g:
        raise ValueError(f"step must be a positive multiple of the grain ({g} s)")
    first = -(-int(start.timestamp()) // g)
    last = int(end.timestamp()) // g
    return [bucket_start(b, g) for b in range(first, last + 1, step_s // g)]


def backfill(
    db: Path,
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta = dt.timedelta(hours=1),
    config: DriftConfig | None = None,
    *,
    write: bool = True,
    agent_id: str | None = None,
) -> pl.DataFrame:
    """Evaluate every window end from ``start`` to ``end`` (event time), ``step`` apart.

    Window ends are bucket boundaries (``start`` rounded up to the grain). With ``write``
    the rows are appended to drift_scores every few windows, so a long backfill that
    stops keeps what it did. Returns all rows, in window order.
    """
    config = config or load_config()
    evaluator = DriftEvaluator(db, config, agent_id=agent_id)
    store = SegmentStore(db.parent, db.name)
    if write:
        store.prepare()
    frames: list[pl.DataFrame] = []
    pending: list[pl.DataFrame] = []
    ends = window_ends(start, end, step, config)
    for window_end in ends:
        evaluator.preload(window_end, min(ends[-1], window_end + PRELOAD))
        frame = evaluator.evaluate(window_end)
        frames.append(frame)
        pending.append(frame)
        if write and len(pending) >= APPEND_EVERY:
            store.append_log("drift_scores", pl.concat(pending))
            pending.clear()
    if write and pending and any(f.height for f in pending):
        store.append_log("drift_scores", pl.concat(pending))
    log.info(
        "drift backfill done",
        extra={"windows": len(frames), "queries": evaluator.cache.queries},
    )
    if not frames:
        return pl.DataFrame(schema=dict(DRIFT_SCORES_SCHEMA))
    return pl.concat(frames)
