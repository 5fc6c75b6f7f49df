"""docs/metrics.md lists every metric the processor exports."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.processors.metrics.exporter import (
    COUNTERS,
    HISTOGRAMS,
    FleetCollector,
    batch_deltas,
)
from tests.frames import events

DOC = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()


def test_every_declared_metric_is_documented() -> None:
    for name in {c.name for c in COUNTERS} | {h.name for h in HISTOGRAMS}:
        assert f"`{name}`" in DOC, name


def test_every_exported_family_is_documented() -> None:
    collector = FleetCollector("agent-events")
    collector.apply(batch_deltas({"events": events({"kind": "llm_call", "model": "m"})}))
    registry = CollectorRegistry()
    registry.register(collector)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in DOC, name
