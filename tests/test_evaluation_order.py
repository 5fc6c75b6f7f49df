"""The order rules are decided in: urgent rules first and often, each rule's transitions
handed on as soon as it is decided, each rule at the time its read of the lake was taken:
one read per evaluation, and one fresh read per round of the urgent rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pytest

from agentwatch.alerts.evaluation.evaluator import Evaluation, Evaluator, RuleEvaluation, schedule
from agentwatch.alerts.evaluation.loop import run_loop
from agentwatch.alerts.evaluation.reads import UNKNOWN_BEFORE, RuleRead, needs, reach
from agentwatch.alerts.governance.catalog import parse_catalog
from agentwatch.alerts.rules import Metric, Rule, Sample, Window, load_rules, metrics
from agentwatch.alerts.rules.metrics import MetricRegistry, SqlMetric
from agentwatch.clock import ManualClock
from agentwatch.processors.store.lake import LakeStore
from tests.frames import at
from tests.test_evaluator import BURST, CATALOG, checks, store_with

S = dt.timedelta(seconds=1)
MINUTE = 60 * S


def rule(name: str, metric: str = "slow", **kw: object) -> Rule:
    return Rule(name, metric, ">", 0.0, MINUTE, **kw)  # type: ignore[arg-type]


def slow_rules(count: int) -> list[Rule]:
    """Slow rules of different windows: each takes a query of its own."""
    return [dataclasses.replace(rule(f"Slow{i}"), window=i * MINUTE) for i in range(1, count + 1)]


def names(rules: list[Rule]) -> list[str]:
    return [r.name for r in rules]


@dataclass
class SlowMetric:
    """A metric that takes ``seconds`` of the injected clock to measure, and says when."""

    clock: ManualClock
    seconds: float
    log: list[str]
    name: str = "slow"
    help: str = "a slow query"
    by: tuple[str, ...] = ("agent_id",)

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
        self.log.append(f"measure slow at {window.end:%H:%M:%S}")
        self.clock.advance(self.seconds)
        return []


@dataclass
class Run:
    evaluator: Evaluator
    clock: ManualClock
    log: list[str] = field(default_factory=list)

    def on_rule(self, result: RuleEvaluation) -> None:
        states = ",".join(t.alert.state for t in result.transitions)
        self.log.append(f"decided {result.rule} at {result.at:%H:%M:%S} {states}".rstrip())


def slow_run(
    tmp_path: Path, rules: list[Rule], seconds: float, start: dt.datetime, urgent: set[str]
) -> Run:
    """BURST's agent fails every check for 90 s; each ``slow`` rule takes ``seconds``."""
    db = store_with(tmp_path, checks(0, 180, 90))
    clock = ManualClock(start)
    log: list[str] = []
    registry = MetricRegistry(metrics().values())
    registry.register(SlowMetric(clock, seconds, log))
    evaluator = Evaluator(
        db, rules, CATALOG, clock=clock, registry=registry, urgent=lambda r: r.name in urgent
    )
    return Run(evaluator, clock, log)


# --------------------------------------------------------------------------- schedule


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


# --------------------------------------------------------------------------- the evaluator


def test_each_rules_transitions_reach_the_rule_sink_before_the_next_rule_is_measured(
    tmp_path: Path,
) -> None:
    burst = rule("Burst", "violation_rate", min_samples=10)
    run = slow_run(tmp_path, [rule("Slow"), burst], 5, at(60), urgent={"Burst"})
    run.evaluator.evaluate(on_rule=lambda r: run.log.append(f"decided {r.rule}"))
    assert run.log == ["decided Burst", "measure slow at 09:01:00", "decided Slow"]


def test_transitions_are_recorded_before_the_rule_sink_sees_them(tmp_path: Path) -> None:
    burst = rule("Burst", "violation_rate", min_samples=10)
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
    first = rule("First", "violation_rate", min_samples=10)
    second = rule("Second", "violation_rate", min_samples=10)
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


# --------------------------------------------------------------------------- shared read


@dataclass(frozen=True)
class OwnRead:
    """The same metric, but not known to be one query over a window: never shared."""

    metric: Metric

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def help(self) -> str:
        return self.metric.help

    @property
    def by(self) -> tuple[str, ...]:
        return self.metric.by

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
        return self.metric.measure(con, window)


def test_a_read_reaches_back_as_far_as_a_rule_reads() -> None:
    registry = metrics()
    rules = {r.name: r for r in load_rules()}
    burst, floor = rules["AgentViolationBurst"], rules["AgentContainmentBelowFloor"]
    assert reach(burst, registry[burst.metric]) == MINUTE
    # containment looks for escalations up to an hour before its 15 minute window
    assert reach(floor, registry[floor.metric]) == 75 * MINUTE
    spike = dataclasses.replace(burst, change="ratio", window=5 * MINUTE)
    assert reach(spike, registry[spike.metric]) == 15 * MINUTE  # and the two windows before
    assert reach(burst, OwnRead(registry[burst.metric])) == MINUTE + UNKNOWN_BEFORE


