"""The alert state machine on an injected clock, the evaluator over a store, and `alerts run`."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agentwatch.alerts.evaluation.evaluator import Evaluation, Evaluator
from agentwatch.alerts.evaluation.loop import Sources, fan_out, run_loop
from agentwatch.alerts.evaluation.states import (
    AlertStates,
    Measurement,
    Transition,
    restore_alerts,
    transitions_frame,
)
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog, parse_catalog
from agentwatch.alerts.rules import Rule, load_rules, parse_rules
from agentwatch.cli import build_parser, main
from agentwatch.clock import ManualClock
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import CATALOG_FILE
from agentwatch.settings import Settings
from tests.frames import T0, at, events, store_batch

MINUTE = dt.timedelta(minutes=1)

BURST = Rule(
    name="AgentViolationBurst",
    metric="violation_rate",
    op=">",
    threshold=0.05,
    window=MINUTE,
    for_=MINUTE,
    min_samples=10,
    severity="critical",
    labels={"category": "safety"},
    annotations={"summary": "{{ $labels.agent_id }} at {{ $value | humanizePercentage }}"},
)

CATALOG = parse_catalog(
    {
        "agents": [
            {
                "agent_id": "hr-1",
                "owner": "people",
                "oncall": "people-pager",
                "risk_tier": "medium",
                "status": "active",
                "slo": {"p95_latency_ms": 5000},
            }
        ]
    }
)


def Clock(start: dt.datetime = T0) -> ManualClock:
    """A settable clock: tests move time by hand, nothing sleeps."""
    return ManualClock(start)


def m(value: float | None, samples: int = 100, agent: str = "hr-1", **kw: Any) -> Measurement:
    return Measurement({"agent_id": agent}, value, samples, kw.pop("threshold", 0.05), **kw)


def step(states: AlertStates, rule: Rule, now: dt.datetime, *ms: Measurement) -> list[Transition]:
    transitions, _ = states.apply(rule, list(ms), now)
    return transitions


def states_of(transitions: list[Transition]) -> list[tuple[str | None, str]]:
    return [(t.previous, t.alert.state) for t in transitions]


# --------------------------------------------------------------------------- the state machine


def test_a_true_condition_starts_pending() -> None:
    states = AlertStates()
    assert states_of(step(states, BURST, T0, m(0.2))) == [(None, "pending")]


def test_pending_fires_once_the_condition_has_held_for_its_for() -> None:
    states, clock = AlertStates(), Clock()
    step(states, BURST, clock(), m(0.2))
    assert step(states, BURST, clock.advance(30), m(0.2)) == []
    [fired] = step(states, BURST, clock.advance(30), m(0.3))
    assert (fired.previous, fired.alert.state) == ("pending", "firing")
    assert fired.alert.starts_at == T0
    assert fired.alert.value == 0.3


def test_a_rule_without_for_fires_at_once() -> None:
    rule = Rule("Now", "violation_rate", ">", 0.05, MINUTE, severity="critical")
    assert states_of(step(AlertStates(), rule, T0, m(0.2))) == [(None, "firing")]


def test_a_firing_alert_stays_firing_without_new_transitions() -> None:
    states, clock = AlertStates(), Clock()
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    assert step(states, BURST, clock.advance(10), m(0.4)) == []
    assert [a.value for a in states.alerts] == [0.4]


def test_pending_that_clears_resolves_without_having_fired() -> None:
    states, clock = AlertStates(), Clock()
    step(states, BURST, clock(), m(0.2))
    [ended] = step(states, BURST, clock.advance(30), m(0.01))
    assert (ended.previous, ended.alert.state) == ("pending", "resolved")
    assert not ended.resolved_after_firing
    assert states.alerts == []


def test_firing_resolves_when_the_condition_clears() -> None:
    states, clock = AlertStates(), Clock()
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    [ended] = step(states, BURST, clock.advance(10), m(0.01))
    assert ended.resolved_after_firing
    assert ended.alert.ends_at == clock()
    assert ended.alert.starts_at == T0


def test_keep_firing_for_rides_out_a_flapping_condition() -> None:
    rule = Rule(
        "Flappy", "violation_rate", ">", 0.05, MINUTE, keep_firing_for=dt.timedelta(seconds=30)
    )
    states, clock = AlertStates(), Clock()
    assert states_of(step(states, rule, clock(), m(0.2))) == [(None, "firing")]
    for i in range(12):  # two minutes of true, false, true, false ... every 10 s
        assert step(states, rule, clock.advance(10), m(0.2 if i % 2 else 0.01)) == []
    assert [a.state for a in states.alerts] == ["firing"]


def test_keep_firing_for_resolves_once_the_condition_stayed_false_that_long() -> None:
    rule = Rule(
        "Flappy", "violation_rate", ">", 0.05, MINUTE, keep_firing_for=dt.timedelta(seconds=30)
    )
    states, clock = AlertStates(), Clock()
    step(states, rule, clock(), m(0.2))
    assert step(states, rule, clock.advance(10), m(0.01)) == []
    assert step(states, rule, clock.advance(10), m(0.01)) == []
    assert states_of(step(states, rule, clock.advance(10), m(0.01))) == [("firing", "resolved")]


def test_too_few_samples_keep_a_firing_alert_firing_and_say_why() -> None:
    states, clock = AlertStates(), Clock()
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
    states, clock = AlertStates(), Clock()
    step(states, BURST, clock(), m(0.2))
    assert step(states, BURST, clock.advance(70), m(0.2, samples=2)) == []
    assert [a.state for a in states.alerts] == ["pending"]
    assert states_of(step(states, BURST, clock.advance(10), m(0.2))) == [("pending", "firing")]


def test_no_data_resolves_a_firing_alert_by_default() -> None:
    states, clock = AlertStates(), Clock()
    step(states, BURST, clock(), m(0.2))
    step(states, BURST, clock.advance(60), m(0.2))
    transitions, [verdict] = states.apply(BURST, [], clock.advance(10))
    assert states_of(transitions) == [("firing", "resolved")]
    assert verdict.outcome == "no_data"


def test_no_data_keeps_the_state_when_the_rule_says_keep() -> None:
    rule = Rule("Sticky", "violation_rate", ">", 0.05, MINUTE, no_data="keep")
    states, clock = AlertStates(), Clock()
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
    states, clock = AlertStates(), Clock()
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
    states, clock = AlertStates(), Clock()
    first = step(states, BURST, clock(), m(0.2), m(0.2, agent="hr-2"))
    fired = step(states, BURST, clock.advance(60), m(0.2), m(0.01, agent="hr-2"))
    log = pl.concat([transitions_frame(first, T0), transitions_frame(fired, clock())])
    [(alert, last_true)] = restore_alerts(log)
    assert (alert.agent_id, alert.state, alert.starts_at) == ("hr-1", "firing", T0)
    assert last_true == clock()


# --------------------------------------------------------------------------- the evaluator


def store_with(tmp_path: Path, *frames: pl.DataFrame) -> Path:
    segments = LakeStore(tmp_path / CATALOG_FILE)
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


@pytest.fixture
def burst_db(tmp_path: Path) -> Path:
    """hr-1: 60 checks in the first minute, 30 of them violations; calm afterwards."""
    return store_with(tmp_path, checks(0, 60, 30), checks(60, 120, 0))


def test_transitions_are_appended_to_alert_events(burst_db: Path) -> None:
    clock = Clock(at(60))
    evaluator = Evaluator(burst_db, [BURST], CATALOG, clock=clock)
    evaluator.evaluate()
    evaluator.evaluate(clock.advance(60))  # the last minute is calm: 0 violations
    log = LakeStore(burst_db).read_log("alert_events")
    assert log["state"].to_list() == ["pending", "resolved"]
    assert log["agent_id"].to_list() == ["hr-1", "hr-1"]
    assert log["starts_at"].to_list() == [at(60), at(60)]


def test_the_alerts_view_shows_each_alerts_latest_state(tmp_path: Path) -> None:
    rule = Rule("Now", "violation_rate", ">", 0.05, MINUTE, severity="critical")
    db = store_with(tmp_path, checks(0, 60, 30))
    Evaluator(db, [rule], CATALOG).evaluate(at(60))
    con = connect_lake(db)
    try:
        rows = con.execute("SELECT rule, state, agent_id, value FROM alerts").fetchall()
    finally:
        con.close()
    assert rows == [("Now", "firing", "hr-1", 0.5)]


def test_the_evaluator_reads_its_injected_clock(burst_db: Path) -> None:
    evaluation = Evaluator(burst_db, [BURST], CATALOG, clock=Clock(at(60))).evaluate()
    assert evaluation.at == at(60)
    assert [a.state for a in evaluation.alerts] == ["pending"]


def test_a_restarted_evaluator_keeps_a_firing_alert_without_announcing_it_again(
    tmp_path: Path,
) -> None:
    db = store_with(tmp_path, checks(0, 180, 90))
    first = Evaluator(db, [BURST], CATALOG)
    first.evaluate(at(60))
    assert [t.alert.state for t in first.evaluate(at(120)).transitions] == ["firing"]
    restarted = Evaluator(db, [BURST], CATALOG)
    assert [a.state for a in restarted.states.alerts] == ["firing"]
    evaluation = restarted.evaluate(at(121))
    assert evaluation.transitions == ()
    assert [(a.state, a.starts_at) for a in evaluation.alerts] == [("firing", at(60))]


def test_a_restarted_evaluator_fires_a_restored_pending_alert_on_time(tmp_path: Path) -> None:
    db = store_with(tmp_path, checks(0, 180, 90))
    Evaluator(db, [BURST], CATALOG).evaluate(at(60))
    restarted = Evaluator(db, [BURST], CATALOG)
    assert restarted.evaluate(at(90)).transitions == ()
    [fired] = restarted.evaluate(at(120)).transitions
    assert (fired.previous, fired.alert.state, fired.alert.starts_at) == (
        "pending",
        "firing",
        at(60),
    )


def test_a_missing_catalog_file_is_reported_and_changes_nothing(tmp_path: Path) -> None:
    evaluation = Evaluator(tmp_path / "absent.sqlite", [BURST], CATALOG).evaluate(T0)
    assert "does not exist yet" in evaluation.errors["AgentViolationBurst"]
    assert evaluation.transitions == ()


def test_an_evaluation_that_cannot_be_recorded_leaves_the_state_as_it_was(
    burst_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator = Evaluator(burst_db, [BURST], CATALOG)

    def full_disk(table: str, frame: pl.DataFrame) -> Path:
        raise OSError("No space left on device")

    monkeypatch.setattr(evaluator.store, "append_log", full_disk)
    with pytest.raises(OSError):
        evaluator.evaluate(at(60))
    assert evaluator.states.alerts == []
    monkeypatch.undo()
    assert [t.alert.state for t in evaluator.evaluate(at(61)).transitions] == ["pending"]


def test_catalog_facts_are_added_to_the_annotations(burst_db: Path) -> None:
    rule = Rule("Now", "violation_rate", ">", 0.05, MINUTE, annotations={"summary": "s"})
    [alert] = Evaluator(burst_db, [rule], CATALOG).evaluate(at(60)).alerts
    assert alert.annotations == {
        "summary": "s",
        "owner": "people",
        "oncall": "people-pager",
        "risk_tier": "medium",
    }


def test_a_catalog_threshold_is_applied_per_agent(tmp_path: Path) -> None:
    [rule] = parse_rules(
        {
            "rules": [
                {
                    "name": "Slow",
                    "metric": "llm_latency_p95_ms",
                    "window": "5m",
                    "op": ">",
                    "threshold": {"catalog": "slo.p95_latency_ms", "default": 20000},
                    "severity": "warning",
                    "annotations": {"summary": "slow"},
                }
            ]
        }
    )
    calls = events(
        *(
            {"agent_id": agent, "kind": "llm_call", "ts": at(i), "latency_ms": 8000.0}
            for agent in ("hr-1", "uncatalogued")
            for i in range(10)
        )
    )
    [alert] = Evaluator(store_with(tmp_path, calls), [rule], CATALOG).evaluate(at(60)).alerts
    assert alert.agent_id == "hr-1"  # 8 s is over hr-1's 5 s SLO, under the 20 s default


def cost_calls(start_s: float, count: int, usd: float) -> pl.DataFrame:
    return events(
        *(
            {
                "agent_id": "hr-1",
                "kind": "llm_call",
                "ts": at(start_s + i),
                "cost_usd_effective": usd,
                "event_id": f"c-{start_s}-{i}",
            }
            for i in range(count)
        )
    )


SPIKE = Rule("Spike", "cost_usd", ">", 3.0, MINUTE, change="ratio", min_samples=10)


def test_a_rate_of_change_rule_compares_the_window_with_the_one_before(tmp_path: Path) -> None:
    db = store_with(
        tmp_path, cost_calls(0, 20, 0.01), cost_calls(60, 20, 0.01), cost_calls(120, 20, 0.05)
    )
    [alert] = Evaluator(db, [SPIKE], CATALOG).evaluate(at(180)).alerts
    assert alert.value == pytest.approx(5.0)


def test_a_rate_of_change_against_nothing_has_no_data(tmp_path: Path) -> None:
    db = store_with(tmp_path, cost_calls(60, 20, 0.05))
    evaluation = Evaluator(db, [SPIKE], CATALOG).evaluate(at(120))
    assert evaluation.alerts == ()
    assert [v.outcome for v in evaluation.verdicts] == ["no_data"]


def test_traffic_that_just_started_is_no_spike(tmp_path: Path) -> None:
    # Traffic began 10 s into the previous window: that window is partly empty.
    db = store_with(tmp_path, cost_calls(70, 50, 0.01), cost_calls(120, 60, 0.01))
    evaluation = Evaluator(db, [SPIKE], CATALOG).evaluate(at(180))
    assert evaluation.alerts == ()
    [verdict] = evaluation.verdicts
    assert verdict.outcome == "held"
    assert "no data before the previous window" in verdict.reason


def test_the_shipped_rules_stay_quiet_on_a_healthy_agent(tmp_path: Path) -> None:
    healthy = events(
        *(
            {
                "agent_id": "hr-assistant-1",
                "agent_version": "2.3.0",
                "kind": "llm_call",
                "ts": at(i),
                "model": "gpt-4o-mini",
                "prompt_version": "v7",
                "latency_ms": 900.0,
                "cost_usd_effective": 0.001,
                "event_id": f"h{i}",
            }
            for i in range(300)
        )
    )
    evaluator = Evaluator(
        store_with(tmp_path, healthy), load_rules(), load_catalog(EXAMPLE_CATALOG)
    )
    evaluation = evaluator.evaluate(at(300))
    assert evaluation.errors == {}
    assert evaluation.alerts == ()


# --------------------------------------------------------------------------- `alerts run`


def test_alerts_run_once_prints_the_firing_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_with(tmp_path, checks(0, 120, 60, agent="rogue-bot"))
    code = main(
        [
            "--log-format",
            "text",
            "alerts",
            "run",
            "--db",
            str(db),
            "--once",
            "--at",
            at(60).isoformat(),
            "--catalog",
            str(EXAMPLE_CATALOG),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Firing (1)" in out
    assert "ShadowAgent" in out
    assert "rogue-bot" in out


def test_without_a_catalog_no_agent_is_a_shadow_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_with(tmp_path, checks(0, 120, 60, agent="rogue-bot"))
    args = ["alerts", "run", "--db", str(db), "--once", "--at", at(60).isoformat()]
    assert main(args) == 0
    assert "ShadowAgent" not in capsys.readouterr().out


def test_alerts_run_refuses_at_without_once(tmp_path: Path) -> None:
    assert main(["alerts", "run", "--db", str(tmp_path / "x"), "--at", "2026-11-20T09:00:00Z"]) == 2


def test_the_loop_feeds_every_evaluation_to_the_sinks_despite_a_failing_one(
    burst_db: Path,
) -> None:
    clock = Clock(at(60))
    evaluator = Evaluator(burst_db, [BURST], CATALOG, clock=clock)
    seen: list[Evaluation] = []

    def broken(evaluation: Evaluation) -> None:
        raise RuntimeError("receiver down")

    def record(evaluation: Evaluation) -> None:
        seen.append(evaluation)
        clock.advance(60)

    done = run_loop(
        evaluator,
        fan_out([broken, record]),
        interval=0,
        stop=threading.Event(),
        max_evaluations=2,
    )
    assert done == 2
    assert [len(e.transitions) for e in seen] == [1, 1]  # pending, then resolved


def test_the_loop_stops_when_asked(burst_db: Path) -> None:
    stop = threading.Event()
    stop.set()
    evaluator = Evaluator(burst_db, [BURST], CATALOG)
    assert run_loop(evaluator, lambda e: None, interval=60, stop=stop) == 0


def test_an_edit_that_does_not_validate_keeps_the_previous_rules(
    burst_db: Path, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    good = (
        "rules:\n  - {name: Burst, metric: violation_rate, window: 1m, op: '>', threshold: 0.05,"
        " severity: critical, annotations: {summary: s}}\n"
    )
    (rules_dir / "r.yaml").write_text(good)
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text("agents: []\n")
    sources = Sources(catalog_file, rules_dir)
    evaluator = Evaluator(burst_db, sources.rules, sources.catalog)
    (rules_dir / "r.yaml").write_text(good.replace("violation_rate", "no_such_metric"))
    sources.reload(evaluator, force=True)
    assert [r.metric for r in evaluator.rules] == ["violation_rate"]


def test_other_modules_add_subcommands_to_the_same_alerts_group() -> None:
    parser = build_parser(Settings())
    silence = ["alerts", "silence", "--match", "agent_id=a", "--comment", "maintenance"]
    assert parser.parse_args(silence).alerts_command == "silence"
    assert parser.parse_args(["alerts", "run"]).alerts_command == "run"
