"""Prometheus export: per-batch aggregation and the collector's exposition."""

from __future__ import annotations

from typing import Any

import polars as pl
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.processors.landing.pipeline import LandedBatch, metric_deltas
from agentwatch.processors.landing.sessions import OUTCOME_SCHEMA
from agentwatch.processors.metrics.exporter import (
    COUNTERS,
    LATENCY_BUCKETS_S,
    CounterDelta,
    FleetCollector,
    PartitionHealth,
    Source,
    batch_deltas,
)
from tests.frames import events


def scrape(collector: FleetCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert matches, f"no sample {name} {labels}"
    return float(sum(matches))


LLM = {"kind": "llm_call", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10}


def exported(*rows: dict, sessions: pl.DataFrame | None = None, limit: int = 200) -> dict:  # type: ignore[type-arg]
    collector = FleetCollector("agent-events", max_label_values=limit)
    frames: dict[Source, pl.DataFrame] = {"events": events(*rows)}
    if sessions is not None:
        frames["sessions"] = sessions
    collector.apply(batch_deltas(frames))
    return scrape(collector)


def test_events_are_counted_by_kind() -> None:
    s = exported(LLM, LLM, {"kind": "tool_call", "tool_name": "x"})
    assert sample(s, "agentwatch_events_total", kind="llm_call") == 2
    assert sample(s, "agentwatch_events_total", kind="tool_call") == 1


def test_tokens_are_counted_by_type() -> None:
    s = exported(LLM | {"cache_read_tokens": 40}, LLM)
    assert sample(s, "agentwatch_tokens_total", type="input", model="gpt-4o") == 200
    assert sample(s, "agentwatch_tokens_total", type="output") == 20
    assert sample(s, "agentwatch_tokens_total", type="cache_read") == 40


def test_cost_sums_the_effective_cost_and_unpriced_calls_are_counted_apart() -> None:
    s = exported(
        LLM | {"cost_usd_effective": 0.25, "cost_source": "pricing"},
        LLM | {"cost_usd_effective": 0.5, "cost_source": "event"},
        LLM | {"model": "mystery-1", "cost_source": "unpriced"},
    )
    assert sample(s, "agentwatch_cost_usd_total") == 0.75
    assert sample(s, "agentwatch_unpriced_events_total", model="mystery-1") == 1


def test_llm_latency_histogram_has_cumulative_buckets_in_seconds() -> None:
    s = exported(
        LLM | {"latency_ms": 80.0}, LLM | {"latency_ms": 700.0}, LLM | {"latency_ms": 9000.0}
    )
    name = "agentwatch_llm_call_duration_seconds_bucket"
    assert sample(s, name, le="0.1") == 1
    assert sample(s, name, le="1.0") == 2
    assert sample(s, name, le="+Inf") == 3
    assert sample(s, "agentwatch_llm_call_duration_seconds_count") == 3
    assert abs(sample(s, "agentwatch_llm_call_duration_seconds_sum") - 9.78) < 1e-9


def test_policy_violations_and_blocks_are_counted_by_policy_and_severity() -> None:
    s = exported(
        {"kind": "policy_check", "policy_id": "pii", "outcome": "violation", "severity": "high"},
        {"kind": "policy_check", "policy_id": "pii", "outcome": "blocked", "severity": "high"},
        {"kind": "policy_check", "policy_id": "pii", "outcome": "pass"},
        {"kind": "security", "category": "jailbreak", "action": "blocked"},
    )
    assert sample(s, "agentwatch_policy_violations_total", policy_id="pii", severity="high") == 1
    assert sample(s, "agentwatch_blocked_actions_total", source="policy") == 1
    assert sample(s, "agentwatch_blocked_actions_total", source="security") == 1
    assert sample(s, "agentwatch_security_events_total", category="jailbreak") == 1
    assert sample(s, "agentwatch_policy_checks_total", outcome="pass") == 1


def test_sessions_are_counted_by_resolution_with_containment() -> None:
    outcomes = pl.DataFrame(
        [
            ("hr", "1", "prod", "resolved", 10.0, True),
            ("hr", "1", "prod", "resolved", 20.0, False),
            ("hr", "1", "prod", "escalated", None, False),
        ],
        schema=OUTCOME_SCHEMA,
        orient="row",
    )
    s = exported(sessions=outcomes)
    assert sample(s, "agentwatch_sessions_total", resolution="resolved") == 2
    assert sample(s, "agentwatch_sessions_contained_total") == 1
    assert sample(s, "agentwatch_session_duration_seconds_count") == 2


def test_label_values_past_the_limit_fold_into_other_and_are_counted() -> None:
    rows = [LLM | {"model": f"m{i}"} for i in range(5)]
    s = exported(*rows, limit=3)
    assert sample(s, "agentwatch_llm_calls_total", model="other") == 2
    assert sample(s, "agentwatch_label_values_folded_total", label="model") > 0


def test_deltas_from_two_batches_add_up() -> None:
    collector = FleetCollector("agent-events")
    collector.apply(batch_deltas({"events": events(LLM)}))
    collector.apply(batch_deltas({"events": events(LLM, LLM)}))
    assert sample(scrape(collector), "agentwatch_llm_calls_total") == 3


def test_batches_landed_together_export_what_each_would_alone() -> None:
    def landed(*rows: dict[str, Any]) -> LandedBatch:
        return LandedBatch(
            events=events(*rows),
            dead_letters=pl.DataFrame(),
            sessions_ended=pl.DataFrame(schema=OUTCOME_SCHEMA),
            duplicates=0,
        )

    tool = {"kind": "tool_call", "tool_name": "search", "latency_ms": 40.0}
    parts = [landed(LLM, tool), landed(LLM, {**LLM, "model": "claude"}), landed(tool)]
    together, alone = FleetCollector("agent-events"), FleetCollector("agent-events")
    together.apply(metric_deltas(parts))
    for part in parts:
        alone.apply(metric_deltas([part]))
    assert scrape(together) == scrape(alone)
    assert sample(scrape(together), "agentwatch_llm_calls_total") == 3


def test_the_pipeline_reports_lag_per_partition() -> None:
    collector = FleetCollector("agent-events")
    collector.partitions[2] = PartitionHealth(lag=17)
    assert sample(scrape(collector), "agentwatch_pipeline_consumer_lag", partition="2") == 17


@settings(max_examples=50, deadline=None)
@given(latencies=st.lists(st.floats(0, 120_000, allow_nan=False), min_size=1, max_size=60))
@example(latencies=[b * 1000 for b in LATENCY_BUCKETS_S])  # each on a bound: in that bucket
@example(latencies=[0.0, 49.999, 50.001, 60_000.5])
def test_histogram_buckets_equal_a_direct_count(latencies: list[float]) -> None:
    s = exported(*(LLM | {"latency_ms": v} for v in latencies))
    for bound in LATENCY_BUCKETS_S:
        expected = sum(1 for v in latencies if v / 1000 <= bound)
        got = sample(s, "agentwatch_llm_call_duration_seconds_bucket", le=repr(float(bound)))
        assert got == expected
    assert sample(s, "agentwatch_llm_call_duration_seconds_count") == len(latencies)


KINDS_MIX: list[dict[str, Any]] = [
    LLM | {"agent_id": "a", "latency_ms": 900.0, "cost_source": "unpriced"},
    LLM | {"agent_id": "b", "model": "small", "latency_ms": 40.0, "status": "error"},
    {"kind": "tool_call", "agent_id": "a", "tool_name": "kb.search", "latency_ms": 300.0},
    {"kind": "policy_check", "agent_id": "a", "policy_id": "pii", "outcome": "violation"},
    {"kind": "policy_check", "agent_id": "b", "policy_id": "pii", "outcome": "blocked"},
    {"kind": "security", "agent_id": "b", "category": "injection", "action": "blocked"},
    {"kind": "feedback", "agent_id": "a", "score": 4.0},
    {"kind": "feedback", "agent_id": "a", "score": -1.0},
]


def test_each_counter_equals_a_direct_group_by_of_its_filtered_events() -> None:
    frame = events(*KINDS_MIX, *KINDS_MIX[:3]).with_columns(
        source=pl.when(pl.col("kind") == "security")
        .then(pl.lit("security"))
        .otherwise(pl.lit("policy"))
    )
    got = {
        (d.spec.name, d.spec.const, labels): value
        for d in batch_deltas({"events": frame})
        if isinstance(d, CounterDelta)
        for labels, value in d.rows
    }
    expected = {}
    for spec in (c for c in COUNTERS if c.source == "events"):
        chosen = frame.filter(spec.where) if spec.where is not None else frame
        for *labels, value in chosen.group_by(spec.labels).agg(spec.value).iter_rows():
            key = tuple("" if v is None else str(v) for v in labels)
            expected[(spec.name, spec.const, key)] = float(value or 0)
    assert got == expected
