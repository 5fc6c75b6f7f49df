"""The mapping's events satisfy the contract by construction, whatever values spans carry.

The receiver encodes each event once and does not decode it again to check it; these
properties are what allow that: over arbitrary attribute values on every kind of span,
each event passes the processor's own check, or the span is rejected with a reason.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.ingest.contract.events import CheckedEvent
from agentwatch.ingest.otlp.mapping import MappingConfig, map_spans
from agentwatch.ingest.otlp.spans import Span, SpanEvent

TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_764_000_000_000_000_000
CHECK = msgspec.json.Decoder(CheckedEvent)

OPERATIONS = ["invoke_agent", "chat", "execute_tool", "create_agent", "embeddings"]
KINDS = ["AGENT", "LLM", "TOOL", "CHAIN", "GUARDRAIL"]
KEYS = [
    "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.response.finish_reasons",
    "gen_ai.tool.name", "gen_ai.tool.type", "gen_ai.agent.id", "gen_ai.agent.name",
    "gen_ai.agent.version", "gen_ai.conversation.id", "session.id", "error.type",
    "agentwatch.session.resolution", "gen_ai.input.messages", "llm.model_name",
    "llm.token_count.prompt", "llm.token_count.completion", "tool.name", "agent.name",
    "custom.attribute", "otel.scope",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8)


@st.composite
def spans(draw: st.DrawFn) -> list[Span]:
    out: list[Span] = []
    for i in range(draw(st.integers(1, 4))):
        attrs: dict[str, Any] = draw(ATTRIBUTES)
        if draw(st.booleans()):
            attrs["gen_ai.operation.name"] = draw(st.sampled_from(OPERATIONS))
        else:
            attrs["openinference.span.kind"] = draw(st.sampled_from(KINDS))
        event_name = draw(st.sampled_from(["exception", "gen_ai.evaluation.result", "other"]))
        event_attrs = {"exception.type": draw(VALUES), "gen_ai.evaluation.score.value":
                       draw(VALUES), "gen_ai.evaluation.score.label": draw(VALUES)}  # fmt: skip
        out.append(
            Span(
                trace_id=TRACE,
                span_id=f"{i + 1:016x}",
                parent_span_id=f"{draw(st.integers(1, i)):016x}" if i else None,
                name=draw(st.text(max_size=6)),
                start_ns=T0 - draw(st.integers(0, 10**12)),
                end_ns=T0,
                attributes=attrs,
                resource={"service.name": draw(VALUES), "service.version": draw(VALUES)},
                scope="test.scope",
                status_code=draw(st.sampled_from([0, 1, 2])),
                events=[SpanEvent(event_name, draw(st.integers(0, T0)), event_attrs)],
            )
        )
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans(), st.booleans())
def test_every_event_passes_the_processors_check_or_its_span_is_rejected(
    trace: list[Span], keep_content: bool
) -> None:
    mapped = map_spans(trace, MappingConfig(keep_content=keep_content))
    assert len(mapped.values) == len(mapped.events)
    for value in mapped.values:
        CHECK.decode(value)
    assert sum(mapped.spans.values()) == len(trace)
    rejected = {r for (o, r, _), n in mapped.spans.items() if o == "rejected" for _ in range(n)}
    assert rejected <= {"invalid_event"}
    assert mapped.rejected == sum(n for (o, _, _), n in mapped.spans.items() if o == "rejected")


def test_a_token_count_that_is_not_a_finite_number_rejects_its_span() -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
             "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": float("inf")}  # fmt: skip
    span = Span(TRACE, "00000000000000b1", None, "chat", T0 - 1, T0, attrs,
                {"service.name": "svc"}, "test.scope")  # fmt: skip
    mapped = map_spans([span])
    assert mapped.events == [] and mapped.rejected == 1
    assert mapped.spans[("rejected", "invalid_event", "test.scope")] == 1
    assert "gen_ai.usage.input_tokens" in mapped.errors[0]
