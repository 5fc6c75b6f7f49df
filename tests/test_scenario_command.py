"""The simulate command's --scenario and --start handling, which needs no broker: every
check runs before Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentwatch.cli import build_parser, main
from agentwatch.commands.simulate import _plan
from agentwatch.ingest.sim.scenario import Scenario, ScenarioError
from agentwatch.ingest.sim.scenario_file import load_scenario
from agentwatch.settings import load_settings
from tests.scenario_helpers import SCENARIOS, START


def plan(*argv: str, now: float = START) -> Any:
    args = build_parser(load_settings(None)).parse_args(["simulate", *argv])
    return _plan(args, now)


def test_start_runs_as_fast_as_possible_until_now() -> None:
    p = plan("--start", "now-2d")
    assert p.rate == 0.0 and p.start == START - 172_800 and p.duration == 172_800
    p = plan("--start", "2026-11-19T09:00:00Z", "--duration", "3600")
    assert p.start == START - 86_400 and p.duration == 3600
    with pytest.raises(ScenarioError, match="--start runs as fast as possible"):
        plan("--start", "now-2d", "--rate", "50")
    assert plan("--start", "now-2d", "--rate", "0").rate == 0.0
    with pytest.raises(ScenarioError, match="not in the past"):
        plan("--start", "2026-11-21T09:00:00Z")


def test_the_scenario_run_block_fills_in_what_flags_leave_out() -> None:
    path = str(SCENARIOS / "latency-shift.yaml")
    hints = load_scenario(path).run
    p = plan("--scenario", path, "--rate", "0")
    assert (p.agents, p.duration, p.sim_rate, p.seed) == (
        hints.agents, hints.duration_s, hints.sim_rate, hints.seed,
    )  # fmt: skip
    assert isinstance(p.scenario, Scenario) and p.start is None
    p = plan("--scenario", path, "--rate", "0", "--agents", "8", "--seed", "3", "--sim-rate", "9")
    assert (p.agents, p.seed, p.sim_rate, p.duration) == (8, 3, 9.0, hints.duration_s)
    p = plan("--scenario", path, "--start", "now-1d")
    assert p.duration == 86_400 and p.rate == 0.0
    # In real time the hints' simulated hours do not apply; agents and seed still do.
    p = plan("--scenario", path)
    assert p.rate > 0 and p.duration == 60.0 and p.agents == hints.agents


def test_cli_reports_scenario_errors_before_touching_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = ["--bootstrap", "127.0.0.1:9", "--timeout", "1"]
    assert main(["simulate", *nowhere, "--scenario", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: cannot read: " in capsys.readouterr().err
    path = str(SCENARIOS / "prompt-regression.yaml")
    assert main(["simulate", *nowhere, "--scenario", path, "--agents", "1", "--rate", "0"]) == 2
    assert "no agent 'it-support-1' in this fleet of 1" in capsys.readouterr().err
    assert main(["simulate", *nowhere, "--start", "now-1h", "--rate", "10"]) == 2
    assert "--start runs as fast as possible" in capsys.readouterr().err
    assert main(["simulate", *nowhere, "--start", "last week"]) == 2
    assert "--start: expected an RFC 3339 time" in capsys.readouterr().err
