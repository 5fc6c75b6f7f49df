"""OpenTelemetry into the store, against the real broker: the receiver and the Collector topic."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SpanExportResult

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.attach import connect as connect_lake
from tests.conftest import TopicFactory
from tests.pipeline_helpers import AGENTWATCH, produce, run_to_idle
from tests.test_otlp_receiver import agent_run, http_exporter


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "agentwatch.sqlite"


@pytest.fixture
def receiver_url(kafka_broker: BrokerInfo, topic: TopicFactory) -> Iterator[tuple[str, str]]:
    name = topic(partitions=3)
    port = free_port()
    proc = subprocess.Popen(
        [*AGENTWATCH, "otlp", "--bootstrap", kafka_broker.bootstrap, "--topic", name,
         "--http-port", str(port), "--grpc-port", "0"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1/traces", name
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = connect_lake(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_an_otel_agent_lands_as_a_session_through_the_receiver(
    kafka_broker: BrokerInfo, receiver_url: tuple[str, str], db: Path
) -> None:
    url, name = receiver_url
    spans = agent_run()
    assert http_exporter(url).export(spans) == SpanExportResult.SUCCESS
    # an exporter's retry of the same spans lands nothing twice
    assert http_exporter(url).export(spans) == SpanExportResult.SUCCESS
    run_to_idle(kafka_broker, name, db)
    sessions = rows(
        db,
        "SELECT session_id, agent_id, environment, llm_calls, tool_calls, input_tokens, "
        "output_tokens, resolution, contained, duration_s > 0 FROM sessions",
    )
    assert sessions == [("c-1", "helpdesk-agent", "dev", 1, 1, 80, 12, "resolved", True, True)]
    assert rows(db, "SELECT model, latency_ms >= 0 FROM events WHERE kind = 'llm_call'") == [
        ("gpt-4o-mini", True)
    ]
    # samples are not deduplicated: the retry sampled the same span again
    db_span = next(s for s in spans if s.name == "SELECT orders")
    assert rows(db, "SELECT DISTINCT reason, span_name, span_id FROM otlp_unmapped") == [
        ("not_genai", "SELECT orders", format(db_span.context.span_id, "016x"))
    ]


def test_collector_records_on_an_otlp_proto_topic_land_through_the_same_mapping(
    kafka_broker: BrokerInfo, topic: TopicFactory, db: Path
) -> None:
    events, spans_topic = topic(partitions=3), topic(partitions=2)
    run = agent_run(fail_tool=True)
    record = encode_spans(run).SerializeToString()
    trace_key = format(run[0].context.trace_id, "032x").encode()
    produce(kafka_broker.bootstrap, spans_topic, [(trace_key, record), (b"x", b"not a request")])
    run_to_idle(kafka_broker, events, db, "--otlp-topic", spans_topic)
    run_to_idle(kafka_broker, events, db, "--otlp-topic", spans_topic)  # a rerun adds nothing
    assert rows(
        db, "SELECT session_id, llm_calls, tool_calls, errors, contained FROM sessions"
    ) == [("c-1", 1, 1, 1, True)]
    assert rows(db, "SELECT count(*) FROM events") == [(4,)]
    assert rows(db, "SELECT reason_code FROM dead_letters") == [("not_otlp",)]
    assert rows(db, "SELECT reason, scope FROM otlp_unmapped") == [
        ("not_genai", "my.agent.framework")
    ]
