"""The reads of the lake an evaluation takes: one for all its rules and a fresh one per
round of the urgent rules, reaching back as far as a rule reads and copying only the
tables and columns its queries name."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from agentwatch.alerts.evaluation.evaluator import Evaluation, Evaluator
from agentwatch.alerts.evaluation.reads import UNKNOWN_BEFORE, RuleRead, needs, reach
from agentwatch.alerts.rules import Metric, Rule, Sample, Window, load_rules, metrics
from agentwatch.alerts.rules.metrics import MetricRegistry, SqlMetric
from agentwatch.clock import ManualClock
from agentwatch.processors.store.lake import LakeStore
from tests.evaluation_helpers import (
    BURST,
    CATALOG,
    MINUTE,
    S,
    SlowMetric,
    checks,
    slow_rules,
    slow_run,
    store_with,
)
from tests.frames import at


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

    @property
    def unit(self) -> str:
        return self.metric.unit

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
    wanted = needs([registry["failed_check_rate"]])
    # Whole minutes come from the rollups, the window's partial minutes from events.
    assert list(wanted) == ["events", "minute_rollups"]
    columns = wanted["events"]
    assert columns is not None and "ts" in columns and "agent_id" in columns
    assert "cost_usd" not in columns
    rollup_columns = wanted["minute_rollups"]
    assert rollup_columns is not None and "window_start" in rollup_columns
    everything = SqlMetric("all", "every column", ("agent_id",), "SELECT * FROM events")
    assert needs([registry["failed_check_rate"], everything])["events"] is None
    assert needs([OwnRead(registry["failed_check_rate"])]) == dict.fromkeys(
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
