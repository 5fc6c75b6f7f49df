"""A rule read copies of the raw events only what its rules' queries read: the whole
reach of a metric that reads events itself, the partial minutes at each end of each
window for one that reads its whole minutes from the rollups; every shipped rule
measures the same over it as over all the events of its reach."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agentwatch.alerts.evaluation.evaluator import Evaluator
from agentwatch.alerts.evaluation.reads import (
    RuleRead,
    event_spans,
    lookback,
    reads_raw_events,
    snapshot_rule_tables,
)
from agentwatch.alerts.governance.catalog import AgentEntry, Catalog
from agentwatch.alerts.rules import Rule, load_rules, metrics
from agentwatch.alerts.rules.metrics import SqlMetric
from agentwatch.frames import register
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.rollups import window_sql
from bench.traffic import MODELS, Fleet, Profile, generate
from tests.frames import store_batch

START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
HOURS = 27  # more than the longest shipped window (a day) and its reach before it
MINUTE = dt.timedelta(minutes=1)
# Agent 0 may use no tool: the governance rules have something to count.
CATALOG = Catalog(
    {
        f"agent-{i}": AgentEntry(
            agent_id=f"agent-{i}",
            owner="o",
            oncall="o",
            risk_tier="low",
            status="active",
            approved_models=frozenset(MODELS),
            approved_tools=frozenset() if i == 0 else None,
        )
        for i in range(3)
    }
)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fleet = Fleet({f"agent-{i}": Profile(sessions_per_hour=12) for i in range(3)})
    frame = generate(fleet, START, HOURS, seed=5)
    store = LakeStore(tmp_path_factory.mktemp("reads") / METADATA_FILE)
    batches = frame.with_columns(_batch=(frame["ts"] - START).dt.total_hours() // 3)
    for batch in batches.partition_by("_batch", maintain_order=True, include_key=False):
        store_batch(store, batch)
    store.prepare()
    return Path(store.db)


def measured(evaluator: Evaluator, read: RuleRead, rules: list[Rule]) -> dict[str, object]:
    return {
        r.name: sorted(
            (sorted(m.labels.items()), m.value, m.samples)
            for m in evaluator.measure_rule(read.con, r, read.at, {})
        )
        for r in rules
    }


@pytest.mark.parametrize("seconds_before_end", [0.0, 17.5, 42.25, 60.0, 3600 + 7.75])
def test_every_shipped_rule_measures_the_same_over_a_read_as_over_all_its_events(
    history: Path, seconds_before_end: float
) -> None:
    rules, registry = load_rules(), metrics()
    at = START + dt.timedelta(hours=HOURS, seconds=-seconds_before_end)
    evaluator = Evaluator(history, rules, CATALOG)
    narrow = RuleRead.take(history, at, rules, registry, CATALOG)
    whole = RuleRead(at, connect_lake(history))
    snapshot_rule_tables(whole.con, at, lookback(rules, registry))
    register(whole.con, "agent_catalog", CATALOG.frame())
    try:
        got, expected = measured(evaluator, narrow, rules), measured(evaluator, whole, rules)
        copied = narrow.con.execute("SELECT count(*) FROM temp.events").fetchone()
        everything = whole.con.execute("SELECT count(*) FROM temp.events").fetchone()
    finally:
        narrow.close()
        whole.close()
    assert got == expected
    assert any(values for values in expected.values())  # the rules measured something
    assert copied is not None and everything is not None and copied[0] < everything[0] / 5


def test_a_metric_reads_events_raw_unless_its_only_reads_are_its_windows_edges() -> None:
    registry = metrics()
    assert not reads_raw_events(registry["failed_check_rate"])
    assert not reads_raw_events(registry["silence_ratio"])
    assert reads_raw_events(registry["containment_rate"])
    assert reads_raw_events(registry["security_session_share"])
    edges_and_raw = SqlMetric(
        "mixed",
        "window rows and a raw read",
        ("agent_id",),
        f"SELECT e.agent_id, count(*) AS value, 1 AS samples FROM {window_sql()} AS e "
        "WHERE e.agent_id IN (SELECT agent_id FROM events WHERE kind = 'escalation') "
        "GROUP BY 1",
    )
    assert reads_raw_events(edges_and_raw)
    assert reads_raw_events(SqlMetric("bad", "no query", ("a",), "SELEC nothing"))


def test_a_long_window_read_through_the_rollups_copies_only_its_edge_minutes() -> None:
    registry = metrics()
    day = Rule("Spend", "cost_usd", ">", 1.0, dt.timedelta(days=1))
    at = START + dt.timedelta(hours=30, seconds=12.5)
    spans = event_spans([day], registry, at)
    assert sum((last - first for first, last in spans), dt.timedelta(0)) < 2 * MINUTE
    assert spans[0][0] == at - day.window and spans[-1][1] == at
    raw = Rule("Contained", "containment_rate", "<", 0.5, dt.timedelta(minutes=15))
    assert event_spans([day, raw], registry, at)[-1] == (at - dt.timedelta(minutes=75), at)
