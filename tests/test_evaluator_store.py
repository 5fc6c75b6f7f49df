"""The evaluator over a store: the alert log and view, restarts, catalog facts and
thresholds, rates of change and the shipped rules; its loop and `alerts run`."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import polars as pl
import pytest

from agentwatch.alerts.evaluation.evaluator import Evaluation, Evaluator
from agentwatch.alerts.evaluation.loop import Sources, fan_out, run_loop
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.response.runbook_files import RUNBOOK_DIR
from agentwatch.alerts.rules import DEFAULT_RULES_DIR, Rule, load_rules, parse_rules
from agentwatch.cli import build_parser, main
from agentwatch.clock import ManualClock
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.settings import Settings
from tests.evaluation_helpers import BURST, CATALOG, MINUTE, checks, store_with
from tests.frames import T0, at, events


@pytest.fixture
def burst_db(tmp_path: Path) -> Path:
    """hr-1: 60 checks in the first minute, 30 of them violations; calm afterwards."""
    return store_with(tmp_path, checks(0, 60, 30), checks(60, 120, 0))


def test_transitions_are_appended_to_alert_events(burst_db: Path) -> None:
    clock = ManualClock(at(60))
    evaluator = Evaluator(burst_db, [BURST], CATALOG, clock=clock)
    evaluator.evaluate()
    evaluator.evaluate(clock.advance(60))  # the last minute is calm: 0 violations
    log = LakeStore(burst_db).read_log("alert_events")
    assert log["state"].to_list() == ["pending", "resolved"]
    assert log["agent_id"].to_list() == ["hr-1", "hr-1"]
    assert log["starts_at"].to_list() == [at(60), at(60)]


def test_the_alerts_view_shows_each_alerts_latest_state(tmp_path: Path) -> None:
    rule = Rule("Now", "failed_check_rate", ">", 0.05, MINUTE, severity="critical")
    db = store_with(tmp_path, checks(0, 60, 30))
    Evaluator(db, [rule], CATALOG).evaluate(at(60))
    con = connect_lake(db)
    try:
        rows = con.execute("SELECT rule, state, agent_id, value FROM alerts").fetchall()
    finally:
        con.close()
    assert rows == [("Now", "firing", "hr-1", 0.5)]


def test_the_evaluator_reads_its_injected_clock(burst_db: Path) -> None:
    evaluation = Evaluator(burst_db, [BURST], CATALOG, clock=ManualClock(at(60))).evaluate()
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
    rule = Rule("Now", "failed_check_rate", ">", 0.05, MINUTE, annotations={"summary": "s"})
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
    clock = ManualClock(at(60))
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
        "rules:\n  - {name: Burst, metric: failed_check_rate, window: 1m, op: '>', threshold: 0.05,"
        " severity: critical, annotations: {summary: s}}\n"
    )
    (rules_dir / "r.yaml").write_text(good)
    metadata_file = tmp_path / "catalog.yaml"
    metadata_file.write_text("agents: []\n")
    sources = Sources(metadata_file, rules_dir)
    evaluator = Evaluator(burst_db, sources.rules, sources.catalog)
    (rules_dir / "r.yaml").write_text(good.replace("failed_check_rate", "no_such_metric"))
    sources.reload(evaluator, force=True)
    assert [r.metric for r in evaluator.rules] == ["failed_check_rate"]


def test_other_modules_add_subcommands_to_the_same_alerts_group() -> None:
    parser = build_parser(Settings())
    silence = ["alerts", "silence", "--match", "agent_id=a", "--comment", "maintenance"]
    assert parser.parse_args(silence).alerts_command == "silence"
    assert parser.parse_args(["alerts", "run"]).alerts_command == "run"


def rules_naming(tmp_path: Path, runbook_url: str) -> Path:
    """The shipped safety rules with their runbook_url replaced."""
    folder = tmp_path / "rules"
    folder.mkdir()
    shipped = (DEFAULT_RULES_DIR / "safety.yaml").read_text()
    (folder / "safety.yaml").write_text(shipped.replace("runbooks/contain-agent.yaml", runbook_url))
    return folder


def with_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTWATCH_CONTROL_KEYS", "k1:" + "a" * 40)


def test_alerts_run_refuses_a_rule_naming_a_runbook_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with_keys(tmp_path, monkeypatch)
    rules = rules_naming(tmp_path, "runbooks/contain-agnet.yaml")
    args = ["alerts", "run", "--db", str(tmp_path / "db.sqlite"), "--rules", str(rules)]
    assert main([*args, "--once"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "runbook_url runbooks/contain-agnet.yaml names no runbook" in err


def test_alerts_run_reads_runbooks_from_the_configured_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with_keys(tmp_path, monkeypatch)
    books = tmp_path / "books"
    shutil.copytree(RUNBOOK_DIR, books)
    shipped = RUNBOOK_DIR / "contain-agent.yaml"
    (books / "contain-fleet.yaml").write_text(
        shipped.read_text().replace("id: contain-agent", "id: contain-fleet")
    )
    rules = rules_naming(tmp_path, "runbooks/contain-fleet.yaml")
    monkeypatch.setenv("AGENTWATCH_ALERTS_RUNBOOKS", str(books))
    db = store_with(tmp_path, checks(0, 120, 60, agent="rogue-bot"))
    args = ["alerts", "run", "--db", str(db), "--rules", str(rules), "--once"]
    assert main([*args, "--at", at(60).isoformat()]) == 0
    monkeypatch.delenv("AGENTWATCH_ALERTS_RUNBOOKS")
    assert main([*args, "--at", at(60).isoformat()]) == 2  # the shipped ones lack it


def test_alerts_run_once_on_a_lake_that_does_not_exist_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo" / "agentwatch.sqlite"
    assert main(["alerts", "run", "--once", "--no-response", "--db", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("first") and "does not exist yet" in err[-1]
    assert len(err) <= 2  # at most the no-catalog notice before it
