"""The drift benchmark's scoring of a scenario: the delay to each expected signal, and the
alarms raised with an upper bound on their rate."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from agentwatch.ingest.sim.scenario_file import parse_scenario
from bench.drift import alarms, binomial_upper, changed_agents, detection
from tests.scenario_helpers import START


def _scores(rows: list[tuple[int, str, str, str]]) -> pl.DataFrame:
    """drift_scores-like rows: (hours after START, agent, signal, verdict)."""
    return pl.DataFrame(
        {
            "window_end": [dt.datetime.fromtimestamp(START + h * 3600, dt.UTC) for h, *_ in rows],
            "agent_id": [r[1] for r in rows],
            "comparison": ["rolling"] * len(rows),
            "signal": [r[2] for r in rows],
            "test": ["chi2"] * len(rows),
            "verdict": [r[3] for r in rows],
        }
    )


def test_bench_delay_counts_windows_from_the_change_to_the_first_drift() -> None:
    scenario = parse_scenario(
        {
            "changes": [{"at": "+2h", "agent": "a-1", "tokens": {"scale": 2}}],
            "expect": [{"agent": "a-1", "signals": ["x", "y", "z"]}],
        }
    )
    scores = _scores(
        [
            (1, "a-1", "x", "drift"),  # before the change: early, not a detection
            (2, "a-1", "y", "drift"),  # the window ending at the change: still before it
            (3, "a-1", "x", "drift"),  # window 1
            (4, "a-1", "y", "drift"),  # window 2
            (5, "a-1", "y", "drift"),
            (3, "b-1", "z", "drift"),  # another agent
            (3, "a-1", "z", "ok"),
            (4, "b-1", "x", "insufficient_data"),
        ]
    )
    start = dt.datetime.fromtimestamp(START, dt.UTC)
    (result,) = detection(scores, scenario, start)
    delays = {s.signal: (s.delay, s.early) for s in result.signals}
    assert delays == {"x": (1, 1), "y": (2, 1), "z": (None, 0)}
    assert result.delay is None  # an expectation counts when every signal is found
    counted = alarms(scores, changed_agents(scenario, ["a-1", "b-1"]))
    assert (counted.drifts, counted.tests, counted.by_signal) == (1, 1, {"z/chi2": 1})
    assert counted.per_1000 == 1000.0
    everyone = alarms(scores)
    assert (everyone.drifts, everyone.tests) == (6, 7)
    # The bound on the rate: 3/n for none seen (the rule of three), Clopper-Pearson beyond.
    assert binomial_upper(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert binomial_upper(5, 100) == pytest.approx(0.1023, abs=1e-4)
    assert binomial_upper(3, 3) == 1.0
