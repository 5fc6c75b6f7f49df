"""The alert state machine on an injected clock: pending, firing and resolved,
keep_firing_for, too few samples, no data, labels, annotations and restore."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from agentwatch.alerts.evaluation.states import (
    AlertStates,
    Measurement,
    Transition,
    restore_alerts,
    transitions_frame,
)
from agentwatch.alerts.rules import Rule
from agentwatch.clock import ManualClock
from tests.evaluation_helpers import BURST, MINUTE
from tests.frames import T0


def m(value: float | None, samples: int = 100, agent: str = "hr-1", **kw: Any) -> Measurement:
    return Measurement({"agent_id": agent}, value, samples, kw.pop("threshold", 0.05), **kw)


def step(states: AlertStates, rule: Rule, now: dt.datetime, *ms: Measurement) -> list[Transition]:
    transitions, _ = states.apply(rule, list(ms), now)
    return transitions


def states_of(transitions: list[Transition]) -> list[tuple[str | None, str]]:
    return [(t.previous, t.alert.state) for t in transitions]


def test_a_true_condition_starts_pending() -> None:
    states = AlertStates()
    assert states_of(step(states, BURST, T0, m(0.2))) == [(None, "pending")]


def test_pending_fires_once_the_condition_has_held_for_its_for() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    assert step(states, BURST, clock.advance(30), m(0.2)) == []
    [fired] = step(states, BURST, clock.advance(30), m(0.3))
    assert (fired.previous, fired.alert.state) == ("pending", "firing")
    assert fired.alert.starts_at == T0
    assert fired.alert.value == 0.3


def test_a_rule_without_for_fires_at_once() -> None:
    rule = Rule("Now", "failed_check_rate", ">", 0.05, MINUTE, severity="critical")
    assert states_of(step(AlertStates(), rule, T0, m(0.2))) == [(None, "firing")]


def test_a_firing_alert_stays_firing_without_new_transitions() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    assert step(states, BURST, clock.advance(10), m(0.4)) == []
    assert [a.value for a in states.alerts] == [0.4]


def test_pending_that_clears_resolves_without_having_fired() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    [ended] = step(states, BURST, clock.advance(30), m(0.01))
    assert (ended.previous, ended.alert.state) == ("pending", "resolved")
    assert not ended.resolved_after_firing
    assert states.alerts == []


def test_firing_resolves_when_the_condition_clears() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    [ended] = step(states, BURST, clock.advance(10), m(0.01))
    assert ended.resolved_after_firing
    assert ended.alert.ends_at == clock()
    assert ended.alert.starts_at == T0


def test_keep_firing_for_rides_out_a_flapping_condition() -> None:
    rule = Rule(
        "Flappy", "failed_check_rate", ">", 0.05, MINUTE, keep_firing_for=dt.timedelta(seconds=30)
    )
    states, clock = AlertStates(), ManualClock(T0)
    assert states_of(step(states, rule, clock(), m(0.2))) == [(None, "firing")]
    for i in range(12):  # two minutes of true, false, true, false ... every 10 s
        assert step(states, rule, clock.advance(10), m(0.2 if i % 2 else 0.01)) == []
    assert [a.state for a in states.alerts] == ["firing"]


def test_keep_firing_for_resolves_once_the_condition_stayed_false_that_long() -> None:
    rule = Rule(
        "Flappy", "failed_check_rate", ">", 0.05, MINUTE, keep_firing_for=dt.timedelta(seconds=30)
    )
    states, clock = AlertStates(), ManualClock(T0)
    step(states, rule, clock(), m(0.2))
    assert step(states, rule, clock.advance(10), m(0.01)) == []
    assert step(states, rule, clock.advance(10), m(0.01)) == []
    assert states_of(step(states, rule, clock.advance(10), m(0.01))) == [("firing", "resolved")]


def test_too_few_samples_keep_a_firing_alert_firing_and_say_why() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    transitions, [verdict] = states.apply(BURST, [m(0.0, samples=3)], clock.advance(10))
    assert transitions == []
    assert verdict.outcome == "held"
    assert "3 samples < min_samples 10" in verdict.reason
    assert verdict.state == "firing"


def test_too_few_samples_never_start_an_alert() -> None:
    states = AlertStates()
    transitions, [verdict] = states.apply(BURST, [m(0.9, samples=9)], T0)
    assert transitions == []
    assert states.alerts == []
    assert verdict.outcome == "held"


def test_a_pending_alert_fires_only_on_a_verdict_not_during_a_lull_in_samples() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    assert step(states, BURST, clock.advance(70), m(0.2, samples=2)) == []
    assert [a.state for a in states.alerts] == ["pending"]
    assert states_of(step(states, BURST, clock.advance(10), m(0.2))) == [("pending", "firing")]


def test_no_data_resolves_a_firing_alert_by_default() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    transitions, [verdict] = states.apply(BURST, [], clock.advance(10))
    assert states_of(transitions) == [("firing", "resolved")]
    assert verdict.outcome == "no_data"


def test_no_data_keeps_the_state_when_the_rule_says_keep() -> None:
    rule = Rule("Sticky", "failed_check_rate", ">", 0.05, MINUTE, no_data="keep")
    states, clock = AlertStates(), ManualClock(T0)
    step(states, rule, clock(), m(0.2))
    transitions, [verdict] = states.apply(rule, [], clock.advance(600))
    assert transitions == []
    assert verdict.state == "firing"
    assert "stays firing" in verdict.reason


def test_a_group_without_a_threshold_gets_no_verdict() -> None:
    states = AlertStates()
    transitions, [verdict] = states.apply(BURST, [m(0.9, threshold=None)], T0)
    assert transitions == []
    assert verdict.outcome == "held"
    assert "no threshold" in verdict.reason


def test_each_group_is_an_alert_of_its_own() -> None:
    states = AlertStates()
    step(states, BURST, T0, m(0.2, agent="hr-1"), m(0.01, agent="hr-2"), m(0.3, agent="hr-3"))
    assert sorted(a.agent_id or "" for a in states.alerts) == ["hr-1", "hr-3"]


def test_alert_labels_carry_the_rule_its_severity_its_labels_and_the_group() -> None:
    [t] = step(AlertStates(), BURST, T0, m(0.2))
    assert t.alert.labels == {
        "alertname": "AgentViolationBurst",
        "severity": "critical",
        "category": "safety",
        "agent_id": "hr-1",
    }


def test_annotations_are_rendered_with_the_value_and_carry_the_context() -> None:
    [t] = step(AlertStates(), BURST, T0, m(0.25, context={"owner": "people"}))
    assert t.alert.annotations == {"summary": "hr-1 at 25%", "owner": "people"}


def test_a_resolved_alert_that_comes_back_starts_pending_again() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(10), m(0.0))
    [again] = step(states, BURST, clock.advance(10), m(0.2))
    assert (again.previous, again.alert.state) == (None, "pending")
    assert again.alert.starts_at == clock()


def test_a_failed_query_holds_every_alert_of_its_rule() -> None:
    states = AlertStates()
    step(states, BURST, T0, m(0.2))
    [verdict] = states.hold(BURST, "not evaluated: boom")
    assert verdict.outcome == "error"
    assert [a.state for a in states.alerts] == ["pending"]


def test_alerts_of_a_rule_that_was_removed_resolve() -> None:
    states = AlertStates()
    step(states, BURST, T0, m(0.2))
    [ended] = states.retire(["SomeOtherRule"], T0 + MINUTE)
    assert (ended.previous, ended.alert.state) == ("pending", "resolved")
    assert states.alerts == []


def test_restore_keeps_the_latest_state_of_each_alert() -> None:
    states, clock = AlertStates(), ManualClock(T0)
    first = step(states, BURST, clock(), m(0.2), m(0.2, agent="hr-2"))
    fired = step(states, BURST, clock.advance(60), m(0.2), m(0.01, agent="hr-2"))
    log = pl.concat([transitions_frame(first, T0), transitions_frame(fired, clock())])
    [(alert, last_true)] = restore_alerts(log)
    assert (alert.agent_id, alert.state, alert.starts_at) == ("hr-1", "firing", T0)
    assert last_true == clock()
