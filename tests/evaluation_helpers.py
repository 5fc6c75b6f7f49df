"""What the alert evaluator tests share: a violation-burst rule, a catalog, a store of
policy checks, and slow rules that take the clock's time to measure."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from agentwatch.alerts.evaluation.evaluator import Evaluator, RuleEvaluation
from agentwatch.alerts.rules import Rule, Sample, Window, metrics
from agentwatch.alerts.rules.metrics import MetricRegistry
from agentwatch.clock import ManualClock
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.catalog_helpers import HR, catalog
from tests.frames import at, events, store_batch

S = dt.timedelta(seconds=1)
MINUTE = dt.timedelta(minutes=1)

BURST = Rule(
    name="AgentViolationBurst",
    metric="failed_check_rate",
    op=">",
    threshold=0.05,
    window=MINUTE,
    for_=MINUTE,
    min_samples=10,
    severity="critical",
    labels={"category": "safety"},
    annotations={"summary": "{{ $labels.agent_id }} at {{ $value | humanizePercentage }}"},
)

CATALOG = catalog(HR)


def store_with(tmp_path: Path, *frames: pl.DataFrame) -> Path:
    segments = LakeStore(tmp_path / METADATA_FILE)
    for frame in frames:
        store_batch(segments, frame)
    segments.prepare()
    return Path(segments.db)


def checks(start_s: float, count: int, violations: int, agent: str = "hr-1") -> pl.DataFrame:
    """``count`` policy checks one per second from ``start_s``, the first ``violations`` bad."""
    return events(
        *(
            {
                "agent_id": agent,
                "kind": "policy_check",
                "ts": at(start_s + i),
                "outcome": "violation" if i < violations else "pass",
                "event_id": f"{agent}-{start_s}-{i}",
            }
            for i in range(count)
        )
    )


def rule(name: str, metric: str = "slow", **kw: object) -> Rule:
    return Rule(name, metric, ">", 0.0, MINUTE, **kw)  # type: ignore[arg-type]


def slow_rules(count: int) -> list[Rule]:
    """Slow rules of different windows: each takes a query of its own."""
    return [dataclasses.replace(rule(f"Slow{i}"), window=i * MINUTE) for i in range(1, count + 1)]


@dataclass
class SlowMetric:
    """A metric that takes ``seconds`` of the injected clock to measure, and says when."""

    clock: ManualClock
    seconds: float
    log: list[str]
    name: str = "slow"
    help: str = "a slow query"
    by: tuple[str, ...] = ("agent_id",)
    unit: str = ""

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
