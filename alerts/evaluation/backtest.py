"""Backtest: what the rules would have fired over stored history, notifying nothing.

The replay steps through event time at the evaluator's cadence and, at each instant,
measures every rule with the evaluator's own code (:meth:`Evaluator.measure_rule`, the
same metrics, windows, ``change`` handling and catalog thresholds) and moves a fresh
:class:`AlertStates` (the same ``for``, ``keep_firing_for``, ``min_samples`` and
``no_data`` rules). Nothing is written, notified or acted on.

History is read and measured in batches: one read-only connection, and per batch of
instants (six hours of event time by default) what those instants' windows need is copied
once into temporary tables (:mod:`.reads`), and each metric of one query is measured
over all the batch's windows at once (:meth:`SqlMetric.measure_windows`, the metric's
own SQL over a table of windows). Those samples fill the cache the evaluator's
:meth:`~Evaluator.measure_rule` reads, so the instants are then decided one by one, in
order, as one at a time would (sums of doubles aside, which may differ in their last
bits): one query per metric and batch instead of one per rule
and instant. A metric that is not one query, or whose batched query fails, is measured
per instant, as the evaluator does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb

from agentwatch.alerts.evaluation.evaluator import Evaluator, rule_windows
from agentwatch.alerts.evaluation.reads import (
    Cache,
    Needs,
    lookback,
    needs,
    snapshot_rule_tables,
)
from agentwatch.alerts.evaluation.states import AlertStates, Transition
from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.rules import Metric, Rule, SqlMetric, Window
from agentwatch.frames import register
from agentwatch.processors.store.attach import connect as connect_lake

BATCH: Final = dt.timedelta(hours=6)  # longer batches cost more per instant (joins)


@dataclass
class Episode:
    """One stretch of an alert instance's life: pending or firing, until it resolved."""

    rule: str
    labels: dict[str, str]
    severity: str
    started: dt.datetime  # first pending (or firing) evaluation
    fired: dt.datetime | None = None  # when it started firing; None if it never did
    resolved: dt.datetime | None = None  # None: still active at the end of the range
    peak: float | None = None

    def firing_for(self, end: dt.datetime) -> dt.timedelta:
        if self.fired is None:
            return dt.timedelta(0)
        return (self.resolved or end) - self.fired

    def as_dict(self, end: dt.datetime) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "labels": self.labels,
            "severity": self.severity,
            "pending_at": self.started.isoformat(),
            "fired_at": self.fired.isoformat() if self.fired else None,
            "resolved_at": self.resolved.isoformat() if self.resolved else None,
            "firing_s": self.firing_for(end).total_seconds(),
            "peak_value": self.peak,
        }


@dataclass
class Backtest:
    """The replay's result: every episode, and how many evaluations it took."""

    start: dt.datetime
    end: dt.datetime
    interval: dt.timedelta
    evaluations: int = 0
    episodes: list[Episode] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def fired(self) -> list[Episode]:
        return [e for e in self.episodes if e.fired is not None]

    def summary(self) -> list[dict[str, Any]]:
        """Per rule and labels: times fired, flaps (fired again after resolving), time firing."""
        groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Episode]] = {}
        for e in self.fired:
            key = (e.rule, tuple(sorted((k, v) for k, v in e.labels.items() if k != "severity")))
            groups.setdefault(key, []).append(e)
        out = []
        for (rule, labels), episodes in sorted(
            groups.items(), key=lambda kv: kv[1][0].fired or self.start
        ):
            firing = sum((e.firing_for(self.end) for e in episodes), dt.timedelta(0))
            out.append(
                {
                    "rule": rule,
                    "labels": {k: v for k, v in labels if k != "alertname"},
                    "severity": episodes[0].severity,
                    "fired": len(episodes),
                    "flaps": len(episodes) - 1,
                    "first_fired_at": min(e.fired for e in episodes if e.fired).isoformat(),
                    "firing_s": firing.total_seconds(),
                }
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "interval_s": self.interval.total_seconds(),
            "evaluations": self.evaluations,
            "alerts": self.summary(),
            "episodes": [e.as_dict(self.end) for e in self.episodes],
            "errors": self.errors,
        }


