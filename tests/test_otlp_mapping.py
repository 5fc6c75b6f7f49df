"""The OTLP mapping: spans of each convention to contract events, and the account of the rest."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.ingest.contract.events import AnyEvent
from agentwatch.ingest.otlp.mapping import MappingConfig, map_spans
from agentwatch.ingest.otlp.redact import redact_text
from agentwatch.ingest.otlp.spans import Span, SpanEvent

TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_764_000_000_000_000_000
RESOURCE = {"service.name": "billing-svc", "service.version": "2.1.0",
            "deployment.environment.name": "staging"}  # fmt: skip


def span(
    span_id: str,
    attributes: dict[str, Any],
    parent: str | None = None,
    name: str = "span",
    start_ms: int = 0,
    end_ms: int = 100,
    status: int = 0,
    events: list[SpanEvent] | None = None,
    trace: str = TRACE,
) -> Span:
    return Span(
        trace_id=trace,
        span_id=span_id.rjust(16, "0"),
        parent_span_id=parent.rjust(16, "0") if parent else None,
        name=name,
        start_ns=T0 + start_ms * 1_000_000,
        end_ns=T0 + end_ms * 1_000_000,
        attributes=attributes,
        resource=RESOURCE,
        scope="test.scope",
        status_code=status,
        events=events or [],
    )


def kinds(mapped: Any) -> list[str]:
    return [e["kind"] for e in mapped.events]


def one(mapped: Any, kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [e for e in mapped.events if e["kind"] == kind]
    assert len(found) == 1, kinds(mapped)
    return found[0]


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai",
         "gen_ai.agent.name": "support", "gen_ai.agent.version": "7",
         "gen_ai.conversation.id": "conv-42"}  # fmt: skip
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.response.finish_reasons": ["stop"]}  # fmt: skip


def test_an_agent_run_becomes_a_session_with_its_calls() -> None:
    mapped = map_spans(
        [
            span("1", AGENT, start_ms=0, end_ms=900),
            span("2", CHAT, parent="1", start_ms=10, end_ms=400),
            span(
                "3",
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "refund",
                    "gen_ai.tool.type": "function",
                },
                parent="1",
                end_ms=500,
            ),
        ]
    )
    assert sorted(kinds(mapped)) == ["llm_call", "session_end", "session_start", "tool_call"]
    for event in mapped.events:
        msgspec.json.decode(msgspec.json.encode(event), type=AnyEvent)
        assert event["session_id"] == "conv-42"
        assert event["agent_id"] == "support"
        assert event["agent_version"] == "7"
        assert event["environment"] == "staging"
    llm = one(mapped, "llm_call")
    assert llm["model"] == "gpt-4o-2024-08-06" and llm["provider"] == "openai"
    assert llm["latency_ms"] == 390.0 and llm["finish_reason"] == "stop"
    assert one(mapped, "tool_call")["tool_name"] == "refund"
    assert one(mapped, "session_end")["resolution"] == "resolved"
    assert one(mapped, "session_end")["latency_ms"] == 900.0
    assert mapped.spans == {("mapped", "agent", "test.scope"): 1,
                            ("mapped", "llm", "test.scope"): 1,
                            ("mapped", "tool", "test.scope"): 1}  # fmt: skip


def test_a_failed_agent_span_ends_its_session_failed_with_the_exception_type() -> None:
    exc = SpanEvent("exception", T0 + 50_000_000, {"exception.type": "TimeoutError"})
    mapped = map_spans([span("1", AGENT, status=2, events=[exc])])
    end = one(mapped, "session_end")
    assert end["resolution"] == "failed" and end["error_type"] == "TimeoutError"
    assert "error" not in kinds(mapped)  # the failed span is the error, counted once


def test_an_exception_on_a_span_that_succeeded_becomes_an_error_event() -> None:
    exc = SpanEvent("exception", T0 + 50_000_000, {"exception.type": "RateLimitError"})
    mapped = map_spans([span("2", CHAT, events=[exc])])
    assert one(mapped, "llm_call").get("status") is None
    assert one(mapped, "error")["error_type"] == "RateLimitError"


def test_an_escalation_tool_makes_the_session_not_contained() -> None:
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "escalate_to_human"}
    mapped = map_spans([span("1", AGENT), span("2", tool, parent="1")])
    assert "escalation" in kinds(mapped)


def test_an_explicit_resolution_on_the_agent_span_wins() -> None:
    mapped = map_spans([span("1", {**AGENT, "agentwatch.session.resolution": "abandoned"})])
    assert one(mapped, "session_end")["resolution"] == "abandoned"


def test_without_a_conversation_id_the_session_is_the_trace_and_the_agent_the_service() -> None:
    mapped = map_spans([span("2", {k: v for k, v in CHAT.items()})])
    llm = one(mapped, "llm_call")
    assert llm["session_id"] == TRACE
    assert llm["agent_id"] == "billing-svc" and llm["agent_version"] == "2.1.0"


def test_placeholder_agent_names_fall_back_to_the_service_name() -> None:
    mapped = map_spans([span("1", {**AGENT, "gen_ai.agent.name": "Agent"})])
    assert one(mapped, "session_start")["agent_id"] == "billing-svc"


def test_an_unnamed_outer_agent_span_takes_the_agent_the_trace_names() -> None:
    # openai-agents under OpenInference: "Agent workflow" around the named agent
    workflow = {"openinference.span.kind": "AGENT"}
    named = {"openinference.span.kind": "AGENT"}
    llm = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
           "llm.system": "openai", "llm.token_count.prompt": 60}  # fmt: skip
    mapped = map_spans(
        [
            span("1", workflow, name="Agent workflow"),
            span("2", named, parent="1", name="orders-agent"),
            span("3", llm, parent="2"),
        ]
    )
    assert {e["agent_id"] for e in mapped.events} == {"orders-agent"}


def test_a_nested_agent_span_adds_no_second_session() -> None:
    inner = {**AGENT, "gen_ai.agent.name": "researcher"}
    mapped = map_spans([span("1", AGENT), span("2", inner, parent="1")])
    assert sorted(kinds(mapped)) == ["session_end", "session_start"]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        # current: input includes cache reads already
        (CHAT, {"input_tokens": 120, "output_tokens": 30, "cache_read_tokens": 100}),
        # an emitter counting uncached input only (Anthropic's API): cache added once
        ({**CHAT, "gen_ai.usage.input_tokens": 9, "gen_ai.usage.cache_read.input_tokens": 20,
          "gen_ai.usage.cache_creation.input_tokens": 10},
         {"input_tokens": 39, "output_tokens": 30, "cache_read_tokens": 20}),
        # old names: prompt/completion tokens, cache_write
        ({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
          "gen_ai.usage.prompt_tokens": 21, "gen_ai.usage.completion_tokens": 5,
          "llm.request.type": "chat"},
         {"input_tokens": 21, "output_tokens": 5}),
        # OpenInference
        ({"openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4",
          "llm.provider": "anthropic", "llm.token_count.prompt": 50,
          "llm.token_count.completion": 8, "llm.token_count.prompt_details.cache_read": 40,
          "llm.token_count.completion_details.reasoning": 3},
         {"input_tokens": 50, "output_tokens": 8, "cache_read_tokens": 40,
          "reasoning_tokens": 3}),
    ],
    ids=["gen_ai", "uncached_input", "old_names", "openinference"],
)  # fmt: skip
def test_tokens_are_normalised_to_one_definition(
    attributes: dict[str, Any], expected: dict[str, int]
) -> None:
    llm = one(map_spans([span("2", attributes)]), "llm_call")
    assert {k: llm.get(k) for k in expected} == expected
    assert "cache_read_tokens" in llm or "cache_read_tokens" not in expected


def test_v1_36_spans_name_the_provider_with_gen_ai_system() -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
             "gen_ai.request.model": "claude-3-5-haiku", "gen_ai.usage.input_tokens": 3,
             "gen_ai.usage.output_tokens": 4}  # fmt: skip
    assert one(map_spans([span("2", attrs)]), "llm_call")["provider"] == "anthropic"


def test_openinference_agent_tool_chain_and_guardrail_spans() -> None:
    mapped = map_spans(
        [
            span("1", {"openinference.span.kind": "CHAIN", "session.id": "s-9"}, name="run"),
            span("2", {"openinference.span.kind": "AGENT"}, parent="1", name="Triage agent"),
            span("3", {"openinference.span.kind": "TOOL"}, parent="2", name="lookup_order"),
            span("4", {"openinference.span.kind": "GUARDRAIL"}, parent="2", name="pii", status=2),
        ]
    )
    assert one(mapped, "tool_call")["tool_name"] == "lookup_order"
    assert one(mapped, "tool_call")["agent_id"] == "Triage agent"
    check = one(mapped, "policy_check")
    assert check["policy_id"] == "pii" and check["outcome"] == "blocked"
    # the root chain is the session's boundary; the agent under it adds no second one
    assert kinds(mapped).count("session_start") == 1
    assert {e["session_id"] for e in mapped.events} == {"s-9"}


def test_evaluation_results_become_feedback() -> None:
    result = {
        "gen_ai.evaluation.name": "helpfulness",
        "gen_ai.evaluation.score.value": 0.8,
        "gen_ai.evaluation.score.label": "good",
    }
    ev = SpanEvent("gen_ai.evaluation.result", T0, result)
    fb = one(map_spans([span("2", CHAT, events=[ev])]), "feedback")
    assert fb["score"] == 0.8 and fb["label"] == "good"
    assert fb["attributes"] == {"evaluation": "helpfulness"}


def test_message_content_is_dropped_by_default_and_counted() -> None:
    attrs = {**CHAT, "gen_ai.input.messages": '[{"role":"user","content":"mail a@b.io"}]',
             "gen_ai.system_instructions": "be nice", "custom.flag": True}  # fmt: skip
    mapped = map_spans([span("2", attrs)])
    llm = one(mapped, "llm_call")
    assert "content" not in llm["attributes"]
    assert "a@b.io" not in json.dumps(mapped.events)
    assert llm["attributes"]["custom.flag"] is True
    assert mapped.attributes[("content_dropped", "test.scope")] == 2
    assert mapped.attributes[("kept", "test.scope")] == 1


def test_kept_content_is_redacted() -> None:
    attrs = {**CHAT, "gen_ai.input.messages": "write to jane.doe@example.com or +1 415 555 0100"}
    mapped = map_spans([span("2", attrs)], MappingConfig(keep_content=True))
    kept = one(mapped, "llm_call")["attributes"]["content"]["gen_ai.input.messages"]
    assert kept == "write to [EMAIL] or [PHONE]"
    assert mapped.attributes[("content_redacted", "test.scope")] == 1


def test_spans_that_are_not_genai_are_counted_and_sampled_not_lost_silently() -> None:
    http = [span(str(i), {"http.route": "/x", "http.request.body": "x"}, name="GET /x")
            for i in range(1, 6)]  # fmt: skip
    mapped = map_spans(http, MappingConfig(samples_per_reason=2))
    assert mapped.events == []
    assert mapped.spans == {("unmapped", "not_genai", "test.scope"): 5}
    assert len(mapped.unmapped) == 2
    assert mapped.unmapped[0]["span_name"] == "GET /x"
    assert mapped.rejected == 0


def test_an_inference_span_without_a_model_is_unmapped_with_its_reason() -> None:
    mapped = map_spans([span("2", {"gen_ai.operation.name": "chat", "gen_ai.system": "x"})])
    assert mapped.spans == {("unmapped", "no_model", "test.scope"): 1}


def test_create_agent_is_understood_but_records_nothing() -> None:
    mapped = map_spans([span("1", {**AGENT, "gen_ai.operation.name": "create_agent"})])
    assert mapped.events == [] and mapped.spans == {("skipped", "skip", "test.scope"): 1}


def test_a_span_with_malformed_ids_is_rejected_with_a_message() -> None:
    bad = span("2", CHAT)
    bad.trace_id = "abc"
    mapped = map_spans([bad])
    assert mapped.rejected == 1 and "malformed" in mapped.errors[0]


def test_a_span_whose_event_breaks_the_contract_is_rejected() -> None:
    mapped = map_spans(
        [span("2", {**CHAT, "gen_ai.response.model": "", "gen_ai.request.model": ""})]
    )
    assert mapped.spans[("unmapped", "no_model", "test.scope")] == 1
    negative = map_spans([span("2", CHAT, start_ms=0, end_ms=100)])
    assert negative.rejected == 0


def test_a_resent_span_gets_the_same_event_ids() -> None:
    first = map_spans([span("1", AGENT), span("2", CHAT, parent="1")])
    again = map_spans([span("1", AGENT), span("2", CHAT, parent="1")])
    assert [e["event_id"] for e in first.events] == [e["event_id"] for e in again.events]
    assert len({e["event_id"] for e in first.events}) == len(first.events)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted({*CHAT, *AGENT, "gen_ai.tool.name"})),
                       st.one_of(st.integers(-5, 10**6), st.text(max_size=5), st.none(),
                                 st.lists(st.text(max_size=3), max_size=2))))  # fmt: skip
def test_every_event_the_mapping_emits_satisfies_the_contract(attrs: dict[str, Any]) -> None:
    mapped = map_spans([span("1", attrs)])
    for event in mapped.events:
        msgspec.json.decode(msgspec.json.encode(event), type=AnyEvent)
    assert sum(mapped.spans.values()) == 1


def test_redaction_keeps_numbers_that_are_not_cards_and_masks_keys() -> None:
    assert redact_text("card 4111 1111 1111 1111") == "card [CARD]"
    assert redact_text("order 4111 1111 1111 1112") == "order 4111 1111 1111 1112"
    assert redact_text("key sk-proj-abcdefghijklmnop1234") == "key [KEY]"
    assert redact_text("year 2026, 3 items") == "year 2026, 3 items"
