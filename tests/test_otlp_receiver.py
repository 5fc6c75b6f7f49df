"""The OTLP receiver over loopback, fed by the OpenTelemetry SDK's own exporters.

The sink stands in for Kafka here (the Kafka path is in test_otlp_kafka.py): it records
what would be produced, or refuses it like a broker that is down.
"""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry

from agentwatch.ingest.otlp import grpc as otlp_grpc
from agentwatch.ingest.otlp.http import OtlpHttpServer
from agentwatch.ingest.otlp.mapping import MappingConfig
from agentwatch.ingest.otlp.metrics import OtlpMetrics
from agentwatch.ingest.otlp.receiver import Receiver, Unavailable

TOKEN = "s3cret-token"
CARD = "4111111111111111"  # a test card number the agent sends: never stored


class FakeKafka:
    """Records what the receiver produces; ``down`` makes it refuse like an unreachable broker."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.keys: list[bytes] = []
        self.unmapped: list[dict[str, Any]] = []
        self.down = 0  # refuse this many sends

    def send(self, events: Sequence[tuple[bytes, bytes]], unmapped: Sequence[bytes]) -> None:
        if self.down:
            self.down -= 1
            raise Unavailable("broker unreachable")
        self.keys += [k for k, _ in events]
        self.events += [json.loads(v) for _, v in events]
        self.unmapped += [json.loads(v) for v in unmapped]

    def close(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return sorted(e["kind"] for e in self.events)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def receiver(kafka: FakeKafka, registry: CollectorRegistry) -> Receiver:
    return Receiver(kafka, MappingConfig(), OtlpMetrics(registry))


def _http(receiver: Receiver, token: str | None = None, limit: int = 1 << 20) -> Iterator[str]:
    server = OtlpHttpServer(("127.0.0.1", 0), receiver, limit, token)
    server.serve_in_thread()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def url(receiver: Receiver) -> Iterator[str]:
    yield from _http(receiver)


@pytest.fixture
def secured_url(receiver: Receiver) -> Iterator[str]:
    yield from _http(receiver, token=TOKEN)


@pytest.fixture
def small_url(receiver: Receiver) -> Iterator[str]:
    yield from _http(receiver, limit=2_000)


def agent_run(fail_tool: bool = False) -> list[ReadableSpan]:
    """One agent run as the OTel SDK records it: agent span, a chat call, a tool call, noise."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "helpdesk", "deployment.environment.name": "dev"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("my.agent.framework")
    with tracer.start_as_current_span(
        "invoke_agent helpdesk-agent",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai",
                    "gen_ai.agent.name": "helpdesk-agent", "gen_ai.conversation.id": "c-1"},
    ):  # fmt: skip
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 80,
                        "gen_ai.usage.output_tokens": 12,
                        "gen_ai.input.messages": f"[{{\"content\": \"my card {CARD}\"}}]"},
        ):  # fmt: skip
            pass
        with tracer.start_as_current_span(
            "execute_tool search",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        ) as tool:
            if fail_tool:
                tool.record_exception(ValueError("no such order"))
                tool.set_status(Status(StatusCode.ERROR))
        with tracer.start_as_current_span("SELECT orders", attributes={"db.system": "sqlite"}):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def http_exporter(url: str, timeout: float = 5, **kwargs: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url, timeout=timeout, **kwargs)


def test_the_sdk_protobuf_exporter_delivers_an_agent_run(url: str, kafka: FakeKafka) -> None:
    assert http_exporter(url).export(agent_run()) == SpanExportResult.SUCCESS
    assert kafka.kinds() == ["llm_call", "session_end", "session_start", "tool_call"]
    assert {e["session_id"] for e in kafka.events} == {"c-1"}
    assert set(kafka.keys) == {b"c-1"}
    llm = next(e for e in kafka.events if e["kind"] == "llm_call")
    assert (llm["agent_id"], llm["model"], llm["input_tokens"], llm["output_tokens"]) == (
        "helpdesk-agent", "gpt-4o-mini", 80, 12)  # fmt: skip
    assert CARD not in json.dumps(kafka.events)
    assert [u["span_name"] for u in kafka.unmapped] == ["SELECT orders"]


def test_the_sdk_gzip_exporter_is_understood(url: str, kafka: FakeKafka) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression

    exporter = http_exporter(url, compression=Compression.Gzip)
    assert exporter.export(agent_run()) == SpanExportResult.SUCCESS
    assert len(kafka.events) == 4


def test_the_sdk_json_exporter_delivers_an_agent_run(url: str, kafka: FakeKafka) -> None:
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter

    assert OTLPSpanExporter(endpoint=url).export(agent_run()) == SpanExportResult.SUCCESS
    assert kafka.kinds() == ["llm_call", "session_end", "session_start", "tool_call"]
    assert all(len(e["trace_id"]) == 32 for e in kafka.events)


