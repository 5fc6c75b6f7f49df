"""Real agent frameworks' OpenTelemetry, through the receiver: what they emit maps right."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from agentwatch.ingest.otlp.mapping import MappingConfig
from agentwatch.ingest.otlp.metrics import OtlpMetrics
from agentwatch.ingest.otlp.receiver import Receiver
from tests.test_otlp_receiver import FakeKafka, _http, http_exporter


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def url(kafka: FakeKafka) -> Iterator[str]:
    yield from _http(Receiver(kafka, MappingConfig(), OtlpMetrics(CollectorRegistry())))


def test_a_pydantic_ai_agent_with_one_tool_lands_as_a_contained_session(
    url: str, kafka: FakeKafka
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "refunds-svc"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    agent = Agent(TestModel(), name="refunds")
    agent.instrument = InstrumentationSettings(tracer_provider=provider)

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        """Where an order is."""
        return f"order {order_id} shipped to jane@example.com"

    agent.run_sync("where is my order?")
    provider.shutdown()
    assert http_exporter(url).export(memory.get_finished_spans()) == SpanExportResult.SUCCESS

    assert kafka.kinds() == ["llm_call", "llm_call", "session_end", "session_start", "tool_call"]
    assert len({e["session_id"] for e in kafka.events}) == 1
    assert {e["agent_id"] for e in kafka.events} == {"refunds"}
    calls = [e for e in kafka.events if e["kind"] == "llm_call"]
    assert {(c["model"], c["provider"]) for c in calls} == {("test", "test")}
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in calls)
    # the agent span's aggregated usage is not counted again
    end = next(e for e in kafka.events if e["kind"] == "session_end")
    assert end["resolution"] == "resolved" and end["latency_ms"] > 0
    tool = next(e for e in kafka.events if e["kind"] == "tool_call")
    assert tool["tool_name"] == "lookup_order"
    assert "jane@example.com" not in json.dumps(kafka.events)
    assert "where is my order" not in json.dumps(kafka.events)


def test_the_demos_otel_agent_sends_sessions_through_the_receiver(
    url: str, kafka: FakeKafka
) -> None:
    from agentwatch.commands.demo_otel import AGENT_NAME, run_agent

    assert run_agent(url, runs=3) == 12
    ends = [e for e in kafka.events if e["kind"] == "session_end"]
    assert len(ends) == 3 and {e["agent_id"] for e in ends} == {AGENT_NAME}
    assert {e["environment"] for e in kafka.events} == {"prod"}
