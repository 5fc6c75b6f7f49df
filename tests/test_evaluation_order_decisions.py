"""Each rule decided in turn: its transitions recorded and handed on before the next rule
is measured, each rule at the time its read of the lake was taken."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

import polars as pl
import pytest

from agentwatch.alerts.evaluation.evaluator import Evaluator, RuleEvaluation
from agentwatch.alerts.evaluation.reads import RuleRead
from agentwatch.alerts.governance.catalog import parse_catalog
from agentwatch.alerts.rules import Rule
from agentwatch.processors.store.lake import LakeStore
from tests.evaluation_helpers import (
    BURST,
    S,
    checks,
    rule,
    slow_rules,
    slow_run,
    store_with,
)
from tests.frames import at


def test_each_rules_transitions_reach_the_rule_sink_before_the_next_rule_is_measured(
    tmp_path: Path,
) -> None:
    burst = rule("Burst", "failed_check_rate", min_samples=10)
    run = slow_run(tmp_path, [rule("Slow"), burst], 5, at(60), urgent={"Burst"})
    run.evaluator.evaluate(on_rule=lambda r: run.log.append(f"decided {r.rule}"))
    assert run.log == ["decided Burst", "measure slow at 09:01:00", "decided Slow"]


def test_transitions_are_recorded_before_the_rule_sink_sees_them(tmp_path: Path) -> None:
    burst = rule("Burst", "failed_check_rate", min_samples=10)
    run = slow_run(tmp_path, [burst], 5, at(60), urgent=set())
    store = LakeStore(run.evaluator.db)
    recorded: list[list[str]] = []
    run.evaluator.evaluate(
        on_rule=lambda r: recorded.append(store.read_log("alert_events")["rule"].to_list())
    )
    assert recorded == [["Burst"]]


def test_on_a_live_clock_each_rule_is_evaluated_at_the_time_its_read_was_taken(
    tmp_path: Path,
) -> None:
    run = slow_run(tmp_path, [rule("Slow"), BURST], 10, at(60), urgent={BURST.name})
    run.evaluator.evaluate(on_rule=run.on_rule, recheck=5 * S)
    [pending] = run.evaluator.states.alerts
    assert pending.starts_at == at(60)
    assert run.log == [
        "decided AgentViolationBurst at 09:01:00 pending",
        "measure slow at 09:01:00",  # the evaluation's read was taken then
        "decided Slow at 09:01:00",
    ]
    log = LakeStore(run.evaluator.db).read_log("alert_events")
    assert log["ts"].to_list() == [at(60)]


def test_an_urgent_alert_fires_while_slow_rules_are_still_being_measured(
    tmp_path: Path,
) -> None:
    burst = dataclasses.replace(BURST, for_=30 * S)
    slow = slow_rules(3)
    run = slow_run(tmp_path, [*slow, burst], 20, at(30), urgent={burst.name})
    evaluation = run.evaluator.evaluate(on_rule=run.on_rule, recheck=15 * S)
    assert [line for line in run.log if "AgentViolationBurst" in line or "Slow3" in line] == [
        "decided AgentViolationBurst at 09:00:30 pending",
        "decided AgentViolationBurst at 09:00:50",
        "decided AgentViolationBurst at 09:01:10 firing",  # 40 s after pending: for is 30 s
        "decided Slow3 at 09:00:30",  # over the evaluation's read, taken after the first round
    ]
    assert [t.alert.state for t in evaluation.transitions] == ["pending", "firing"]
    assert [v.rule for v in evaluation.verdicts].count("AgentViolationBurst") == 1


def test_an_urgent_alert_fires_while_the_others_read_of_the_lake_is_still_being_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = dataclasses.replace(BURST, for_=30 * S)
    run = slow_run(tmp_path, [rule("Slow"), burst], 0, at(60), urgent={burst.name})
    fired = threading.Event()
    take = RuleRead.take.__func__  # type: ignore[attr-defined]

    def slow_others(
        cls: type[RuleRead], db: Path, when: dt.datetime, rules: list[Rule], *a: object
    ) -> RuleRead:
        read: RuleRead = take(cls, db, when, rules, *a)
        if burst in rules:
            run.clock.advance(10)  # each round of the urgent rule takes 10 s
        else:  # the others' read is taken until the urgent alert has fired
            fired.wait(10)
        return read

    def on_rule(result: RuleEvaluation) -> None:
        run.on_rule(result)
        if any(t.alert.state == "firing" for t in result.transitions):
            fired.set()

    monkeypatch.setattr(RuleRead, "take", classmethod(slow_others))
    run.evaluator.evaluate(on_rule=on_rule, recheck=5 * S)
    assert run.log[:4] == [
        "decided AgentViolationBurst at 09:01:00 pending",
        "decided AgentViolationBurst at 09:01:10",
        "decided AgentViolationBurst at 09:01:20",
        "decided AgentViolationBurst at 09:01:30 firing",  # its `for` ran out meanwhile
    ]
    assert run.log[-2:] == [  # (after a round more while the read ends, or none)
        "measure slow at 09:01:10",  # the others' read was begun after the first round
        "decided Slow at 09:01:10",
    ]


def test_an_evaluation_at_a_given_time_measures_every_rule_once_at_that_time(
    tmp_path: Path,
) -> None:
    slow = [rule(f"Slow{i}") for i in range(1, 4)]
    run = slow_run(tmp_path, [*slow, BURST], 20, at(0), urgent={BURST.name})
    run.evaluator.evaluate(at(60), on_rule=run.on_rule, recheck=S)
    assert run.log == [
        "decided AgentViolationBurst at 09:01:00 pending",
        "measure slow at 09:01:00",  # one query for the three rules of the same window
        "decided Slow1 at 09:01:00",
        "decided Slow2 at 09:01:00",
        "decided Slow3 at 09:01:00",
    ]


def test_transitions_recorded_before_a_failed_recording_reach_the_next_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = store_with(tmp_path, checks(0, 120, 60))
    first = rule("First", "failed_check_rate", min_samples=10)
    second = rule("Second", "failed_check_rate", min_samples=10)
    evaluator = Evaluator(db, [first, second], parse_catalog({"agents": []}))
    real = evaluator.store.append_log
    calls = 0

    def full_disk_on_the_second(table: str, frame: pl.DataFrame) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("No space left on device")
        real(table, frame)

    monkeypatch.setattr(evaluator.store, "append_log", full_disk_on_the_second)
    with pytest.raises(OSError):
        evaluator.evaluate(at(60))
    assert [a.rule for a in evaluator.states.alerts] == ["First"]
    evaluation = evaluator.evaluate(at(61))
    assert [(t.alert.rule, t.alert.state) for t in evaluation.transitions] == [
        ("First", "firing"),  # recorded by the failed evaluation, reported by this one
        ("Second", "firing"),
    ]
