"""Every metric rules can use, measured against a hand-built store: the window, rates,
latency, errors, cost, governance counts, silence and drift verdicts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.rules import (
    Sample,
    Window,
    metrics,
)
from agentwatch.frames import register
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.histograms import RELATIVE_ERROR
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.frames import at, events, store_batch
from tests.rules_helpers import CATALOG

WINDOW_START, WINDOW_END = at(0), at(600)


@dataclass
class Store:
    path: Path

    def measure(
        self,
        metric: str,
        start: dt.datetime = WINDOW_START,
        end: dt.datetime = WINDOW_END,
        catalog: Catalog = CATALOG,
    ) -> dict[tuple[str, ...], Sample]:
        """The metric's samples keyed by their label values, in label order."""
        con = connect_lake(self.path)
        try:
            register(con, "agent_catalog", catalog.frame())
            found = metrics()[metric].measure(con, Window(start, end))
        finally:
            con.close()
        return {tuple(s.labels.values()): s for s in found}


def store(tmp_path: Path, *rows: dict[str, Any]) -> Store:
    segments = LakeStore(tmp_path / METADATA_FILE)
    store_batch(segments, events(*rows))
    segments.prepare()
    return Store(Path(segments.db))


def ev(agent: str, seconds: float, kind: str = "tool_call", **fields: Any) -> dict[str, Any]:
    return {"agent_id": agent, "ts": at(seconds), "kind": kind, **fields}


# --------------------------------------------------------------------------- metrics over a store


def test_the_window_includes_its_start_and_excludes_its_end(tmp_path: Path) -> None:
    s = store(tmp_path, ev("hr-1", -1), ev("hr-1", 0), ev("hr-1", 599.9), ev("hr-1", 600))
    assert s.measure("events")[("hr-1",)].value == 2


def test_failed_check_rate_counts_violations_and_blocks_over_checks(tmp_path: Path) -> None:
    outcomes = ["pass", "pass", "violation", "blocked", "pass"]
    s = store(tmp_path, *(ev("hr-1", i, "policy_check", outcome=o) for i, o in enumerate(outcomes)))
    sample = s.measure("failed_check_rate")[("hr-1",)]
    assert (sample.value, sample.samples) == (0.4, 5)


def test_policy_violations_count_with_all_checks_as_samples(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "policy_check", outcome="violation"),
        ev("hr-1", 2, "policy_check", outcome="pass"),
        ev("hr-1", 3, "llm_call"),
    )
    sample = s.measure("failed_checks")[("hr-1",)]
    assert (sample.value, sample.samples) == (1, 2)


def test_containment_rate_counts_resolved_sessions_without_escalation(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 10, "session_end", session_id="contained", resolution="resolved"),
        # escalated before the window, resolved inside it: not contained
        ev("hr-1", -300, "escalation", session_id="handed-off"),
        ev("hr-1", 20, "session_end", session_id="handed-off", resolution="resolved"),
        ev("hr-1", 30, "session_end", session_id="gave-up", resolution="abandoned"),
        ev("hr-1", 40, "session_end", session_id="ok-2", resolution="resolved"),
    )
    sample = s.measure("containment_rate")[("hr-1",)]
    assert (sample.value, sample.samples) == (0.5, 4)


def test_p95_llm_latency_is_within_the_histogram_error_over_the_window(tmp_path: Path) -> None:
    s = store(tmp_path, *(ev("hr-1", i, "llm_call", latency_ms=float(i + 1)) for i in range(100)))
    sample = s.measure("llm_latency_p95_ms")[("hr-1",)]
    assert sample.value == pytest.approx(95.05, rel=RELATIVE_ERROR)  # exact: 95.05
    assert sample.samples == 100


def test_error_rate_counts_failed_steps_and_agent_errors(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "tool_call", status="error"),
        ev("hr-1", 2, "error", status="error"),
        ev("hr-1", 3, "tool_call"),
        ev("hr-1", 4, "llm_call"),
    )
    assert s.measure("error_rate")[("hr-1",)].value == 0.5


def test_tool_error_rate_is_per_tool(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, tool_name="kb.search", status="error"),
        ev("hr-1", 2, tool_name="kb.search"),
        ev("hr-1", 3, tool_name="payslip"),
    )
    found = s.measure("tool_error_rate")
    assert found[("hr-1", "kb.search")].value == 0.5
    assert found[("hr-1", "payslip")].value == 0.0


def test_cost_sums_priced_calls_and_falls_back_to_the_events_own_cost(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "llm_call", cost_usd_effective=1.5),
        ev("hr-1", 2, "llm_call", cost_usd=0.5),
        ev("hr-1", 3, "llm_call"),
    )
    sample = s.measure("cost_usd")[("hr-1",)]
    assert (sample.value, sample.samples) == (2.0, 3)


def test_cost_has_no_value_when_no_call_was_priced(tmp_path: Path) -> None:
    s = store(tmp_path, ev("hr-1", 1, "llm_call", model="mystery"))
    assert s.measure("cost_usd")[("hr-1",)].value is None


