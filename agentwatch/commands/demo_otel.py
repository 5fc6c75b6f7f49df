"""The demo's OpenTelemetry agent: pydantic-ai with its TestModel, traced over OTLP.

It needs no LLM: TestModel calls the agent's tool and answers. Its spans go through the
OpenTelemetry SDK's OTLP/HTTP exporter to ``agentwatch otlp``, so it shows up beside the
SDK fleet as any OpenTelemetry-instrumented agent would.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

AGENT_NAME = "order-status-otel"
PACKAGES = ("pydantic_ai", "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def missing_packages() -> list[str]:
    """The packages the agent needs that are not installed."""
    import importlib.util

    missing = []
    for name in PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


def start_receiver(
    bootstrap: str, topic: str, data_dir: Path, port: int
) -> subprocess.Popen[bytes]:
    """``agentwatch otlp`` on loopback, once its HTTP port accepts connections."""
    cmd = [
        sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "otlp",
        "--bootstrap", bootstrap, "--topic", topic, "--http-port", str(port), "--grpc-port", "0",
    ]  # fmt: skip
    with (data_dir / "otlp.log").open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"agentwatch otlp exited; see {data_dir / 'otlp.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("agentwatch otlp did not start within 60 s") from None
            time.sleep(0.1)


def run_agent(endpoint: str, runs: int) -> int:
    """Run the agent ``runs`` times, export its spans to ``endpoint``; the spans sent."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": AGENT_NAME,
                "service.version": "1.0.0",
                "deployment.environment.name": "prod",
            }
        )
    )
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    provider.add_span_processor(processor)
    agent = Agent(TestModel(), name=AGENT_NAME)
    agent.instrument = InstrumentationSettings(tracer_provider=provider)

    @agent.tool_plain
    def order_status(order_id: str) -> str:
        """The shipping status of an order."""
        return f"order {order_id} shipped"

    for i in range(runs):
        agent.run_sync(f"where is order {i}?")
    provider.force_flush()
    provider.shutdown()
    return runs * 4  # an agent span, two model requests and a tool call per run
