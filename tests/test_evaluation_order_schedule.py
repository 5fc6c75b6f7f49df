"""The order rules are measured in: urgent rules first and again between slow rules, but
at most half of an evaluation, and the loop woken when an urgent alert's `for` runs out."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from agentwatch.alerts.evaluation.evaluator import Evaluation, Evaluator, RuleEvaluation, schedule
from agentwatch.alerts.evaluation.loop import run_loop
from agentwatch.alerts.rules import Rule, load_rules
from agentwatch.clock import ManualClock
from tests.evaluation_helpers import (
    BURST,
    CATALOG,
    S,
    checks,
    rule,
    store_with,
)
from tests.frames import at


def names(rules: list[Rule]) -> list[str]:
    return [r.name for r in rules]


def test_rules_whose_alerts_open_breakers_are_measured_first() -> None:
    rules = [rule("Cost"), rule("Burst"), rule("Latency"), rule("Retired")]
    order = schedule(rules, lambda r: r.name in {"Burst", "Retired"}, None, ManualClock(at(0)))
    assert names(list(order)) == ["Burst", "Retired", "Cost", "Latency"]


def test_urgent_rules_with_a_pending_alert_are_measured_before_the_other_urgent_ones() -> None:
    rules = [rule("Cost"), rule("Retired"), rule("Burst"), rule("Tools")]
    urgent = {"Retired", "Burst", "Tools"}
    order = schedule(rules, lambda r: r.name in urgent, None, ManualClock(at(0)), pending={"Burst"})
    assert names(list(order)) == ["Burst", "Retired", "Tools", "Cost"]


def test_urgent_rules_are_measured_again_between_slow_rules_once_the_recheck_passed() -> None:
    clock = ManualClock(at(0))
    rules = [rule("Burst"), *(rule(f"Slow{i}") for i in range(1, 5))]
    order = []
    for r in schedule(rules, lambda r: r.name == "Burst", 2 * S, clock):
        order.append(r.name)
        clock.advance(1)  # every rule takes a second to measure
    assert order == ["Burst", "Slow1", "Burst", "Slow2", "Burst", "Slow3", "Burst", "Slow4"]


def test_urgent_rules_take_at_most_half_of_an_evaluation_however_slow_they_are() -> None:
    clock = ManualClock(at(0))
    rules = [rule("Burst"), *(rule(f"Slow{i}") for i in range(1, 5))]
    order = []
    for r in schedule(rules, lambda r: r.name == "Burst", S, clock):
        order.append(r.name)
        clock.advance(3 if r.name == "Burst" else 1)
    assert order == ["Burst", "Slow1", "Slow2", "Slow3", "Burst", "Slow4"]


def test_urgent_rules_are_measured_again_as_soon_as_a_pending_alerts_for_runs_out() -> None:
    clock = ManualClock(at(0))
    rules = [rule("Burst"), *(rule(f"Slow{i}") for i in range(1, 5))]
    order = []
    due = at(2.5)  # an urgent pending alert's `for` runs out then
    for r in schedule(rules, lambda r: r.name == "Burst", 60 * S, clock, lambda: due):
        order.append(r.name)
        clock.advance(1)
    assert order == ["Burst", "Slow1", "Slow2", "Burst", "Slow3", "Slow4"]


def test_the_loop_wakes_up_when_an_urgent_alerts_for_runs_out(tmp_path: Path) -> None:
    db = store_with(tmp_path, checks(0, 180, 90))
    clock = ManualClock(at(60))
    evaluator = Evaluator(db, [BURST], CATALOG, clock=clock, urgent=lambda r: True)
    seen: list[list[str]] = []

    def sink(evaluation: Evaluation) -> None:
        seen.append([t.alert.state for t in evaluation.transitions])
        clock.now = at(119.9)  # its `for` (1 min from 60 s) runs out in 0.1 s

    began = time.monotonic()
    run_loop(evaluator, sink, interval=600, stop=threading.Event(), max_evaluations=2)
    assert time.monotonic() - began < 60  # not the 600 s interval
    assert seen == [["pending"], []]


def test_urgent_rules_are_measured_again_while_what_the_others_read_is_being_taken() -> None:
    clock = ManualClock(at(0))
    rules = [rule("Burst"), rule("Slow1"), rule("Slow2")]
    waits: list[float] = []

    def ready(wait: dt.timedelta) -> bool:  # the others' read takes 2.5 s
        waits.append(wait.total_seconds())
        clock.now = min(clock.now + wait, at(2.5))
        return clock.now >= at(2.5)

    order = [r.name for r in schedule(rules, lambda r: r.name == "Burst", S, clock, ready=ready)]
    assert order == ["Burst", "Burst", "Burst", "Slow1", "Slow2"]
    assert waits[:3] == [1.0, 1.0, 1.0]  # a round a second until it is there


def test_an_urgent_alert_due_before_slow_sinks_would_be_done_is_decided_before_them(
    tmp_path: Path,
) -> None:
    db = store_with(tmp_path, checks(0, 180, 90))
    clock = ManualClock(at(59.9))
    evaluator = Evaluator(db, [BURST], CATALOG, clock=clock, urgent=lambda r: True)
    log: list[str] = []
    stop = threading.Event()

    def on_rule(result: RuleEvaluation) -> None:
        log.extend(t.alert.state for t in result.transitions)

    def sink(evaluation: Evaluation) -> None:
        states = [t.alert.state for t in evaluation.transitions]
        log.append(" ".join(["sink", *states]))
        if clock.now < at(119):
            clock.advance(59.8)  # a slow notifier: its `for` (1 min) runs out in 0.2 s
        if "firing" in states:
            stop.set()

    def tick() -> None:
        clock.advance(0.1)

    run_loop(
        evaluator, sink, interval=600, stop=stop, on_rule=on_rule, before_each=tick,
        max_evaluations=4,
    )  # fmt: skip
    assert log == ["pending", "sink pending", "firing", "sink", "sink firing"]


def test_without_a_recheck_every_rule_is_measured_once() -> None:
    clock = ManualClock(at(0))
    rules = [rule("Slow1"), rule("Burst"), rule("Slow2")]
    order = []
    for r in schedule(rules, lambda r: r.name == "Burst", None, clock):
        order.append(r.name)
        clock.advance(60)
    assert order == ["Burst", "Slow1", "Slow2"]


def test_the_shipped_rules_that_contain_agents_are_the_urgent_ones(tmp_path: Path) -> None:
    from tests.test_notify_response import _response, make
    from tests.test_runbooks import FakeTopic

    response = _response(tmp_path, make()[0], FakeTopic())
    urgent = {r.name for r in load_rules() if response.urgent(r)}
    assert {"AgentViolationBurst", "RetiredAgentActive", "UnapprovedTool"} <= urgent
    assert "AgentViolationRateHigh" not in urgent  # its runbook only tells the owner
    assert "CanaryRegression" not in urgent  # a rollback waits for approval: no breaker
