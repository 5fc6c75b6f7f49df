"""Rules as written: the shipped set, validation of rule files, catalog thresholds,
templates and durations."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

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
from tests.rules_helpers import CATALOG

RUNBOOK_IDS = {"contain-agent", "disable-tool", "rollback-release", "notify-owner"}


@dataclass(frozen=True)
class FixedMetric:
    """A metric a test registers: the same ``samples`` for every window."""

    name: str
    by: tuple[str, ...] = ("agent_id",)
    samples: tuple[Sample, ...] = ()
    help: str = "a test metric"
    unit: str = ""

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
        return list(self.samples)


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
        "failed_check_rate",
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
    assert "failed_check_rate" in message


def test_an_unknown_comparison_is_refused() -> None:
    assert "test.yaml: rules[0].op: Invalid enum value '=>'" in refused(op="=>")


def test_a_misspelt_key_is_refused() -> None:
    assert "test.yaml: rules[0].fro: unknown key (did you mean for?)" in refused(fro="5m")


def test_a_catalog_threshold_must_name_a_catalog_field() -> None:
    assert "rules[0].threshold.catalog: must be one of" in refused(threshold={"catalog": "slo.p50"})


def test_a_catalog_threshold_needs_a_per_agent_metric() -> None:
    registry = metrics()
    registry.register(FixedMetric("calls_per_model", by=("model",)))
    message = refused(registry, metric="calls_per_model", threshold={"catalog": "daily_budget_usd"})
    assert "needs a per-agent metric" in message


def test_a_rule_may_not_set_the_labels_the_evaluator_sets() -> None:
    assert "labels.severity: is set by the evaluator" in refused(labels={"severity": "x"})
    assert "labels.agent_id: is set by the evaluator" in refused(labels={"agent_id": "x"})


def test_an_annotation_template_outside_the_supported_subset_is_refused() -> None:
    message = refused(annotations={"summary": "{{ .Labels.agent_id }}"})
    assert "annotations.summary: cannot render" in message


def test_a_summary_is_required() -> None:
    assert "annotations.summary: is required" in refused(annotations={"description": "x"})


def test_a_runbook_url_must_be_a_runbook_path_or_a_url() -> None:
    assert "annotations.runbook_url: must be" in refused(
        annotations={"summary": "s", "runbook_url": "contain-agent"}
    )


def test_min_samples_must_be_at_least_one() -> None:
    assert "rules[0].min_samples: Expected `int` >= 1" in refused(min_samples=0)


def test_a_duration_in_words_is_refused() -> None:
    assert "rules[0].window: not a duration: '5 minutes'" in refused(window="5 minutes")


def test_a_severity_outside_the_known_ones_is_refused() -> None:
    assert "rules[0].severity: Invalid enum value 'page'" in refused(severity="page")


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


# An SLO rule: the agent's own p95 latency bound, 9 s where the catalog gives none.
LATENCY_SLO = Rule(
    "R", "llm_latency_p95_ms", ">", CatalogThreshold("slo.p95_latency_ms", 9000),
    dt.timedelta(minutes=5),
)  # fmt: skip


def test_a_catalog_threshold_is_the_agents_value() -> None:
    assert LATENCY_SLO.threshold_for({"agent_id": "hr-1"}, CATALOG) == 5000


def test_a_catalog_threshold_falls_back_to_its_default() -> None:
    assert LATENCY_SLO.threshold_for({"agent_id": "free-1"}, CATALOG) == 9000
    assert LATENCY_SLO.threshold_for({"agent_id": "not-catalogued"}, CATALOG) == 9000


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


def test_a_registered_metric_is_usable_by_rules() -> None:
    drift = FixedMetric("test_drift_score", samples=(Sample({"agent_id": "hr-1"}, 0.3, 500),))
    registry = metrics()
    registry.register(drift)
    [rule] = parse_rules({"rules": [rule_doc(metric="test_drift_score")]}, "t.yaml", registry)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(drift)
    assert rule.metric == "test_drift_score"
    with pytest.raises(RuleError, match="unknown metric 'test_drift_score'"):
        parse_rules({"rules": [rule_doc(metric="test_drift_score")]})  # not in the built-ins