def test_a_read_copies_only_the_tables_and_columns_the_queries_name() -> None:
    registry = metrics()
    wanted = needs([registry["violation_rate"]])
    # Whole minutes come from the rollups, the window's partial minutes from events.
    assert list(wanted) == ["events", "minute_rollups"]
    columns = wanted["events"]
    assert columns is not None and "ts" in columns and "agent_id" in columns
    assert "cost_usd" not in columns
    rollup_columns = wanted["minute_rollups"]
    assert rollup_columns is not None and "window_start" in rollup_columns
    everything = SqlMetric("all", "every column", ("agent_id",), "SELECT * FROM events")
    assert needs([registry["violation_rate"], everything])["events"] is None
    assert needs([OwnRead(registry["violation_rate"])]) == dict.fromkeys(
        [
            "events",
            "minute_rollups",
            "drift_scores",
            "releases",
            "catalog_changes",
            "access_reviews",
        ]
    )


class Reads:
    """Counts the reads of the lake an evaluator takes, and what each read copied."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: list[tuple[dt.datetime, list[str]]] = []
        take = RuleRead.take.__func__  # type: ignore[attr-defined]

        def counted(
            cls: type[RuleRead], db: Path, at: dt.datetime, rules: list[Rule], *a: object
        ) -> RuleRead:
            self.taken.append((at, sorted(r.name for r in rules)))
            read: RuleRead = take(cls, db, at, rules, *a)
            return read

        monkeypatch.setattr(RuleRead, "take", classmethod(counted))


def test_an_evaluation_reads_the_lake_once_for_all_its_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = store_with(tmp_path, checks(0, 600, 200))
    rules = load_rules()
    reads = Reads(monkeypatch)
    evaluator = Evaluator(db, rules, CATALOG, urgent=lambda r: r.name == BURST.name)
    evaluator.evaluate(at(600))
    assert reads.taken == [(at(600), sorted(r.name for r in rules))]


def test_on_a_live_clock_urgent_rules_take_a_fresh_read_each_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = dataclasses.replace(BURST, for_=30 * S)
    slow = slow_rules(3)
    run = slow_run(tmp_path, [*slow, burst], 20, at(30), urgent={burst.name})
    reads = Reads(monkeypatch)
    run.evaluator.evaluate(on_rule=run.on_rule, recheck=15 * S)
    assert reads.taken == [
        (at(30), [burst.name]),
        (at(30), ["Slow1", "Slow2", "Slow3"]),  # the others' read, once
        (at(50), [burst.name]),
        (at(70), [burst.name]),
    ]


def test_an_urgent_round_sees_events_landed_since_the_last(tmp_path: Path) -> None:
    db = store_with(tmp_path, checks(0, 30, 0))
    clock = ManualClock(at(30))
    log: list[str] = []
    store = LakeStore(db)

    @dataclass
    class Landing(SlowMetric):
        """Slow rules while which the agent starts failing every check."""

        landed: bool = False

        def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
            if not self.landed:
                self.landed = True
                store.insert("events", checks(window.end.timestamp() - at(0).timestamp(), 20, 20))
            return super().measure(con, window)

    registry = MetricRegistry(metrics().values())
    registry.register(Landing(clock, 20, log))
    burst = dataclasses.replace(BURST, min_samples=10)
    evaluator = Evaluator(
        db, [*slow_rules(2), burst], CATALOG, clock=clock, registry=registry,
        urgent=lambda r: r.name == burst.name,
    )  # fmt: skip
    evaluation = evaluator.evaluate(recheck=15 * S)
    decided = [v for v in evaluation.verdicts if v.rule == burst.name]
    assert [v.outcome for v in decided] == ["true"]  # the second round's, over the new checks


def verdicts(evaluation: Evaluation) -> list[tuple[str, str, str, float | None, int | None]]:
    return sorted(
        (v.rule, str(sorted(v.labels.items())), v.outcome, v.value, v.samples)
        for v in evaluation.verdicts
    )


def test_rules_measured_over_the_shared_read_see_what_the_store_holds(tmp_path: Path) -> None:
    db = store_with(tmp_path, checks(0, 600, 200), checks(0, 600, 5, agent="hr-2"))
    rules = load_rules()
    shared = Evaluator(db, rules, CATALOG).evaluate(at(600))
    own = MetricRegistry(OwnRead(m) for m in metrics().values())
    alone = Evaluator(db, rules, CATALOG, registry=own).evaluate(at(600))
    assert verdicts(shared) == verdicts(alone)
    assert any(v.outcome == "true" for v in shared.verdicts)
