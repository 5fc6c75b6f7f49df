"""Evaluate drift for a window end: rolling and release comparisons, FDR, verdicts.

For a window ending at T (a bucket boundary):

- **rolling**: per agent and environment, the reference period ``[T - window -
  reference, T - window)`` against the current window ``[T - window, T)``;
- **release**: per agent, environment and dimension (agent_version, prompt_version,
  model), a value first seen within ``[T - release.window, T)`` (the candidate: a canary
  or a new release) against the value with most traffic there among those seen before
  (the stable one), both over that same period.

Every signal is tested with the test its kind and sample size select, plus the kind's
``always`` tests. Below a test's minimum sample the verdict is ``insufficient_data``;
a rolling test that lacks samples is retried over 2, 4, 8, ... windows ending at T (up
to ``max_window``), so a quiet agent gets a later verdict instead of none. A signal that
follows a cycle (``season``) is compared with the same hours of earlier cycles. The
p-values are adjusted with Benjamini-Hochberg per family (``fdr``: each agent's tests by
default); a p-valued test's score is its adjusted p-value.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import polars as pl

from agentwatch.clock import utc_now
from agentwatch.processors.drift import season
from agentwatch.processors.drift.compare import (
    DRIFT,
    INSUFFICIENT,
    OK,
    RELEASE,
    ROLLING,
    Comparison,
    choose_tests,
    compare,
    counts_for,
    decide,
    parse_period,
    period_label,
    run_tests,
)
from agentwatch.processors.drift.config import DriftConfig, load_config
from agentwatch.processors.drift.cumulative import Moments, cumulative_rows
from agentwatch.processors.drift.rolling import rolling_rows
from agentwatch.processors.drift.summaries import (
    AGENT_KEYS,
    PRESENCE_SIGNAL,
    SummaryCache,
    bucket_of,
    bucket_start,
    data_bounds,
)
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.tables import DRIFT_SCORES_SCHEMA

__all__ = [
    "DEFAULT_STEP", "DRIFT", "INSUFFICIENT", "OK", "RELEASE", "ROLLING", "Comparison",
    "DriftEvaluator", "backfill", "choose_tests", "compare", "counts_for", "decide", "evaluate",
    "parse_period", "period_label", "release_pairs", "run_tests", "to_frame", "window_ends",
]  # fmt: skip

log = logging.getLogger(__name__)

# A release comparison by this dimension leaves out the signal that is its own mix.
SPLIT_MIX: Final = {"model": "model_mix"}
# Windows a backfill evaluates between two appends to drift_scores.
APPEND_EVERY: Final = 24
# A backfill loads the buckets of this much event time ahead at once (fewer queries).
PRELOAD: Final = dt.timedelta(days=1)
# A backfill's window ends are this far apart unless told (``drift backfill --step``).
DEFAULT_STEP: Final = dt.timedelta(hours=1)


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
    """Evaluates successive window ends over one store, reusing its bucket summaries."""

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
        self.moments = Moments()
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
        longest = max(
            [self.config.max_window, *(a.max_window for a in self.config.agents if a.max_window)]
        )
        if self.config.cumulative.tests:
            longest = max(longest, self.config.cumulative.horizon)
        extra = max(0, int((longest - self.config.window).total_seconds()) // g)
        return {
            "end": end,
            "cur_lo": cur_lo,
            "ref_lo": ref_lo,
            "release_lo": release_lo,
            "lo": min(ref_lo - extra, release_lo - history),
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

    def _rolling(self, b: dict[str, int]) -> list[dict[str, Any]]:
        """The windowed rolling results, then the cumulative ones."""
        config, g = self.config, self.config.grain_s
        too_new = self.too_new(b["ref_lo"], b["cur_lo"] - b["min_reference"])
        collapsed = self.cache.collapsed
        span = int((config.cumulative.horizon + config.reference).total_seconds()) // g
        lo = min(b["end"] - span, b["ref_lo"])
        moments = self.moments.between(collapsed, lo, b["end"])
        choice = season.cyclic(collapsed, b["ref_lo"], b["cur_lo"], g, config.seasonality, moments)
        rows = rolling_rows(self.cache, config, b, too_new, choice)
        if config.cumulative.tests:
            rows += cumulative_rows(moments, choice, config, b["end"], too_new)
        return rows

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
        rows = self._rolling(b)
        pairs = release_pairs(self.cache.presence, b["lo"], b["release_lo"], b["history"])
        sums: dict[str, pl.DataFrame] = {}
        for agent_id, environment, dimension, candidate, stable in pairs.iter_rows():
            if dimension not in sums:
                sums[dimension] = self.cache.dimension_sum(dimension, b["release_lo"], b["end"])
            # The mix of the very thing being split always differs: not compared.
            mine = sums[dimension].filter(
                (pl.col("agent_id") == agent_id)
                & (pl.col("environment") == environment)
                & (pl.col("signal") != SPLIT_MIX.get(dimension, ""))
            )
            rows += compare(
                mine.filter(pl.col("value") == stable),
                mine.filter(pl.col("value") == candidate),
                Comparison(RELEASE, dimension, stable, candidate),
                self.config,
            )
        self.cache.prune(b["lo"], b["release_lo"])
        return to_frame(decide(rows, self.config.fdr), end_ts, self.clock())


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
    step: dt.timedelta = DEFAULT_STEP,
    config: DriftConfig | None = None,
    *,
    write: bool = True,
    agent_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """Evaluate every window end from ``start`` to ``end`` (event time), ``step`` apart.

    Window ends are bucket boundaries (``start`` rounded up to the grain). With ``write``
    the rows are appended to drift_scores every few windows, so a long backfill that
    stops keeps what it did. Windows that end more than ``settle`` after the last stored
    event are partial (the data stops inside them) and are not judged. ``progress`` is
    called with 1 after each window. Returns all rows, in window order.
    """
    config = config or load_config()
    bounds = data_bounds(db)
    if bounds is not None and end > bounds[1] + config.settle:
        log.info("windows after the last event left out", extra={"last_event": str(bounds[1])})
        end = bounds[1] + config.settle
    evaluator = DriftEvaluator(db, config, agent_id=agent_id)
    store = LakeStore(db)
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
        if progress is not None:
            progress(1)
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