def test_the_sdk_grpc_exporter_delivers_an_agent_run(receiver: Receiver, kafka: FakeKafka) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    server, port = otlp_grpc.serve("127.0.0.1", 0, receiver, 1 << 20)
    try:
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5)
        assert exporter.export(agent_run(fail_tool=True)) == SpanExportResult.SUCCESS
    finally:
        server.stop(grace=None)
    assert kafka.kinds() == ["llm_call", "session_end", "session_start", "tool_call"]
    tool = next(e for e in kafka.events if e["kind"] == "tool_call")
    assert tool["status"] == "error" and tool["error_type"] == "ValueError"


def test_grpc_without_the_token_is_refused(receiver: Receiver, kafka: FakeKafka) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    server, port = otlp_grpc.serve("127.0.0.1", 0, receiver, 1 << 20, token=TOKEN)
    try:
        bad = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=3)
        assert bad.export(agent_run()) == SpanExportResult.FAILURE
        good = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=3,
                                headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert good.export(agent_run()) == SpanExportResult.SUCCESS
    finally:
        server.stop(grace=None)
    assert len(kafka.events) == 4


def test_when_kafka_cannot_take_the_spans_the_answer_is_503_with_retry_after(
    url: str, kafka: FakeKafka
) -> None:
    kafka.down = 1
    body = _request_body()
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(url, body)
    assert refused.value.code == 503
    assert refused.value.headers["Retry-After"] == "5"
    assert kafka.events == []


def test_the_exporter_retries_after_a_503_and_nothing_is_lost(url: str, kafka: FakeKafka) -> None:
    kafka.down = 1
    assert http_exporter(url, timeout=15).export(agent_run()) == SpanExportResult.SUCCESS
    assert len(kafka.events) == 4


def test_without_the_configured_token_the_answer_is_401(secured_url: str, kafka: FakeKafka) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(secured_url, _request_body())
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError):
        post(secured_url, _request_body(), {"Authorization": "Bearer wrong"})
    post(secured_url, _request_body(), {"Authorization": f"Bearer {TOKEN}"})
    assert len(kafka.events) == 4


def test_a_body_over_the_limit_is_413_also_once_inflated(small_url: str, kafka: FakeKafka) -> None:
    padding = {"custom.padding": "x" * 5_000}
    body = _request_body(padding)
    with pytest.raises(urllib.error.HTTPError) as big:
        post(small_url, body)
    assert big.value.code == 413
    compressed = gzip.compress(body)
    assert len(compressed) < 2_000
    with pytest.raises(urllib.error.HTTPError) as bomb:
        post(small_url, compressed, {"Content-Encoding": "gzip"})
    assert bomb.value.code == 413
    assert kafka.events == []


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b"\x0a\xff\xff", {}, 400),
        (b"hello", {"Content-Type": "text/plain"}, 415),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400),
        (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 400),
    ],
    ids=["not_protobuf", "wrong_type", "bad_gzip", "unknown_encoding"],
)
def test_a_body_that_is_not_an_export_gets_a_clear_4xx(
    url: str, body: bytes, headers: dict[str, str], code: int
) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(url, body, headers)
    assert refused.value.code == code


def test_rejected_spans_are_reported_in_partial_success(url: str, kafka: FakeKafka) -> None:
    doc = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "x"}, "spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "name": "chat", "startTimeUnixNano": "1", "endTimeUnixNano": "0",
         "attributes": [{"key": "gen_ai.operation.name",
                         "value": {"stringValue": "chat"}}]}]}]}]}  # fmt: skip
    answer = json.loads(post(url, json.dumps(doc).encode(), {"Content-Type": "application/json"}))
    assert answer["partialSuccess"]["rejectedSpans"] == "1"
    assert "rejected" in answer["partialSuccess"]["errorMessage"]
    assert kafka.events == []


def test_spans_are_counted_by_outcome_reason_and_scope(
    url: str, registry: CollectorRegistry
) -> None:
    http_exporter(url).export(agent_run())

    def value(outcome: str, reason: str) -> float | None:
        return registry.get_sample_value(
            "agentwatch_otlp_spans_total",
            {"outcome": outcome, "reason": reason, "scope": "my.agent.framework"},
        )

    assert value("mapped", "llm") == 1 and value("mapped", "agent") == 1
    assert value("unmapped", "not_genai") == 1
    assert (
        registry.get_sample_value(
            "agentwatch_otlp_attributes_total",
            {"outcome": "content_dropped", "scope": "my.agent.framework"},
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "agentwatch_otlp_requests_total", {"transport": "http", "code": "200"}
        )
        == 1
    )


def _request_body(extra: dict[str, str] | None = None) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    spans = agent_run()
    if extra:
        for s in spans:
            s._attributes = {**(s.attributes or {}), **extra}  # type: ignore[attr-defined]
    body: bytes = encode_spans(spans).SerializeToString()
    return body


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-protobuf", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: bytes = response.read()
        return data


def test_with_a_certificate_the_receiver_serves_https(
    receiver: Receiver, kafka: FakeKafka, tmp_path: Path
) -> None:
    import ssl
    import subprocess

    from tests.conftest import require_tool

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = OtlpHttpServer(("127.0.0.1", 0), receiver, 1 << 20, tls=(cert, key))
    server.serve_in_thread()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/v1/traces"
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(
            url, data=_request_body(), headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
    assert len(kafka.events) == 4
