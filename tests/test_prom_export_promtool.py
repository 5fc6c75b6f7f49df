"""The Prometheus export, checked by the real promtool: ``check rules`` on the shipped rule
set and ``test rules`` on series that must (and must not) fire each exported rule.

The expected annotations are rendered by agentwatch's own evaluator (``rules.render``),
so these tests also prove that Prometheus fills the exported templates the same way.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentwatch.alerts.alertmanager.export import export_rules
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.rules import Rule, load_rules, parse_rules, render
from agentwatch.alerts.rules.metrics import SqlMetric, metrics
from agentwatch.cli import main
from agentwatch.processors.metrics.promql import StoreOnly
from tests.conftest import require_tool
from tests.prom_export_helpers import CATALOG, write_rules

STEP = "15s"


RULES = parse_rules(
    yaml.safe_load(
        """
rules:
  - name: ErrorRateHigh
    metric: error_rate
    window: 1m
    op: ">"
    threshold: {catalog: slo.error_rate_max, default: 0.1}
    min_samples: 20
    for: 1m
    severity: warning
    labels: {category: reliability}
    annotations:
      summary: "{{ $value | humanizePercentage }} > {{ $threshold | humanizePercentage }}"
      description: "{{ $samples }} events"
  - name: ContainmentLow
    metric: containment_rate
    window: 5m
    op: "<"
    threshold: 0.8
    min_samples: 10
    for: 0s
    severity: warning
    annotations:
      summary: "{{ $labels.agent_id }}: {{ $value | humanizePercentage }} of {{ $samples }}"
  - name: CostSpike
    metric: cost_usd
    change: ratio
    window: 5m
    op: ">"
    threshold: 3
    min_samples: 10
    severity: warning
    annotations:
      summary: "{{ $labels.agent_id }} spends {{ $value | humanize }}x more"
  - name: LatencyHigh
    metric: llm_latency_p95_ms
    window: 5m
    op: ">"
    threshold: 4000
    min_samples: 10
    severity: error
    annotations:
      summary: "{{ $labels.agent_id }} p95 {{ $value | humanize }} ms"
  - name: Shadow
    metric: shadow_agent_events
    window: 5m
    op: ">"
    threshold: 0
    severity: critical
    annotations:
      summary: "shadow {{ $labels.agent_id }}"
  - name: Unapproved
    metric: unapproved_model_calls
    window: 5m
    op: ">"
    threshold: 0
    severity: critical
    annotations:
      summary: "{{ $labels.agent_id }} uses {{ $labels.model }}"
  - name: Retired
    metric: retired_agent_events
    window: 5m
    op: ">"
    threshold: 0
    severity: critical
    keep_firing_for: 2m
    annotations:
      summary: "{{ $labels.agent_id }} is retired"
  - name: Silent
    metric: silence_s
    window: 1h
    op: ">"
    threshold: 600
    severity: warning
    annotations:
      summary: "{{ $labels.agent_id }} silent for {{ $value | humanizeDuration }}"
  - name: ToolErrors
    metric: tool_error_rate
    window: 5m
    op: ">"
    threshold: 0.5
    severity: warning
    annotations:
      summary: "x"
