"""The rule evaluator: measurements in, alert transitions out, every transition recorded.

Two layers. :class:`AlertStates` is the state machine, pure and clock-free (the caller
passes ``now``), so every timing rule is testable without sleeping::

    (none) --condition true--> pending --true for `for`--> firing --false--> resolved
                \\--true, `for` is 0----------------------> firing
    pending --false--> resolved (it never fired: no notification is due for it)
    firing  --false, within keep_firing_for of the last true--> firing (flapping damped)

A group whose value rests on fewer than ``min_samples`` observations gets no verdict:
its alert keeps whatever state it had, and the verdict says why. A group that has no
data at all (it vanished from the query) resolves, as a series that disappears does in
Prometheus, unless its rule says ``no_data: keep``. A query that fails changes nothing.

:class:`Evaluator` does the I/O around it: per evaluation it opens the DuckDB catalog
read-only (processors and analysts share the file, so it is never held), measures each
rule's metric over the window ending at the evaluation time, applies the state machine,
appends the transitions to ``alert_events`` and only then hands them on. Its state is
rebuilt from ``alert_events`` on start, so a restart neither forgets a firing alert nor
announces it twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal

import duckdb
import polars as pl

from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.model import Alert, AlertState, fingerprint
from agentwatch.alerts.rules import Metric, Rule, Sample, Window, by_labels, metrics, render
from agentwatch.clock import Clock, utc_now
from agentwatch.processors.store.lake import LakeStore, StoreMissing
from agentwatch.processors.store.lake import connect as connect_lake
from agentwatch.processors.store.tables import ALERT_EVENTS_SCHEMA

log = logging.getLogger(__name__)

Outcome = Literal["true", "false", "held", "no_data", "error"]
ALERT_EVENTS: Final = "alert_events"


@dataclass(frozen=True)
class Measurement:
    """One group of one rule at one evaluation: what the state machine decides on.

    ``labels`` are the metric's group labels (``agent_id``, ``tool_name``, ...);
    ``context`` adds annotations known about the group (the catalog's owner, on-call).
    """

    labels: Mapping[str, str]
    value: float | None
    samples: int
    threshold: float | None
    context: Mapping[str, str] = field(default_factory=dict)
    # Why there is no value, when the measurement itself knows (e.g. a change against 0).
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """What one evaluation concluded for one alert instance, and why."""

    rule: str
    labels: Mapping[str, str]
    outcome: Outcome
    reason: str
    value: float | None = None
    samples: int | None = None
    threshold: float | None = None
    state: AlertState | None = None  # the alert's state after the evaluation


@dataclass(frozen=True)
class Transition:
    """An alert that changed state. ``previous`` is None when it was inactive.

    A ``resolved`` transition from ``pending`` closes an alert that never fired: nobody
    was told it started, so nobody needs to hear it ended.
    """

    alert: Alert
    previous: AlertState | None

    @property
    def fired(self) -> bool:
        """True when this transition starts firing."""
        return self.alert.state == "firing"

    @property
    def resolved_after_firing(self) -> bool:
        return self.alert.state == "resolved" and self.previous == "firing"


@dataclass(frozen=True)
class Evaluation:
    """The result of one evaluation: what changed, what is active now, and every verdict."""

    at: dt.datetime
    transitions: tuple[Transition, ...]
    alerts: tuple[Alert, ...]  # every pending and firing alert after this evaluation
    verdicts: tuple[Verdict, ...]
    errors: Mapping[str, str] = field(default_factory=dict)  # rule -> why it was not evaluated

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "firing"]

    @property
    def pending(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "pending"]

    @property
    def held(self) -> list[Verdict]:
        """Groups without a verdict for lack of samples or value."""
        return [v for v in self.verdicts if v.outcome == "held"]


# What the integrator attaches: the notifier, the runbooks. Called once per evaluation,
# after the transitions are in alert_events, even when nothing changed (the notifier's
# repeat and group intervals run on it).
AlertSink = Callable[[Evaluation], None]


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class _Instance:
    alert: Alert
    last_true: dt.datetime  # the last evaluation at which the condition held


def alert_labels(rule: Rule, group: Mapping[str, str]) -> dict[str, str]:
    """An alert's labels: its rule's name and severity, the rule's labels, the group's."""
    return {**rule.labels, **group, "alertname": rule.name, "severity": rule.severity}


class AlertStates:
    """The alerts that are pending or firing, and the pure rules that move them."""

    def __init__(self, active: Iterable[tuple[Alert, dt.datetime]] = ()) -> None:
        """Start from ``active`` pending or firing alerts, each with the last time its
        condition is known to have held (after a restart: its latest transition)."""
        self._active: dict[str, _Instance] = {
            alert.fingerprint: _Instance(alert, last_true)
            for alert, last_true in active
            if alert.state in ("pending", "firing")
        }

    @property
    def alerts(self) -> list[Alert]:
        return [i.alert for i in self._active.values()]

    def snapshot(self) -> dict[str, _Instance]:
        return dict(self._active)

    def restore(self, snapshot: Mapping[str, _Instance]) -> None:
        self._active = dict(snapshot)

    def apply(
        self, rule: Rule, measurements: Sequence[Measurement], now: dt.datetime
    ) -> tuple[list[Transition], list[Verdict]]:
        """Decide every group of ``rule`` at ``now``; groups it had alerts for and that
        are missing from ``measurements`` have no data."""
        transitions: list[Transition] = []
        verdicts: list[Verdict] = []
        seen: set[str] = set()
        for m in measurements:
            labels = alert_labels(rule, m.labels)
            fp = fingerprint(rule.name, labels)
            seen.add(fp)
            outcome, reason = _judge(rule, m)
            t = self._step(rule, fp, labels, outcome, reason, m, now, verdicts)
            if t is not None:
                transitions.append(t)
        for fp, inst in list(self._active.items()):
            if inst.alert.rule != rule.name or fp in seen:
                continue
            reason = "no data: the group is absent from the window"
            empty = Measurement(inst.alert.labels, None, 0, None)
            t = self._step(
                rule, fp, dict(inst.alert.labels), "no_data", reason, empty, now, verdicts
            )
            if t is not None:
                transitions.append(t)
        return transitions, verdicts

    def hold(self, rule: Rule, reason: str) -> list[Verdict]:
        """No evaluation of ``rule`` this time (its query failed): every alert stays."""
        return [
            Verdict(rule.name, i.alert.labels, "error", reason, state=i.alert.state)
            for i in self._active.values()
            if i.alert.rule == rule.name
        ]

    def retire(self, rule_names: Iterable[str], now: dt.datetime) -> list[Transition]:
        """Resolve the alerts of rules that no longer exist, so none stays firing forever."""
        known = set(rule_names)
        out = []
        for fp, inst in list(self._active.items()):
            if inst.alert.rule not in known:
                del self._active[fp]
                ended = replace(inst.alert, state="resolved", ends_at=now)
                out.append(Transition(ended, inst.alert.state))
        return out

    def _step(
        self,
        rule: Rule,
        fp: str,
        labels: Mapping[str, str],
        outcome: Outcome,
        reason: str,
        m: Measurement,
        now: dt.datetime,
        verdicts: list[Verdict],
    ) -> Transition | None:
        inst = self._active.get(fp)
        transition: Transition | None = None
        if outcome == "no_data" and rule.no_data == "ok":
            outcome_effect: Outcome = "false"
        elif outcome in ("held", "no_data", "error"):
            outcome_effect = "held"
        else:
            outcome_effect = outcome

        if outcome_effect == "true":
            if inst is None:
                state: AlertState = "firing" if rule.for_ <= dt.timedelta(0) else "pending"
                alert = self._alert(rule, labels, m, state, starts_at=now)
                self._active[fp] = _Instance(alert, now)
                transition = Transition(alert, None)
            else:
                fire = inst.alert.state == "pending" and now - inst.alert.starts_at >= rule.for_
                state = "firing" if fire else inst.alert.state
                alert = self._alert(rule, labels, m, state, starts_at=inst.alert.starts_at)
                self._active[fp] = _Instance(alert, now)
                if fire:
                    transition = Transition(alert, "pending")
                elif inst.alert.state == "pending":
                    left = rule.for_ - (now - inst.alert.starts_at)
                    reason += f"; pending, fires in {left.total_seconds():g}s if it holds"
        elif outcome_effect == "false" and inst is not None:
            kept = (
                inst.alert.state == "firing"
                and rule.keep_firing_for > dt.timedelta(0)
                and now - inst.last_true < rule.keep_firing_for
            )
            if kept:
                left = rule.keep_firing_for - (now - inst.last_true)
                reason += f"; kept firing for another {left.total_seconds():g}s (keep_firing_for)"
            else:
                del self._active[fp]
                ended = replace(inst.alert, state="resolved", ends_at=now)
                if m.samples:
                    ended = replace(ended, value=m.value, samples=m.samples)
                transition = Transition(ended, inst.alert.state)
        elif outcome_effect == "held" and inst is not None:
            reason += f"; the alert stays {inst.alert.state}"

        after = self._active.get(fp)
        verdicts.append(
            Verdict(
                rule.name,
                labels,
                outcome,
                reason,
                m.value,
                m.samples,
                m.threshold,
                after.alert.state if after else (transition.alert.state if transition else None),
            )
        )
        return transition

    @staticmethod
    def _alert(
        rule: Rule,
        labels: Mapping[str, str],
        m: Measurement,
        state: AlertState,
        starts_at: dt.datetime,
    ) -> Alert:
        annotations = {
            **m.context,
            **{
                k: render(v, labels, m.value, m.threshold, m.samples)
                for k, v in rule.annotations.items()
            },
        }
        return Alert(
            rule=rule.name,
            labels=dict(labels),
            annotations=annotations,
            state=state,
            starts_at=starts_at,
            value=m.value,
            samples=m.samples,
        )


def _judge(rule: Rule, m: Measurement) -> tuple[Outcome, str]:
    """The verdict on one measurement, with the reason people see."""
    if m.samples <= 0:
        return "no_data", "no data: no observations in the window"
    if m.samples < rule.min_samples:
        return "held", f"no verdict: {m.samples} samples < min_samples {rule.min_samples}"
    if m.value is None:
        return "held", f"no verdict: {m.note or 'the metric has no value'}"
    if m.threshold is None:
        return "held", f"no verdict: no threshold ({rule.threshold} is not set for this group)"
    holds = rule.holds(m.value, m.threshold)
    text = f"{m.value:g} {rule.op} {m.threshold:g}"
    return ("true", text) if holds else ("false", f"not {text}")


# --------------------------------------------------------------------------- persistence


def transitions_frame(transitions: Sequence[Transition], at: dt.datetime) -> pl.DataFrame:
    """Rows of ``alert_events`` for these transitions, stamped with the evaluation time."""
    rows = [
        {
            "ts": at,
            "fingerprint": t.alert.fingerprint,
            "rule": t.alert.rule,
            "state": t.alert.state,
            "severity": t.alert.severity,
            "agent_id": t.alert.agent_id,
            "labels": json.dumps(dict(t.alert.labels), sort_keys=True),
            "annotations": json.dumps(dict(t.alert.annotations), sort_keys=True),
            "value": t.alert.value,
            "samples": t.alert.samples,
            "starts_at": t.alert.starts_at,
        }
        for t in transitions
    ]
    return pl.DataFrame(rows, schema=ALERT_EVENTS_SCHEMA)


def restore_alerts(alert_events: pl.DataFrame) -> list[tuple[Alert, dt.datetime]]:
    """The alerts whose latest transition left them pending or firing, each with the
    time of that transition: the latest moment its condition is known to have held."""
    if alert_events.is_empty():
        return []
    latest = (
        alert_events.with_row_index("_order")
        .sort(["ts", "_order"])
        .group_by("fingerprint", maintain_order=True)
        .last()
        .filter(pl.col("state").is_in(["pending", "firing"]))
    )
    return [
        (
            Alert(
                rule=row["rule"],
                labels=json.loads(row["labels"]),
                annotations=json.loads(row["annotations"] or "{}"),
                state=row["state"],
                starts_at=row["starts_at"],
                value=row["value"],
                samples=row["samples"],
            ),
            row["ts"],
        )
        for row in latest.iter_rows(named=True)
    ]


# --------------------------------------------------------------------------- the evaluator


class Evaluator:
    """Evaluates rules against the catalog file and records transitions beside it.

    ``db`` is the DuckDB catalog written by ``agentwatch process``; ``alert_events``
    segments go to the data dir that holds it. ``clock`` gives the evaluation time when
    :meth:`evaluate` is called without one; tests inject theirs.
    """

    def __init__(
        self,
        db: Path,
        rules: Sequence[Rule],
        catalog: Catalog,
        *,
        clock: Clock = utc_now,
        registry: Mapping[str, Metric] | None = None,
    ) -> None:
        self.db = db
        self.store = LakeStore(db)
        self.rules: list[Rule] = list(rules)
        self.catalog = catalog
        self.clock = clock
        self.registry = dict(registry) if registry is not None else metrics()
        self._check_rules(self.rules)
        self.states = AlertStates(restore_alerts(self.store.read_log(ALERT_EVENTS)))
        if self.states.alerts:
            log.info("alert states restored", extra={"active": len(self.states.alerts)})

    def update(self, rules: Sequence[Rule] | None = None, catalog: Catalog | None = None) -> None:
        """Swap in edited rules or catalog; alerts of removed rules resolve next evaluation."""
        if rules is not None:
            self._check_rules(rules)
            self.rules = list(rules)
        if catalog is not None:
            self.catalog = catalog

    def evaluate(self, now: dt.datetime | None = None) -> Evaluation:
        """Evaluate every rule at ``now`` (default: the clock); record and return the result."""
        at = now or self.clock()
        if at.tzinfo is None:
            raise ValueError("evaluation times must be timezone-aware (UTC)")
        measured, errors = self._measure_all(at)
        snapshot = self.states.snapshot()
        transitions: list[Transition] = []
        verdicts: list[Verdict] = []
        for rule in self.rules:
            if rule.name in errors:
                verdicts += self.states.hold(rule, f"not evaluated: {errors[rule.name]}")
                continue
            changed, decided = self.states.apply(rule, measured[rule.name], at)
            transitions += changed
            verdicts += decided
        transitions += self.states.retire((r.name for r in self.rules), at)
        if transitions:
            try:
                self.store.append_log(ALERT_EVENTS, transitions_frame(transitions, at))
            except Exception:
                self.states.restore(snapshot)  # not recorded, so not happened: retry next time
                raise
        for change in transitions:
            log.info(
                "alert %s",
                change.alert.state,
                extra={
                    "rule": change.alert.rule,
                    "fingerprint": change.alert.fingerprint,
                    "previous": change.previous,
                    "labels": dict(change.alert.labels),
                    "value": change.alert.value,
                },
            )
        return Evaluation(
            at, tuple(transitions), tuple(self.states.alerts), tuple(verdicts), errors
        )

    # ------------------------------------------------------------------ measuring

    def _measure_all(self, at: dt.datetime) -> tuple[dict[str, list[Measurement]], dict[str, str]]:
        measured: dict[str, list[Measurement]] = {}
        errors: dict[str, str] = {}
        try:
            con = connect_lake(self.db)
        except StoreMissing as exc:
            return {}, {r.name: str(exc) for r in self.rules}
        except duckdb.Error as exc:
            return {}, {r.name: f"cannot open {self.db}: {exc}" for r in self.rules}
        try:
            # One snapshot for every rule of an evaluation: consistent, and each table
            # is read from the lake once, not once per rule.
            con.execute("BEGIN TRANSACTION")
            snapshot_rule_tables(con, at, lookback(self.rules))
            con.register("agent_catalog", self.catalog.frame().to_arrow())
            cache: dict[tuple[str, dt.datetime, dt.datetime], list[Sample]] = {}
            for rule in self.rules:
                try:
                    measured[rule.name] = self.measure_rule(con, rule, at, cache)
                except duckdb.Error as exc:
                    log.warning("rule not evaluated", extra={"rule": rule.name, "error": str(exc)})
                    errors[rule.name] = str(exc).splitlines()[0]
        finally:
            con.close()
        return measured, errors

    def measure_rule(
        self,
        con: duckdb.DuckDBPyConnection,
        rule: Rule,
        at: dt.datetime,
        cache: dict[tuple[str, dt.datetime, dt.datetime], list[Sample]],
    ) -> list[Measurement]:
        """One rule's measurements at ``at`` over ``con`` (also what a backtest replays)."""
        metric = self.registry[rule.metric]

        def samples(window: Window) -> list[Sample]:
            key = (metric.name, window.start, window.end)
            if key not in cache:
                cache[key] = metric.measure(con, window)
            return cache[key]

        current = samples(Window(at - rule.window, at))
        if rule.change is None:
            rows = [(s, s.value, s.samples, "") for s in current]
        else:
            w = rule.window
            earlier = by_labels(samples(Window(at - 2 * w, at - w)))
            # A group seen in no window before the previous one may have started during
            # it: a partly filled previous window would make any steady traffic a spike.
            before = by_labels(samples(Window(at - 3 * w, at - 2 * w)))
            rows = []
            for s in current:
                key = tuple(sorted(s.labels.items()))
                prev = earlier.get(key)
                value, note = _change(rule, s, prev)
                if value is not None and key not in before:
                    value, note = None, "no data before the previous window: it may be partial"
                basis = min(s.samples, prev.samples) if prev is not None else 0
                rows.append((s, value, basis, note))
        return [
            Measurement(
                labels=s.labels,
                value=value,
                samples=basis,
                threshold=rule.threshold_for(s.labels, self.catalog),
                context=self._context(s.labels),
                note=note,
            )
            for s, value, basis, note in rows
        ]

    def _context(self, labels: Mapping[str, str]) -> dict[str, str]:
        entry = self.catalog.get(labels.get("agent_id", ""))
        if entry is None:
            return {}
        return {"owner": entry.owner, "oncall": entry.oncall, "risk_tier": entry.risk_tier}

    def _check_rules(self, rules: Sequence[Rule]) -> None:
        missing = sorted({r.metric for r in rules} - set(self.registry))
        if missing:
            raise ValueError(f"rules name unregistered metrics: {', '.join(missing)}")


def _change(rule: Rule, current: Sample, previous: Sample | None) -> tuple[float | None, str]:
    """The rate-of-change value of one group: this window against the one before."""
    if previous is None or previous.value is None or current.value is None:
        return None, "no value in one of the two windows compared"
    if rule.change == "delta":
        return current.value - previous.value, ""
    if previous.value == 0:
        return None, "the previous window's value is 0, so a ratio is undefined"
    return current.value / previous.value, ""


# The lake tables rule metrics read, and the time column by which only the time before an
# evaluation is read (None: the whole table). Most metrics read their windows' whole
# minutes from the minute rollups and the partial minutes at each end from events; a few
# (sessions, escalations, lifecycle signals) still read events over the whole window.
RULE_TABLES: Final[dict[str, str | None]] = {
    "events": "ts",
    "minute_rollups": "window_start",
    "drift_scores": "ts",
    "releases": None,
}
# Metrics look a little before their window (escalations up to an hour before it).
LOOKBACK_MARGIN: Final = dt.timedelta(hours=1)


def lookback(rules: Sequence[Rule]) -> dt.timedelta:
    """How much event time before an instant its rules read: 3 windows for a change rule."""
    return max((r.window * (3 if r.change else 1) for r in rules), default=dt.timedelta(0))


def snapshot_rule_tables(
    con: duckdb.DuckDBPyConnection,
    at: dt.datetime,
    back: dt.timedelta,
    until: dt.datetime | None = None,
) -> None:
    """Copy what the rules read into temporary tables of the same names, which shadow the
    lake's: a lake scan costs a catalog round trip, so each table is scanned once."""
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    lake = row[0]
    since = at - back - LOOKBACK_MARGIN
    for table, column in RULE_TABLES.items():
        where, params = (f" WHERE {column} >= ?", [since]) if column else ("", [])
        if column and until is not None:
            where, params = where + f" AND {column} <= ?", [since, until]
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {lake}.main.{table}{where}",
            params,
        )
