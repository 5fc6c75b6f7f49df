"""Rules: the shipped set, validation, templates, and every metric against a hand-built store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from agentwatch.alerts.governance.catalog import Catalog, parse_catalog
from agentwatch.alerts.rules import (
    CatalogThreshold,
    MetricRegistry,
    Rule,
    RuleError,
    Sample,
    Window,
    load_rules,
    metrics,
    parse_rules,
    render,
)
from agentwatch.durations import format_duration, parse_duration
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.histograms import RELATIVE_ERROR
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import CATALOG_FILE
from tests.frames import at, events, store_batch

WINDOW_START, WINDOW_END = at(0), at(600)
RUNBOOK_IDS = {"contain-agent", "disable-tool", "rollback-release", "notify-owner"}

CATALOG = parse_catalog(
    {
        "agents": [
            {
                "agent_id": "hr-1",
                "owner": "people",
                "oncall": "people-pager",
                "risk_tier": "medium",
                "status": "active",
                "approved_models": ["gpt-4o-mini"],
                "approved_tools": ["kb.search"],
                "pinned": {"agent_version": "2.0.0", "prompt_version": "v7"},
                "daily_budget_usd": 10,
                "slo": {"p95_latency_ms": 5000, "containment_floor": 0.7},
            },
            {
                "agent_id": "locked-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "high",
                "status": "active",
                "approved_tools": [],
            },
            {
                "agent_id": "free-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "low",
                "status": "active",
            },
            {
                "agent_id": "old-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "low",
                "status": "retired",
            },
            {
                "agent_id": "paused-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "low",
                "status": "paused",
            },
        ]
    },
    "test-catalog",
)


def rule_doc(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "TestRule",
        "metric": "error_rate",
        "window": "5m",
        "op": ">",
        "threshold": 0.1,
        "severity": "warning",
        "annotations": {"summary": "{{ $labels.agent_id }} errs"},
    } | overrides


def refused(registry: MetricRegistry | None = None, **overrides: Any) -> str:
    with pytest.raises(RuleError) as err:
        parse_rules({"rules": [rule_doc(**overrides)]}, "test.yaml", registry)
    return str(err.value)


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
            con.register("agent_catalog", catalog.frame().to_arrow())
            found = metrics()[metric].measure(con, Window(start, end))
        finally:
            con.close()
        return {tuple(s.labels.values()): s for s in found}


def store(tmp_path: Path, *rows: dict[str, Any]) -> Store:
    segments = LakeStore(tmp_path / CATALOG_FILE)
    store_batch(segments, events(*rows))
    segments.prepare()
    return Store(Path(segments.db))


def ev(agent: str, seconds: float, kind: str = "tool_call", **fields: Any) -> dict[str, Any]:
    return {"agent_id": agent, "ts": at(seconds), "kind": kind, **fields}


# --------------------------------------------------------------------------- the shipped set


@pytest.fixture(scope="module")
def shipped() -> list[Rule]:
    return load_rules()


def test_every_shipped_rule_has_summary_description_and_a_runbook(shipped: list[Rule]) -> None:
    for rule in shipped:
        assert {"summary", "description", "runbook_url"} <= set(rule.annotations), rule.name


def test_shipped_runbook_urls_name_the_agreed_runbooks(shipped: list[Rule]) -> None:
    used = {r.annotations["runbook_url"] for r in shipped}
    assert used == {f"runbooks/{name}.yaml" for name in RUNBOOK_IDS}


def test_the_shipped_set_covers_health_cost_and_governance(shipped: list[Rule]) -> None:
    assert {r.metric for r in shipped} >= {
        "violation_rate",
        "containment_rate",
        "llm_latency_p95_ms",
        "error_rate",
        "cost_usd",
        "silence_ratio",
        "security_session_share",
        "unpriced_llm_calls",
        "shadow_agent_events",
        "unapproved_model_calls",
        "unapproved_tool_calls",
        "unpinned_prod_events",
        "retired_agent_events",
    }


def test_the_shipped_budget_and_slo_rules_read_their_thresholds_from_the_catalog(
    shipped: list[Rule],
) -> None:
    by_name = {r.name: r for r in shipped}
    assert by_name["AgentBudgetOverrun"].threshold == CatalogThreshold("daily_budget_usd")
    assert by_name["AgentContainmentBelowFloor"].threshold == CatalogThreshold(
        "slo.containment_floor", 0.8
    )
    assert by_name["AgentLlmLatencyHigh"].threshold == CatalogThreshold("slo.p95_latency_ms", 10000)


def test_the_shipped_set_has_a_rate_of_change_rule(shipped: list[Rule]) -> None:
    assert any(r.change == "ratio" for r in shipped)


# --------------------------------------------------------------------------- rule files


def test_a_valid_rule_reads_every_field() -> None:
    [rule] = parse_rules(
        {
            "rules": [
                rule_doc(
                    **{"for": "1m30s", "keep_firing_for": "2m"},
                    min_samples=20,
                    labels={"team": "ops"},
                    change="delta",
                    no_data="keep",
                )
            ]
        }
    )
    assert rule.for_ == dt.timedelta(seconds=90)
    assert rule.keep_firing_for == dt.timedelta(minutes=2)
    assert rule.window == dt.timedelta(minutes=5)
    assert (rule.min_samples, rule.change, rule.no_data) == (20, "delta", "keep")
    assert rule.labels == {"team": "ops"}


def test_an_unknown_metric_is_refused_with_the_known_ones() -> None:
    message = refused(metric="violations_per_hour")
    assert "unknown metric 'violations_per_hour'" in message
    assert "violation_rate" in message


def test_an_unknown_comparison_is_refused() -> None:
    assert "op must be one of" in refused(op="=>")


def test_a_misspelt_key_is_refused() -> None:
    assert "unknown key(s) ['fro']" in refused(fro="5m")


def test_a_catalog_threshold_must_name_a_catalog_field() -> None:
    assert "threshold.catalog must be one of" in refused(threshold={"catalog": "slo.p50"})


def test_a_catalog_threshold_needs_a_per_agent_metric() -> None:
    @dataclass(frozen=True)
    class PerModel:
        name: str = "calls_per_model"
        help: str = "calls per model"
        by: tuple[str, ...] = ("model",)

        def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
            return []

    registry = metrics()
    registry.register(PerModel())
    message = refused(registry, metric="calls_per_model", threshold={"catalog": "daily_budget_usd"})
    assert "needs a per-agent metric" in message


def test_a_rule_may_not_set_the_labels_the_evaluator_sets() -> None:
    assert "label 'severity' is set by the evaluator" in refused(labels={"severity": "x"})
    assert "label 'agent_id' is set by the evaluator" in refused(labels={"agent_id": "x"})


def test_an_annotation_template_outside_the_supported_subset_is_refused() -> None:
    message = refused(annotations={"summary": "{{ .Labels.agent_id }}"})
    assert "annotations.summary: cannot render" in message


def test_a_summary_is_required() -> None:
    assert "annotations.summary is required" in refused(annotations={"description": "x"})


def test_a_runbook_url_must_be_a_runbook_path_or_a_url() -> None:
    assert "runbook_url must be" in refused(
        annotations={"summary": "s", "runbook_url": "contain-agent"}
    )


def test_min_samples_must_be_at_least_one() -> None:
    assert "min_samples must be a whole number >= 1" in refused(min_samples=0)


def test_a_duration_in_words_is_refused() -> None:
    assert "window: not a duration: '5 minutes'" in refused(window="5 minutes")


def test_a_severity_outside_the_known_ones_is_refused() -> None:
    assert "severity must be one of critical, error, warning, info" in refused(severity="page")


def test_a_rule_name_used_in_two_files_is_refused(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(
            "rules:\n  - {name: Dup, metric: events, window: 5m, op: '>', threshold: 1,\n"
            "     severity: info, annotations: {summary: s}}\n"
        )
    with pytest.raises(RuleError, match="rule Dup is also defined in"):
        load_rules(tmp_path)


def test_a_directory_without_rule_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no rules found"):
        load_rules(tmp_path)


# --------------------------------------------------------------------------- thresholds


def test_a_catalog_threshold_is_the_agents_value() -> None:
    rule = Rule(
        "R",
        "llm_latency_p95_ms",
        ">",
        CatalogThreshold("slo.p95_latency_ms", 9000),
        dt.timedelta(minutes=5),
    )
    assert rule.threshold_for({"agent_id": "hr-1"}, CATALOG) == 5000


def test_a_catalog_threshold_falls_back_to_its_default() -> None:
    rule = Rule(
        "R",
        "llm_latency_p95_ms",
        ">",
        CatalogThreshold("slo.p95_latency_ms", 9000),
        dt.timedelta(minutes=5),
    )
    assert rule.threshold_for({"agent_id": "free-1"}, CATALOG) == 9000
    assert rule.threshold_for({"agent_id": "not-catalogued"}, CATALOG) == 9000


def test_a_catalog_threshold_without_default_is_none_for_an_agent_without_the_field() -> None:
    rule = Rule("R", "cost_usd", ">", CatalogThreshold("daily_budget_usd"), dt.timedelta(days=1))
    assert rule.threshold_for({"agent_id": "free-1"}, CATALOG) is None


def test_describe_spells_the_condition() -> None:
    rule = Rule("R", "cost_usd", ">", 3.0, dt.timedelta(minutes=15), change="ratio")
    assert rule.describe() == "ratio(cost_usd[15m] vs previous) > 3"


# ----------------------------------------------------------------- templates and durations


def test_templates_fill_labels_and_humanized_values() -> None:
    text = render(
        "{{ $labels.agent_id }}: {{ $value | humanizePercentage }} over "
        "{{ $threshold | humanizePercentage }} of {{ $samples }}",
        {"agent_id": "hr-1"},
        0.1234,
        0.05,
        200,
    )
    assert text == "hr-1: 12.34% over 5% of 200"


def test_humanize_uses_metric_prefixes() -> None:
    assert render("{{ $value | humanize }}", {}, 12345.0, None, None) == "12.35k"


def test_humanize_duration_spells_minutes_and_seconds() -> None:
    assert render("{{ $value | humanizeDuration }}", {}, 734.0, None, None) == "12m 14s"


def test_a_missing_value_renders_as_not_available() -> None:
    assert render("{{ $threshold }}", {}, 1.0, None, 1) == "n/a"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("0", 0)]
)
def test_durations_read_as_in_prometheus(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


def test_durations_print_in_their_shortest_form() -> None:
    assert format_duration(dt.timedelta(seconds=5400)) == "1h30m"
    assert format_duration(dt.timedelta(0)) == "0s"


# --------------------------------------------------------------------------- metrics over a store


def test_the_window_includes_its_start_and_excludes_its_end(tmp_path: Path) -> None:
    s = store(tmp_path, ev("hr-1", -1), ev("hr-1", 0), ev("hr-1", 599.9), ev("hr-1", 600))
    assert s.measure("events")[("hr-1",)].value == 2


def test_violation_rate_counts_violations_and_blocks_over_checks(tmp_path: Path) -> None:
    outcomes = ["pass", "pass", "violation", "blocked", "pass"]
    s = store(tmp_path, *(ev("hr-1", i, "policy_check", outcome=o) for i, o in enumerate(outcomes)))
    sample = s.measure("violation_rate")[("hr-1",)]
    assert (sample.value, sample.samples) == (0.4, 5)


def test_policy_violations_count_with_all_checks_as_samples(tmp_path: Path) -> None:
    s = store(
        tmp_path,
        ev("hr-1", 1, "policy_check", outcome="violation"),
        ev("hr-1", 2, "policy_check", outcome="pass"),
        ev("hr-1", 3, "llm_call"),
    )
    sample = s.measure("policy_violations")[("hr-1",)]
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


def test_a_registered_metric_is_usable_by_rules() -> None:
    @dataclass(frozen=True)
    class Drift:
        name: str = "test_drift_score"
        help: str = "a drift statistic"
        by: tuple[str, ...] = ("agent_id",)

        def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
            return [Sample({"agent_id": "hr-1"}, 0.3, 500)]

    registry = metrics()
    registry.register(Drift())
    [rule] = parse_rules({"rules": [rule_doc(metric="test_drift_score")]}, "t.yaml", registry)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Drift())
    assert rule.metric == "test_drift_score"
    with pytest.raises(RuleError, match="unknown metric 'test_drift_score'"):
        parse_rules({"rules": [rule_doc(metric="test_drift_score")]})  # not in the built-ins


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
    log = LakeStore(tmp_path / CATALOG_FILE)
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
