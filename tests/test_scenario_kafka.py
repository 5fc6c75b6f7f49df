"""A scenario through the real pipeline: ``simulate --scenario --start`` into Kafka, the
processor lands it, and the drift backfill flags the changed agent on the expected signals
from the change on (and not before), in its result and in the drift_scores table."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.cli import main
from agentwatch.ingest.sim.scenario_file import load_scenario
from agentwatch.processors.drift import backfill, load_config
from agentwatch.processors.store.attach import connect as connect_lake
from tests.pipeline_helpers import run_to_idle

pytestmark = pytest.mark.integration

# The change comes after the drift settings' min_reference (12h) of history.
SCENARIO = """\
name: short-prompt-regression
description: it-support-1 ships a prompt that opens tickets for everything and escalates more.
run: {agents: 4, duration: 16h, sim_rate: 3, seed: 11}
changes:
  - at: +13h
    agent: it-support-1
    prompt:
      version: v13
      add_tools: [servicenow.create_ticket]
      drop_tools: [kb.search_it]
      escalation_scale: 2.0
expect:
  - agent: it-support-1
    signals: [tool_mix, escalation_rate]
"""


def test_a_scenario_is_detected_on_the_right_agent_and_signals(
    kafka_broker: BrokerInfo,
    topic: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    name = topic()
    hour = int(time.time()) // 3600 * 3600
    start = dt.datetime.fromtimestamp(hour - 18 * 3600, dt.UTC)
    code = main(
        [
            "--log-format", "json", "simulate", "--bootstrap", kafka_broker.bootstrap,
            "--topic", name, "--scenario", str(path), "--start", start.isoformat(),
            "--duration", "57600",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "scenario short-prompt-regression: 1 change(s)" in out
    assert "it-support-1 from" in out and "prompt v13" in out

    db = tmp_path / "data" / "agentwatch.sqlite"
    run_to_idle(kafka_broker, name, db)
    end = start + dt.timedelta(hours=16)
    scores = backfill(db, start, end, dt.timedelta(hours=1), load_config())

    change = start + dt.timedelta(hours=13)
    (expectation,) = scenario.expect
    assert scenario.since(expectation, start.timestamp()) == change.timestamp()
    drifts = scores.filter(
        (pl.col("verdict") == "drift") & (pl.col("agent_id") == expectation.agent)
    )
    for signal in expectation.signals:
        found = drifts.filter(pl.col("signal") == signal)["window_end"]
        assert found.len(), f"no drift on {signal}"
        assert found.min() == change + dt.timedelta(hours=1), signal  # the first window after
        assert (found > change).all(), signal  # nothing before the change
    # The agents no change touches stay quiet on those signals.
    elsewhere = scores.filter(
        (pl.col("verdict") == "drift")
        & (pl.col("agent_id") != expectation.agent)
        & pl.col("signal").is_in(list(expectation.signals))
    )
    assert elsewhere.height == 0

    con = connect_lake(db)
    try:
        stored = con.execute(
            "SELECT signal, min(window_end) FROM drift_scores WHERE verdict = 'drift' "
            "AND agent_id = ? GROUP BY signal",
            [expectation.agent],
        ).fetchall()
    finally:
        con.close()
    first = {signal: ts for signal, ts in stored}
    for signal in expectation.signals:
        assert first[signal] == change + dt.timedelta(hours=1)