def instants(start: dt.datetime, end: dt.datetime, interval: dt.timedelta) -> list[dt.datetime]:
    """Evaluation times from ``start`` to ``end`` inclusive, ``interval`` apart."""
    if interval <= dt.timedelta(0):
        raise ValueError("the interval must be positive")
    count = int((end - start) / interval)
    return [start + i * interval for i in range(count + 1)]


def backtest(
    db: Path,
    rules: Sequence[Rule],
    catalog: Catalog,
    start: dt.datetime,
    end: dt.datetime,
    interval: dt.timedelta,
    *,
    progress: Callable[[int], None] | None = None,
    batch: dt.timedelta = BATCH,
) -> Backtest:
    """Replay ``rules`` over ``[start, end]`` every ``interval`` (see the module doc);
    ``batch``: the event time measured together (at most ``interval``: one at a time)."""
    evaluator = Evaluator(db, rules, catalog)
    states = AlertStates()
    result = Backtest(start, end, interval)
    open_episodes: dict[str, Episode] = {}
    times = instants(start, end, interval)
    back = lookback(rules, evaluator.registry)
    tables = needs(evaluator.registry[r.metric] for r in rules)
    con = connect_lake(db)
    try:
        register(con, "agent_catalog", catalog.frame())
        size = max(1, int(batch / interval))
        for first in range(0, len(times), size):
            ats = times[first : first + size]
            _load_batch(con, ats[0] - back, ats[-1], tables)
            cache = _measure_batch(con, rules, evaluator.registry, ats) if size > 1 else {}
            for at in ats:
                if size == 1:
                    cache = {}
                for rule in rules:
                    try:
                        measured = evaluator.measure_rule(con, rule, at, cache)
                    except duckdb.Error as exc:
                        result.errors.setdefault(rule.name, str(exc).splitlines()[0])
                        continue
                    transitions, _ = states.apply(rule, measured, at)
                    _record(transitions, at, open_episodes, result)
                _track_peaks(states, open_episodes)
                result.evaluations += 1
            if progress is not None:
                progress(len(ats))
    finally:
        con.close()
    return result


def _load_batch(
    con: duckdb.DuckDBPyConnection, lo: dt.datetime, hi: dt.datetime, tables: Needs
) -> None:
    """What the rules read of ``[lo, hi]``, as temporary tables the queries then read."""
    snapshot_rule_tables(con, hi, hi - lo, until=hi, tables=tables)


def _measure_batch(
    con: duckdb.DuckDBPyConnection,
    rules: Sequence[Rule],
    registry: Mapping[str, Metric],
    ats: Sequence[dt.datetime],
) -> Cache:
    """The samples of every window ``rules`` measure at ``ats``, one query per metric,
    keyed as :meth:`Evaluator.measure_rule` looks them up."""
    wanted: dict[str, dict[Window, None]] = {}
    for rule in rules:
        spans = rule_windows(rule)
        windows = wanted.setdefault(rule.metric, {})
        for at in ats:
            windows.update((Window(at - lo, at - hi), None) for lo, hi in spans)
    cache: Cache = {}
    for name, windows in wanted.items():
        metric = registry[name]
        if not isinstance(metric, SqlMetric):
            continue
        try:
            measured = metric.measure_windows(con, list(windows))
        except duckdb.Error:
            continue  # measured per instant, failing (or not) as the evaluator would
        cache.update(((name, w.start, w.end), samples) for w, samples in measured.items())
    return cache


def _record(
    transitions: Sequence[Transition],
    at: dt.datetime,
    open_episodes: dict[str, Episode],
    result: Backtest,
) -> None:
    for t in transitions:
        fp = t.alert.fingerprint
        episode = open_episodes.get(fp)
        if t.alert.state in ("pending", "firing") and episode is None:
            episode = Episode(
                t.alert.rule, dict(t.alert.labels), t.alert.severity, at, peak=t.alert.value
            )
            open_episodes[fp] = episode
            result.episodes.append(episode)
        if episode is None:
            continue
        if t.alert.state == "firing" and episode.fired is None:
            episode.fired = at
        if t.alert.state == "resolved":
            episode.resolved = at
            del open_episodes[fp]


def _track_peaks(states: AlertStates, open_episodes: dict[str, Episode]) -> None:
    for alert in states.alerts:
        episode = open_episodes.get(alert.fingerprint)
        if episode is not None and alert.value is not None:
            episode.peak = alert.value if episode.peak is None else max(episode.peak, alert.value)
