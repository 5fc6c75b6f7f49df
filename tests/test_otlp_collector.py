"""A real OpenTelemetry Collector (``make collector``) in front of agentwatch.

The Collector receives OTLP from an agent and forwards it either over OTLP/HTTP to
``agentwatch otlp`` or with its Kafka exporter to the topic ``agentwatch process
--otlp-topic`` lands: both ways the agent's run is a session in the store.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.location import METADATA_FILE
from tests.conftest import TopicFactory, require_tool
from tests.otlp_helpers import otlp_receiver, rows, wait_for_port, wait_for_records
from tests.pipeline_helpers import run_to_idle
from tests.test_otlp_receiver import CARD, agent_run, http_exporter

ROOT = Path(__file__).resolve().parent.parent
# the first test builds the Collector when build/ holds none: minutes of Go on a cold cache
pytestmark = pytest.mark.timeout(1800)
SESSION = ("c-1", "helpdesk-agent", "dev", 1, 1, 80, 12, "resolved", True)
SESSION_SQL = (
    "SELECT session_id, agent_id, environment, llm_calls, tool_calls, input_tokens, "
    "output_tokens, resolution, contained FROM sessions"
)


@pytest.fixture(scope="module")
def collector() -> Path:
    """The Collector binary: built by ``make collector`` on first use, then cached."""
    done = subprocess.run(
        ["make", "-s", "collector"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
            require_tool("go")  # not cached and nothing to build it with
        pytest.fail(f"make collector failed: {done.stderr[-3000:]}", pytrace=False)
    return Path(done.stdout.strip().splitlines()[-1])


@contextmanager
def running(binary: Path, config: str, tmp_path: Path, port: int) -> Iterator[None]:
    path = tmp_path / "collector.yaml"
    path.write_text(config)
    log = (tmp_path / "collector.log").open("wb")
    proc = subprocess.Popen([str(binary), f"--config={path}"], stderr=log)
    try:
        wait_for_port(port, proc, "the collector")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def config(http_port: int, exporter: str, exporter_config: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{http_port}"}}
processors:
  batch: {{timeout: 100ms}}
exporters:
  {exporter}:
{exporter_config}
service:
  telemetry:
    metrics: {{level: none}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [{exporter}]}}
"""


def test_a_collector_forwarding_otlp_to_the_receiver_lands_the_agents_session(
    collector: Path, kafka_broker: BrokerInfo, topic: TopicFactory, tmp_path: Path
) -> None:
    events, db = topic(partitions=3), tmp_path / "data" / METADATA_FILE
    token = tmp_path / "token"
    token.write_text("s3cret-collector-token\n")
    with otlp_receiver(kafka_broker, events, "--token-file", str(token)) as receiver_port:
        port = free_port()
        exporter = (
            f'    endpoint: "http://127.0.0.1:{receiver_port}"\n'
            '    headers: {Authorization: "Bearer s3cret-collector-token"}\n'
            "    compression: gzip"
        )
        with running(collector, config(port, "otlp_http", exporter), tmp_path, port):
            url = f"http://127.0.0.1:{port}/v1/traces"
            assert http_exporter(url).export(agent_run()) == SpanExportResult.SUCCESS
            wait_for_records(kafka_broker, events, 4)
    run_to_idle(kafka_broker, events, db)
    assert rows(db, SESSION_SQL) == [SESSION]
    assert CARD not in str(rows(db, "SELECT attributes FROM events"))


def test_a_collectors_kafka_exporter_topic_lands_through_the_processor(
    collector: Path, kafka_broker: BrokerInfo, topic: TopicFactory, tmp_path: Path
) -> None:
    events, spans, db = topic(partitions=3), topic(partitions=2), tmp_path / "data" / METADATA_FILE
    port = free_port()
    exporter = (
        f'    brokers: ["{kafka_broker.bootstrap}"]\n'
        f"    traces: {{topic: {spans}, encoding: otlp_proto}}"
    )
    with running(collector, config(port, "kafka", exporter), tmp_path, port):
        url = f"http://127.0.0.1:{port}/v1/traces"
        assert http_exporter(url).export(agent_run()) == SpanExportResult.SUCCESS
        wait_for_records(kafka_broker, spans, 1)
    run_to_idle(kafka_broker, events, db, "--otlp-topic", spans)
    assert rows(db, SESSION_SQL) == [SESSION]
    assert rows(db, "SELECT reason FROM otlp_unmapped") == [("not_genai",)]
