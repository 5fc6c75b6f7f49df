"""alerts backtest: the shipped rules replayed over stored history, nothing notified.

The history is the demo's incident (an agent whose guardrails start failing 60% of 20
checks a second, as the demo's misbehaving SDK agent does) and each shipped scenario,
simulated around its change straight into a store (no broker)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from agentwatch.alerts.evaluation.backtest import Backtest, backtest
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.rules import Sample, SqlMetric, Window, load_rules, metrics
from agentwatch.cli import main
from agentwatch.frames import register
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.scenario_file import load_scenario
from agentwatch.processors.landing.decode import RawBatch, decode_batch
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.frames import events, store_batch

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))
T0 = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
AGENT = "hr-assistant-1"


def _store(tmp: Path, frame: pl.DataFrame) -> Path:
    store = LakeStore(tmp / METADATA_FILE)
    store.prepare()
    store_batch(store, frame)
    return Path(store.db)


def _incident(minutes_calm: int = 4, minutes_burst: int = 3) -> pl.DataFrame:
    """Sessions of five steps at 20 steps a second; from the burst on, 60% of checks fail."""
    entry = load_catalog(EXAMPLE_CATALOG).get(AGENT)
    assert entry is not None
    tool = min(entry.approved_tools or {"kb.search"})
    version = entry.pinned.agent_version
    rows: list[dict[str, Any]] = []
    steps = (minutes_calm + minutes_burst) * 60 * 20
    for i in range(steps):
        ts = T0 + dt.timedelta(seconds=i / 20)
        burst = i >= minutes_calm * 60 * 20
        failing = burst and (i * 7919) % 10 < 6
        sid = f"s{i // 5}"
        rows += [
            {"ts": ts, "agent_id": AGENT, "session_id": sid, "kind": "policy_check",
             "agent_version": version, "policy_id": "pii-output",
             "outcome": "violation" if failing else "pass"},
            {"ts": ts, "agent_id": AGENT, "session_id": sid, "kind": "tool_call",
             "agent_version": version, "tool_name": tool, "latency_ms": 5.0},
        ]  # fmt: skip
    frame = events(*rows)
    return frame.with_columns(event_id=pl.format("e{}", pl.int_range(frame.height)))


def test_the_demo_incident_would_have_fired_the_violation_burst(tmp_path: Path) -> None:
    db = _store(tmp_path, _incident())
    result = backtest(
        db, load_rules(), load_catalog(EXAMPLE_CATALOG), T0, T0 + dt.timedelta(minutes=7),
        dt.timedelta(seconds=10),
    )  # fmt: skip
    fired = {(e.rule, e.labels.get("agent_id")) for e in result.fired}
    assert ("AgentViolationBurst", AGENT) in fired
    burst = next(e for e in result.fired if e.rule == "AgentViolationBurst")
    assert burst.fired is not None
    assert T0 + dt.timedelta(minutes=4) < burst.fired <= T0 + dt.timedelta(minutes=5, seconds=30)
    assert result.errors == {}


def test_a_healthy_stretch_fires_nothing(tmp_path: Path) -> None:
    db = _store(tmp_path, _incident(minutes_calm=6, minutes_burst=0))
    result = backtest(
        db, load_rules(), load_catalog(EXAMPLE_CATALOG), T0, T0 + dt.timedelta(minutes=6),
        dt.timedelta(seconds=30),
    )  # fmt: skip
    assert result.fired == [] and result.evaluations == 13


def test_the_command_prints_and_writes_json_and_writes_nothing_to_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path, _incident())
    out = tmp_path / "backtest.json"
    start = T0.isoformat()
    end = (T0 + dt.timedelta(minutes=7)).isoformat()
    args = ["alerts", "backtest", "--db", str(db), "--from", start, "--to", end,
            "--interval", "15", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "AgentViolationBurst" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
    doc = json.loads(out.read_text())
    assert doc["alerts"][0]["rule"] == "AgentViolationBurst" and doc["alerts"][0]["fired"] == 1
    con = connect_lake(db)
    try:
        logged = {
            table: con.execute(f"SELECT count(*) FROM {table}").fetchone()
            for table in ("alert_events", "notifications", "actions")
        }
    finally:
        con.close()
    assert logged == {"alert_events": (0,), "notifications": (0,), "actions": (0,)}


def test_a_relative_range_without_events_moves_to_the_data_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path, _incident())
    assert main(["alerts", "backtest", "--db", str(db), "--from", "6m", "--interval", "30"]) == 0
    captured = capsys.readouterr()
    assert "no events between" in captured.err and "relative to it" in captured.err
    assert "AgentViolationBurst" in captured.out


def test_a_fixed_range_without_events_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path, _incident())
    args = ["alerts", "backtest", "--db", str(db), "--from", "2020-01-01", "--to", "2020-01-02"]
    assert main(args) == 1
    assert "no events between" in capsys.readouterr().err


@pytest.mark.parametrize(("start", "end"), [("now", "now-1d"), ("now-1h", "now-1h")])
def test_a_reversed_or_empty_range_is_a_usage_error_naming_both_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str, end: str
) -> None:
    db = _store(tmp_path, _incident())
    capsys.readouterr()  # what storing the history logged
    assert main(["alerts", "backtest", "--db", str(db), "--from", start, "--to", end]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"agentwatch alerts backtest: --from {start} must be before --to {end}"
    ]


def _scenario_store(tmp: Path, path: Path) -> tuple[Path, dt.datetime, str]:
    """Two hours of the scenario's fleet, its first change after one, landed as the
    processor would (the contract's JSON through the decoder)."""
    scenario = load_scenario(path)
    hints = scenario.run
    agents = make_agents(hints.agents or 4, hints.seed or 0)
    change = scenario.changes[0] if scenario.changes else None
    offset = (change.at.offset_s or 0.0) if change is not None else 0.0
    origin = T0 - dt.timedelta(seconds=offset) + dt.timedelta(hours=1)  # change at T0 + 1h
    scenario.apply(agents, origin.timestamp())
    fleet = Fleet(agents, seed=hints.seed or 0, start=T0, events_per_second=hints.sim_rate or 3)
    encode = msgspec.json.Encoder().encode
    values = [encode(e) for e in fleet.events_until(T0 + dt.timedelta(hours=2))]
    batch = RawBatch("t", 0, list(range(len(values))), [0] * len(values), [None] * len(values),
                     values)  # fmt: skip
    decoded = decode_batch(batch)
    assert decoded.dead_letters.height == 0
    touched = change.agents[0] if change is not None and change.agents else ""
    return _store(tmp, decoded.events), origin, touched


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_the_shipped_scenarios_replay(tmp_path: Path, path: Path) -> None:
    db, _, touched = _scenario_store(tmp_path, path)
    result = backtest(
        db, load_rules(), load_catalog(EXAMPLE_CATALOG), T0 + dt.timedelta(minutes=50),
        T0 + dt.timedelta(hours=2), dt.timedelta(minutes=5),
    )  # fmt: skip
    assert result.errors == {} and result.evaluations == 15
    if path.stem == "violation-burst":
        fired = {(e.rule, e.labels.get("agent_id")) for e in result.fired}
        assert ("AgentViolationRateHigh", touched) in fired


def _episodes(result: Backtest) -> list[tuple[Any, ...]]:
    return sorted(
        (e.rule, sorted(e.labels.items()), e.severity, e.started, e.fired, e.resolved)
        for e in result.episodes
    )


@pytest.mark.parametrize("path", [p for p in SCENARIOS if p.stem == "violation-burst"])
def test_replaying_in_batches_decides_as_one_instant_at_a_time(tmp_path: Path, path: Path) -> None:
    db, _, _ = _scenario_store(tmp_path, path)
    rules, catalog = load_rules(), load_catalog(EXAMPLE_CATALOG)
    start, end, every = (
        T0 + dt.timedelta(minutes=50),
        T0 + dt.timedelta(hours=2),
        dt.timedelta(minutes=5),
    )
    batched = backtest(db, rules, catalog, start, end, every, batch=dt.timedelta(minutes=30))
    single = backtest(db, rules, catalog, start, end, every, batch=every)
    assert batched.fired and batched.errors == single.errors == {}
    assert batched.evaluations == single.evaluations == 15
    assert _episodes(batched) == _episodes(single)
    peaks = {(e.rule, tuple(sorted(e.labels.items())), e.started): e.peak for e in single.episodes}
    for e in batched.episodes:
        assert e.peak == pytest.approx(peaks[(e.rule, tuple(sorted(e.labels.items())), e.started)])


def _labels(sample: Sample) -> list[tuple[str, str]]:
    return sorted(sample.labels.items())


def test_every_metric_measures_many_windows_in_one_query_as_one_by_one(tmp_path: Path) -> None:
    db, _, _ = _scenario_store(tmp_path, next(p for p in SCENARIOS if p.stem == "violation-burst"))
    ends = [T0 + dt.timedelta(minutes=m, seconds=s) for m, s in ((61, 0), (75, 17.5), (118, 0))]
    windows = [
        Window(e - w, e) for e in ends for w in (dt.timedelta(minutes=5), dt.timedelta(hours=1))
    ]
    con = connect_lake(db)
    try:
        register(con, "agent_catalog", load_catalog(EXAMPLE_CATALOG).frame())
        for metric in metrics().values():
            assert isinstance(metric, SqlMetric)
            many = metric.measure_windows(con, windows)
            for w in windows:
                one = metric.measure(con, w)
                got, want = sorted(many[w], key=_labels), sorted(one, key=_labels)
                assert [(s.labels, s.samples) for s in got] == [(s.labels, s.samples) for s in want]
                assert [s.value for s in got] == pytest.approx([s.value for s in want]), metric.name
    finally:
        con.close()
