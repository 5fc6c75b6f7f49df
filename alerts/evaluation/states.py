"""The alert state machine: measurements in, transitions out; pure and clock-free.

The caller passes ``now``, so every timing rule is testable without sleeping::

    (none) --condition true--> pending --true for `for`--> firing --false--> resolved
                \\--true, `for` is 0----------------------> firing
    pending --false--> resolved (it never fired: no notification is due for it)
    firing  --false, within keep_firing_for of the last true--> firing (flapping damped)

A group whose value rests on fewer than ``min_samples`` observations gets no verdict:
its alert keeps whatever state it had, and the verdict says why. A group that has no
data at all (it vanished from the query) resolves, as a series that disappears does in
Prometheus, unless its rule says ``no_data: keep``. A query that fails changes nothing.

Transitions are recorded as rows of ``alert_events`` (:func:`transitions_frame`), from
which :func:`restore_alerts` rebuilds the active alerts after a restart.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import polars as pl

from agentwatch.alerts.model import Alert, AlertState, fingerprint
from agentwatch.alerts.rules import Rule, render
from agentwatch.processors.store.tables import ALERT_EVENTS_SCHEMA

Outcome = Literal["true", "false", "held", "no_data", "error"]


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
    judged = rule.judged(m.value, m.samples)
    holds = rule.holds(judged, m.threshold)
    text = f"{m.value:g} {rule.op} {m.threshold:g}"
    if rule.confidence is not None:
        text = f"{m.value:g} (bound {judged:.4g} at {rule.confidence:g}) {rule.op} {m.threshold:g}"
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
