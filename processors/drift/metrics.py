"""Prometheus view of the latest drift evaluation, rendered by a collector on scrape.

One series per agent and signal, whatever the number of tests, environments and
comparisons behind it, so that an alert rule needs no knowledge of the tests:

- ``agentwatch_drift_score{agent_id,signal}``: the largest severity among the signal's
  results of the agent's latest window, 1.0 being its threshold (see ``fdr.severity``);
- ``agentwatch_drift_detected{agent_id,signal}``: 1 when any of them is ``drift``, else 0;
- ``agentwatch_drift_insufficient_data{agent_id,signal}``: 1 when none could be tested,
  in which case the two above are left out rather than reported as "no drift".

Release comparisons get series of their own, so that a dashboard can put a new release
(or prompt, or model) beside the stable one it is compared with:

- ``agentwatch_drift_release_score{agent_id,dimension,baseline,candidate,signal}``: the
  largest severity of that candidate against that baseline on the signal;
- ``agentwatch_drift_release_detected{...}``: 1 when one of its tests found drift.

Both are left out while the candidate could not be tested on the signal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import polars as pl
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from agentwatch.processors.drift import fdr, stats
from agentwatch.processors.drift.evaluate import DRIFT, INSUFFICIENT, RELEASE
from agentwatch.processors.metrics import series


def severity_column(frame: pl.DataFrame) -> pl.Series:
    """``fdr.severity`` of every drift_scores row (null where nothing was tested)."""
    values = [
        fdr.severity(score, threshold, test in stats.TESTS and stats.get(test).p_valued)
        for score, threshold, test in frame.select("score", "threshold", "test").iter_rows()
    ]
    return pl.Series("severity", values, dtype=pl.Float64)


class DriftCollector(Collector):
    """Holds each agent's latest window of drift results; renders the gauges on scrape."""

    def __init__(self) -> None:
        # (agent_id, signal) -> (severity or None, detected, insufficient)
        self.series: dict[tuple[str, str], tuple[float | None, bool, bool]] = {}
        self.window_end: dict[str, dt.datetime] = {}
        # (agent_id, dimension, baseline, candidate, signal) -> (severity or None, detected)
        self.releases: dict[tuple[str, str, str, str, str], tuple[float | None, bool]] = {}

    def update(self, rows: pl.DataFrame) -> None:
        """Replace each agent's series with its results in ``rows``' latest window."""
        if rows.is_empty():
            return
        latest = rows.with_columns(severity_column(rows)).filter(
            pl.col("window_end") == pl.col("window_end").max().over("agent_id")
        )
        summary = latest.group_by("agent_id", "signal").agg(
            pl.col("window_end").first(),
            pl.col("severity").max(),
            (pl.col("verdict") == DRIFT).any().alias("detected"),
            (pl.col("verdict") == INSUFFICIENT).all().alias("insufficient"),
        )
        releases = (
            latest.filter((pl.col("comparison") == RELEASE) & (pl.col("verdict") != INSUFFICIENT))
            .group_by("agent_id", "dimension", "baseline", "candidate", "signal")
            .agg(pl.col("severity").max(), (pl.col("verdict") == DRIFT).any().alias("detected"))
        )
        updated = set(summary["agent_id"].to_list())
        self.series = {k: v for k, v in self.series.items() if k[0] not in updated}
        self.releases = {k: v for k, v in self.releases.items() if k[0] not in updated}
        for agent_id, signal, window_end, sev, detected, insufficient in summary.iter_rows():
            self.series[(agent_id, signal)] = (sev, bool(detected), bool(insufficient))
            self.window_end[agent_id] = window_end
        for agent_id, dimension, baseline, candidate, signal, sev, detected in releases.iter_rows():
            key = (agent_id, dimension or "", baseline, candidate, signal)
            self.releases[key] = (sev, bool(detected))

    def collect(self) -> Iterator[Metric]:
        score = series.DRIFT_SCORE.gauge()
        detected = series.DRIFT_DETECTED.gauge()
        insufficient = series.DRIFT_INSUFFICIENT.gauge()
        for (agent_id, signal), (sev, found, lacking) in sorted(self.series.items()):
            insufficient.add_metric([agent_id, signal], 1.0 if lacking else 0.0)
            if lacking:
                continue
            detected.add_metric([agent_id, signal], 1.0 if found else 0.0)
            if sev is not None:
                score.add_metric([agent_id, signal], sev)
        window = series.DRIFT_WINDOW_END.gauge()
        for agent_id, end in sorted(self.window_end.items()):
            window.add_metric([agent_id], end.timestamp())
        release_score = series.RELEASE_SCORE.gauge()
        release_detected = series.RELEASE_DETECTED.gauge()
        for key, (sev, found) in sorted(self.releases.items()):
            release_detected.add_metric(list(key), 1.0 if found else 0.0)
            if sev is not None:
                release_score.add_metric(list(key), sev)
        yield from (score, detected, insufficient, window, release_score, release_detected)