def test_unpriced_calls_are_counted_per_model(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "llm_call", model="mystery"),
        ev("hr-1", 2, "llm_call", model="mystery", cost_usd_effective=0.1),
        ev("hr-1", 3, "llm_call", model="gpt-4o-mini", cost_usd_effective=0.1),
    )
    found = s.measure("unpriced_llm_calls")
    assert (found[("hr-1", "mystery")].value, found[("hr-1", "mystery")].samples) == (1, 2)
    assert found[("hr-1", "gpt-4o-mini")].value == 0


def test_shadow_agents_are_those_missing_from_the_catalog(tmp_path: Path) -> None:
    s = store(tmp_path, ev("hr-1", 1), ev("rogue-bot", 2), ev("rogue-bot", 3))
    assert {k: v.value for k, v in s.measure("shadow_agent_events").items()} == {("rogue-bot",): 2}


def test_unapproved_models_are_counted_only_where_models_are_governed(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "llm_call", model="gpt-4o-mini"),
        ev("hr-1", 2, "llm_call", model="o1"),
        ev("free-1", 3, "llm_call", model="o1"),
    )
    assert {k: v.value for k, v in s.measure("unapproved_model_calls").items()} == {
        ("hr-1", "o1"): 1
    }


def test_an_empty_approved_tools_list_makes_every_tool_unapproved(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, tool_name="kb.search"),
        ev("hr-1", 2, tool_name="shell.exec"),
        ev("locked-1", 3, tool_name="kb.search"),
        ev("free-1", 4, tool_name="shell.exec"),
    )
    assert set(s.measure("unapproved_tool_calls")) == {
        ("hr-1", "shell.exec"),
        ("locked-1", "kb.search"),
    }


def test_unpinned_versions_count_only_in_prod(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "llm_call", agent_version="2.0.0", prompt_version="v7"),
        ev("hr-1", 2, "llm_call", agent_version="2.1.0", prompt_version="v8"),
        ev("hr-1", 3, "tool_call", agent_version="2.1.0"),
        ev(
            "hr-1", 4, "llm_call", agent_version="2.1.0", prompt_version="v8", environment="staging"
        ),
    )
    assert {k: v.value for k, v in s.measure("unpinned_prod_events").items()} == {
        ("hr-1", "agent_version", "2.1.0"): 2,
        ("hr-1", "prompt_version", "v8"): 1,
    }


def test_retired_and_paused_agents_with_events_are_counted_apart(tmp_path: Path) -> None:
    s = store(tmp_path, ev("old-1", 1), ev("paused-1", 2), ev("paused-1", 3), ev("hr-1", 4))
    assert set(s.measure("retired_agent_events")) == {("old-1",)}
    assert s.measure("paused_agent_events")[("paused-1",)].value == 2


def test_silence_is_the_time_since_an_active_agents_last_event(tmp_path: Path) -> None:
    s = store(tmp_path, ev("hr-1", 100), ev("hr-1", 200), ev("old-1", 300))
    found = s.measure("silence_s", start=at(0), end=at(900))
    assert found == {("hr-1",): Sample({"agent_id": "hr-1"}, 700.0, 2)}


def drift_row(
    agent: str, signal: str, seconds: float, verdict: str, comparison: str
) -> dict[str, Any]:
    return {
        "ts": at(seconds), "window_end": at(seconds), "agent_id": agent, "environment": "prod",
        "comparison": comparison, "dimension": None, "baseline": "7d", "candidate": "1h",
        "signal": signal, "test": "ks", "statistic": 0.3, "p_value": 0.001, "score": 0.001,
        "threshold": 0.01, "verdict": verdict, "n_ref": 900, "n_cur": 120,
    }  # fmt: skip


def test_drift_metrics_take_the_latest_verdict_of_each_signal(tmp_path: Path) -> None:
    s = store(tmp_path, ev("hr-1", 10))
    log = LakeStore(tmp_path / METADATA_FILE)
    log.append_log("drift_scores", pl.DataFrame([
        drift_row("hr-1", "llm_latency_ms", 100, "ok", "rolling"),
        drift_row("hr-1", "llm_latency_ms", 400, "drift", "rolling"),
        drift_row("hr-1", "tool_mix", 100, "drift", "rolling"),
        drift_row("hr-1", "tool_mix", 400, "ok", "rolling"),
        drift_row("hr-1", "escalation_rate", 400, "drift", "release"),
        drift_row("hr-1", "feedback_score", 400, "insufficient_data", "rolling"),
    ]))  # fmt: skip
    rolling = s.measure("drift_rolling")
    assert {k: v.value for k, v in rolling.items()} == {
        ("hr-1", "llm_latency_ms"): 1.0,
        ("hr-1", "tool_mix"): 0.0,
    }
    assert rolling[("hr-1", "llm_latency_ms")].samples == 120
    assert {k: v.value for k, v in s.measure("drift_release").items()} == {
        ("hr-1", "escalation_rate"): 1.0
    }
