"""Real LLM clients and their real OpenTelemetry instrumentations, into the store.

Each scenario of ``tests/frameworks/emit.py`` runs in a process of its own (two
instrumentations of one client never meet) against the fake LLM on loopback and exports
to ``agentwatch otlp``; the processor lands the topic once and each test reads its agent's
session, calls and tokens from the store. The packages are the project's dev extras.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.topics import TopicSpec, ensure_topics
from tests.fake_llm import fake_llm
from tests.otlp_helpers import otlp_receiver, rows, wait_for_records
from tests.pipeline_helpers import run_to_idle

CARD = "4111 1111 1111 1111"  # the card number frameworks/emit.py sends: never stored

EMIT = Path(__file__).resolve().parent / "frameworks" / "emit.py"
pytestmark = pytest.mark.timeout(900)  # the first test runs every scenario and the processor

# scenario -> (session id, None for the trace id; agent; provider; model prefix; input,
# cache read (None where the instrumentation does not report it) and output tokens per call)
SCENARIOS: dict[str, tuple[str | None, str, str, str, int, int | None, int]] = {
    "openai-v2": ("conv-openai-v2", "openai-v2", "openai", "gpt-4o-mini", 60, None, 12),
    "openllmetry-openai": (
        "conv-openllmetry-openai", "openllmetry-openai", "openai", "gpt-4o-mini", 60, 21, 12),
    # the application's AGENT span names no agent: its span name is the agent
    "openinference-openai": (
        "conv-openinference-openai", "openinference-openai", "openai", "gpt-4o-mini",
        60, 21, 12),
    # Anthropic reports uncached input: 18 + 21 read from cache make 39 input tokens
    "openllmetry-anthropic": (
        "conv-openllmetry-anthropic", "openllmetry-anthropic", "anthropic", "claude-sonnet-4-5",
        39, 21, 9),
    # the agent inside openai-agents' unnamed "Agent workflow"
    "openinference-openai-agents": (None, "orders-agent", "openai", "gpt-4o-mini", 60, None, 12),
}  # fmt: skip


@pytest.fixture(scope="module")
def landed(kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every scenario exported through the receiver and landed; the store and what ran."""
    events = f"test-otlp-emitters-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_broker.bootstrap, [TopicSpec(events, 3, {})])
    db = tmp_path_factory.mktemp("emitters") / "data" / METADATA_FILE
    outcomes: dict[str, str] = {}
    with fake_llm() as llm, otlp_receiver(kafka_broker, events) as port:
        for scenario in SCENARIOS:
            done = subprocess.run(
                [sys.executable, str(EMIT), scenario, llm, f"http://127.0.0.1:{port}/v1/traces"],
                capture_output=True, text=True, timeout=240,
            )  # fmt: skip
            outcomes[scenario] = "ok" if done.returncode == 0 else done.stderr[-3000:]
        wait_for_records(kafka_broker, events, 4 * sum(o == "ok" for o in outcomes.values()))
    run_to_idle(kafka_broker, events, db)
    return {"db": db, "outcomes": outcomes}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_real_client_and_its_instrumentation_land_the_agents_session(
    landed: dict[str, Any], scenario: str
) -> None:
    assert landed["outcomes"][scenario] == "ok", landed["outcomes"][scenario]
    session, agent, provider, model, inputs, cached, outputs = SCENARIOS[scenario]
    db: Path = landed["db"]
    found = rows(
        db,
        "SELECT session_id, environment, llm_calls, tool_calls, input_tokens, output_tokens, "
        f"resolution, contained FROM sessions WHERE agent_id = '{agent}'",
    )
    assert len(found) == 1, found
    session_id, *rest = found[0]
    assert rest == ["test", 2, 1, 2 * inputs, 2 * outputs, "resolved", True]
    if session is not None:
        assert session_id == session
    calls = rows(
        db,
        "SELECT provider, model, input_tokens, cache_read_tokens, output_tokens, latency_ms "
        f"FROM events WHERE kind = 'llm_call' AND session_id = '{session_id}'",
    )
    assert len(calls) == 2
    for call_provider, call_model, call_in, call_cached, call_out, latency in calls:
        assert call_provider == provider and str(call_model).startswith(model)
        assert (call_in, call_cached, call_out) == (inputs, cached, outputs)
        assert latency is not None and float(str(latency)) >= 0
    tools = rows(
        db, f"SELECT tool_name FROM events WHERE kind = 'tool_call' AND session_id = '{session_id}'"
    )
    assert tools == [("lookup_order",)]
    # message content, the card number and the tool's result are dropped by default
    text = json.dumps(
        rows(db, f"SELECT * FROM events WHERE session_id = '{session_id}'"), default=str
    )
    # (the whole number: a random span id may hold its first digits)
    assert CARD not in text and CARD.replace(" ", "") not in text
    assert "jane@example.com" not in text
