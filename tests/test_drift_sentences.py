"""Drift in plain sentences: what changed, for which agent and release, since when, how
sure, before any statistic."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentwatch.processors.drift.sentences import certainty, sentence

SINCE = dt.datetime(2026, 11, 6, 1, 0, tzinfo=dt.UTC)


def _row(**over: Any) -> dict[str, Any]:
    return {
        "signal": "escalation_rate", "comparison": "rolling", "dimension": None,
        "baseline_key": "", "candidate_key": "", "drifting_since": SINCE,
        "first_drift": SINCE, "drift_windows": 3, "windows": 12,
    } | over  # fmt: skip


def test_a_release_sentence_names_the_version_against_the_stable_one() -> None:
    row = _row(comparison="release", dimension="agent_version", baseline_key="1.0",
               candidate_key="2.0")  # fmt: skip
    latest = {"test": "two_proportion", "score": 2e-6, "threshold": 0.01}
    text = sentence("hr-1", row, "6.0% -> 18.0%", latest)
    assert text == (
        "hr-1, agent_version 2.0 against 1.0: share of ended sessions with an escalation "
        "changed (6.0% -> 18.0%) since 2026-11-06 01:00 UTC, drifting in 3 of the last 12 "
        "windows; very strong evidence (adjusted p-value 2e-06, alarm at 0.01)."
    )


def test_a_split_signal_names_its_subject() -> None:
    text = sentence("hr-1", _row(signal="tool_error_rate[create_ticket]"), None)
    assert text.startswith("hr-1: share of one tool's calls that failed (create_ticket) changed")


def test_how_sure_is_said_in_words_for_p_values_and_distances() -> None:
    assert certainty({"test": "ks", "score": 0.008, "threshold": 0.01}).startswith(
        "evidence just past the alarm level"
    )
    assert certainty({"test": "cusum", "score": 0.0005, "threshold": 0.01}).startswith(
        "strong evidence"
    )
    assert certainty({"test": "psi", "score": 0.6, "threshold": 0.25}) == (
        "a change far past its alarm level (psi 0.6, alarm at 0.25)"
    )