""",
    ),
    "test.yaml",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=120
    )


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


def expected(
    rule: Rule, labels: dict[str, str], value: float, threshold: float, samples: int
) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": rule.severity, **rule.labels, **labels},
        "exp_annotations": {
            k: render(v, labels, value, threshold, samples) for k, v in rule.annotations.items()
        },
    }


def run_unit_tests(tmp_path: Path, rules_file: Path, tests: list[dict[str, Any]]) -> None:
    doc = {"rule_files": [str(rules_file)], "evaluation_interval": STEP, "tests": tests}
    test_file = tmp_path / "tests.yml"
    test_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr + rules_file.read_text()


RULE = {r.name: r for r in RULES}


def test_unsupported_metrics_are_listed_not_exported(tmp_path: Path) -> None:
    export = export_rules(RULES, CATALOG)
    assert [name for name, _ in export.skipped] == ["ToolErrors"]
    text = write_rules(tmp_path, RULES, CATALOG).read_text()
    assert "#   - ToolErrors: metric tool_error_rate" in text


def test_exported_rules_pass_promtool_check(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(write_rules(tmp_path, RULES, CATALOG)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_per_agent_thresholds_from_the_catalog(tmp_path: Path) -> None:
    """10% errors: above strict-bot's 2% and the 10%-exclusive default, below lenient's 20%."""
    rule = RULE["ErrorRateHigh"]
    inputs = []
    for agent in ("strict-bot", "lenient.bot", "unlisted-bot", "tiny-bot"):
        per_step = "1" if agent == "tiny-bot" else "10"  # tiny-bot: too few samples
        errors = "0+0.1x40" if agent == "tiny-bot" else "0+1x40"
        inputs.append(series("agentwatch_events_total", {"agent_id": agent, "kind": "llm_call"},
                             f"0+{per_step}x40"))  # fmt: skip
        inputs.append(series("agentwatch_errors_total", {"agent_id": agent}, errors))
    inputs.append(
        series("agentwatch_events_total", {"agent_id": "more-bot", "kind": "x"}, "0+10x40")
    )
    inputs.append(series("agentwatch_errors_total", {"agent_id": "more-bot"}, "0+2x40"))
    # 40 events and 4 errors a minute: 10% > 2% (strict), not > 20% (lenient), not > 10%.
    # more-bot: 20% > 10% default.
    test = {
        "interval": STEP,
        "input_series": inputs,
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": rule.name, "exp_alerts": []},  # pending
            {
                "eval_time": "3m",
                "alertname": rule.name,
                "exp_alerts": [
                    expected(rule, {"agent_id": "more-bot"}, 0.2, 0.1, 40),
                    expected(rule, {"agent_id": "strict-bot"}, 0.1, 0.02, 40),
                ],
            },
        ],
    }
    run_unit_tests(tmp_path, write_rules(tmp_path, RULES, CATALOG), [test])


def test_containment_with_no_contained_session_fires(tmp_path: Path) -> None:
    """No contained session at all: the contained counter does not even exist, rate 0."""
    rule = RULE["ContainmentLow"]
    inputs = [
        series("agentwatch_sessions_total", {"agent_id": "a", "resolution": "escalated"},
               "0+1x40"),
        series("agentwatch_sessions_total", {"agent_id": "b", "resolution": "resolved"},
               "0+1x40"),
        series("agentwatch_sessions_contained_total", {"agent_id": "b"}, "0+1x40"),
    ]  # fmt: skip
    test = {
        "interval": STEP,
        "input_series": inputs,
        "alert_rule_test": [
            {
                "eval_time": "6m",
                "alertname": rule.name,
                "exp_alerts": [expected(rule, {"agent_id": "a"}, 0.0, 0.8, 20)],
            }
        ],
    }
    run_unit_tests(tmp_path, write_rules(tmp_path, RULES, CATALOG), [test])


def test_change_latency_and_catalog_lists(tmp_path: Path) -> None:
    cost, latency = RULE["CostSpike"], RULE["LatencyHigh"]
    shadow, unapproved, retired = RULE["Shadow"], RULE["Unapproved"], RULE["Retired"]
    bucket = "agentwatch_llm_call_duration_seconds_bucket"
    inputs = [
        # Cost: $1 per 15 s for 5 minutes, then $4 per 15 s: 4x the window before.
        series("agentwatch_cost_usd_total", {"agent_id": "strict-bot", "model": "gpt-4o-mini"},
               "0+1x20 24+4x20"),
        series("agentwatch_llm_calls_total", {"agent_id": "strict-bot", "model": "gpt-4o-mini"},
               "0+1x40"),
        # Latency: every call between 5 s and 8 s, so p95 falls in that bucket.
        series(bucket, {"agent_id": "lenient.bot", "le": "5.0"}, "0+0x40"),
        series(bucket, {"agent_id": "lenient.bot", "le": "8.0"}, "0+2x40"),
        series(bucket, {"agent_id": "lenient.bot", "le": "+Inf"}, "0+2x40"),
        series("agentwatch_llm_call_duration_seconds_count", {"agent_id": "lenient.bot"},
               "0+2x40"),
        # Shadow AI and a retired agent at work; an unapproved model.
        series("agentwatch_events_total", {"agent_id": "ghost-bot", "kind": "llm_call"},
               "0+1x40"),
        series("agentwatch_events_total", {"agent_id": "old-bot", "kind": "llm_call"},
               "0+1x40"),
        series("agentwatch_llm_calls_total", {"agent_id": "strict-bot", "model": "gpt-5"},
               "0+1x40"),
    ]  # fmt: skip
    test = {
        "interval": STEP,
        "input_series": inputs,
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": cost.name,
                "exp_alerts": [expected(cost, {"agent_id": "strict-bot"}, 4.0, 3.0, 20)],
            },
            {
                "eval_time": "10m",
                "alertname": latency.name,
                # histogram_quantile interpolates in the 5-8 s bucket: 5 + 3 * 0.95 = 7.85 s.
                "exp_alerts": [expected(latency, {"agent_id": "lenient.bot"}, 7850.0, 4000, 40)],
            },
            {
                "eval_time": "10m",
                "alertname": shadow.name,
                "exp_alerts": [expected(shadow, {"agent_id": "ghost-bot"}, 20.0, 0, 20)],
            },
            {
                "eval_time": "10m",
                "alertname": unapproved.name,
                "exp_alerts": [
                    expected(unapproved, {"agent_id": "strict-bot", "model": "gpt-5"}, 20, 0, 20)
                ],
            },
            {
                "eval_time": "10m",
                "alertname": retired.name,
                "exp_alerts": [expected(retired, {"agent_id": "old-bot"}, 20.0, 0, 20)],
            },
        ],
    }
    run_unit_tests(tmp_path, write_rules(tmp_path, RULES, CATALOG), [test])


def test_silent_active_agent(tmp_path: Path) -> None:
    rule = RULE["Silent"]
    inputs = [
        # strict-bot: events for 20 minutes, then none. lenient.bot: events all along.
        series("agentwatch_events_total", {"agent_id": "strict-bot", "kind": "x"},
               "0+1x80 80x80"),
        series("agentwatch_events_total", {"agent_id": "lenient.bot", "kind": "x"}, "0+1x160"),
    ]  # fmt: skip
    test = {
        "interval": STEP,
        "input_series": inputs,
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": rule.name, "exp_alerts": []},
            {
                "eval_time": "35m",
                "alertname": rule.name,
                "exp_alerts": [expected(rule, {"agent_id": "strict-bot"}, 600.0, 600, 1)],
            },
        ],
    }
    run_unit_tests(tmp_path, write_rules(tmp_path, RULES, CATALOG), [test])


def test_shipped_rules_export_through_the_cli_and_pass_promtool(tmp_path: Path) -> None:
    out = tmp_path / "agentwatch.rules.yml"
    assert (
        main(["alerts", "export-prometheus", "--out", str(out), "--catalog", str(EXAMPLE_CATALOG)])
        == 0
    )
    result = promtool("check", "rules", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    exported = {r["alert"] for g in yaml.safe_load(out.read_text())["groups"] for r in g["rules"]}
    shipped = load_rules()
    skipped = {r.name for r in shipped} - exported
    assert skipped == {
        name for name, _ in export_rules(shipped, load_catalog(EXAMPLE_CATALOG)).skipped
    }
    registry = metrics()
    left_out = [registry[r.metric] for r in shipped if r.name in skipped]
    assert all(isinstance(m, SqlMetric) and isinstance(m.promql, StoreOnly) for m in left_out)


def test_shipped_violation_burst_fires_in_prometheus(tmp_path: Path) -> None:
    """The shipped violation-rate rule, whatever its numbers, on a 50% violation burst."""
    rule = next(r for r in load_rules() if r.metric == "failed_check_rate")
    assert not isinstance(rule.threshold, dict) and float(rule.threshold) < 0.5  # type: ignore[arg-type]
    window_s = rule.window.total_seconds()
    steps_per_window = int(window_s // 15)
    per_step = -(-2 * rule.min_samples // (2 * steps_per_window)) * 2  # even, >= 2x min
    half = per_step // 2
    agent = "hr-assistant-1"
    inputs = [
        series("agentwatch_policy_checks_total", {"agent_id": agent, "outcome": "pass"},
               f"0+{half}x200"),
        series("agentwatch_policy_checks_total", {"agent_id": agent, "outcome": "violation"},
               f"0+{half}x200"),
    ]  # fmt: skip
    eval_s = int(window_s + rule.for_.total_seconds()) + 60
    samples = per_step * steps_per_window
    test = {
        "interval": STEP,
        "input_series": inputs,
        "alert_rule_test": [
            {
                "eval_time": f"{eval_s}s",
                "alertname": rule.name,
                "exp_alerts": [
                    expected(rule, {"agent_id": agent}, 0.5, float(rule.threshold), samples)  # type: ignore[arg-type]
                ],
            }
        ],
    }
    rules_file = write_rules(tmp_path, load_rules(), load_catalog(EXAMPLE_CATALOG))
    run_unit_tests(tmp_path, rules_file, [test])


@pytest.mark.parametrize("name", ["ErrorRateHigh", "Unapproved"])
def test_expressions_are_readable_blocks(tmp_path: Path, name: str) -> None:
    doc = yaml.safe_load(write_rules(tmp_path, RULES, CATALOG).read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r["alert"] == name]
    assert '"strict-bot"' in rule["expr"] or "|strict-bot" in rule["expr"]  # no "\\-"
    assert "lenient\\\\.bot" in rule["expr"] or name == "Unapproved"  # the dot is escaped
