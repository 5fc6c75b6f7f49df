"""Prometheus view of the latest drift evaluation, rendered by a collector on scrape.

One series per agent and signal, whatever the number of tests, environments and
comparisons behind it, so that an alert rule needs no knowledge of the tests:

- ``agentwatch_drift_score{agent_id,signal}``: the largest severity among the signal's
  results of the agent's latest window, 1.0 being its threshold (see ``stats.severity``);
- ``agentwatch_drift_detected{agent_id,signal}``: 1 when any of them is ``drift``, else 0;
- ``agentwatch_drift_insufficient_data{agent_id,signal}``: 1 when none could be tested,
  in which case the two above are left out rather than reported as "no drift".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import polars as pl
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentwatch.processors.drift import stats
from agentwatch.processors.drift.evaluate import DRIFT, INSUFFICIENT


def severity_column(frame: pl.DataFrame) -> pl.Series:
    """``stats.severity`` of every drift_scores row (null where nothing was tested)."""
    values = [
        stats.severity(score, threshold, test in stats.REGISTRY and stats.get(test).p_valued)
        for score, threshold, test in frame.select("score", "threshold", "test").iter_rows()
    ]
    return pl.Series("severity", values, dtype=pl.Float64)


class DriftCollector(Collector):
    """Holds each agent's latest window of drift results; renders the gauges on scrape."""

    def __init__(self) -> None:
        # (agent_id, signal) -> (severity or None, detected, insufficient)
        self.series: dict[tuple[str, str], tuple[float | None, bool, bool]] = {}
        self.window_end: dict[str, dt.datetime] = {}

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
        for agent_id in summary["agent_id"].unique().to_list():
            self.series = {k: v for k, v in self.series.items() if k[0] != agent_id}
        for agent_id, signal, window_end, sev, detected, insufficient in summary.iter_rows():
            self.series[(agent_id, signal)] = (sev, bool(detected), bool(insufficient))
            self.window_end[agent_id] = window_end

    def collect(self) -> Iterator[Metric]:
        score = GaugeMetricFamily(
            "agentwatch_drift_score",
            "Largest drift severity of the signal in the agent's latest window (1 = threshold).",
            labels=["agent_id", "signal"],
        )
        detected = GaugeMetricFamily(
            "agentwatch_drift_detected",
            "1 when a test of the signal found drift in the agent's latest window, else 0.",
            labels=["agent_id", "signal"],
        )
        insufficient = GaugeMetricFamily(
            "agentwatch_drift_insufficient_data",
            "1 when no test of the signal had enough samples in the agent's latest window.",
            labels=["agent_id", "signal"],
        )
        for (agent_id, signal), (sev, found, lacking) in sorted(self.series.items()):
            insufficient.add_metric([agent_id, signal], 1.0 if lacking else 0.0)
            if lacking:
                continue
            detected.add_metric([agent_id, signal], 1.0 if found else 0.0)
            if sev is not None:
                score.add_metric([agent_id, signal], sev)
        window = GaugeMetricFamily(
            "agentwatch_drift_window_end_timestamp_seconds",
            "End of the agent's latest evaluated drift window (event time).",
            labels=["agent_id"],
        )
        for agent_id, end in sorted(self.window_end.items()):
            window.add_metric([agent_id], end.timestamp())
        yield from (score, detected, insufficient, window)
