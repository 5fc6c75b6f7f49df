"""The tracer: valid events by construction, measured by its clock, never in the agent's way."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from agentwatch.ingest.contract.events import AnyEvent, LlmCall, SessionEnd, ToolCall
from agentwatch.ingest.sdk.calls import CallInfo
from agentwatch.ingest.sdk.emitter import Emitter, Record
from agentwatch.ingest.sdk.tracer import Tracer

DECODER = msgspec.json.Decoder(AnyEvent)
T0 = dt.datetime(2025, 3, 4, 5, 6, 7, 890_123, tzinfo=dt.UTC)


class CollectingTransport:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def send_batch(self, records: list[Record]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass


class ManualClock:
    """Time stands still until a test moves it."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += dt.timedelta(milliseconds=ms)


class Harness:
    def __init__(self) -> None:
        self.transport = CollectingTransport()
        self.clock = ManualClock()
        self.tracer = Tracer(
            "billing-agent",
            "1.4.2",
            "staging",
            emitter=Emitter(self.transport, exit_timeout_s=None),
            clock=self.clock,
        )

    def records(self) -> list[Record]:
        assert self.tracer.flush(timeout=5)
        return list(self.transport.records)

    def events(self) -> list[Any]:
        return [DECODER.decode(value) for _, value in self.records()]

    def raw(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(value) for _, value in self.records()]


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.tracer.close(timeout=5)


def one(events: list[Any], kind: type[Any]) -> Any:
    (found,) = [e for e in events if isinstance(e, kind)]
    return found


def test_every_kind_of_event_decodes_under_the_contract(h: Harness) -> None:
    with h.tracer.session("s-1", channel="web", intent="refund") as s:
        with s.llm_call("gpt-4o", provider="openai", prompt_id="p", prompt_version="3") as call:
            call.input_tokens, call.output_tokens = 120, 40
            call.cache_read_tokens, call.reasoning_tokens = 100, 7
            call.cost_usd, call.finish_reason = 0.0031, "stop"
        with s.tool_call("lookup_invoice", "http"):
            pass
        s.policy_check("pii", "pass", "low")
        s.security("prompt_injection", "flagged", "high")
        s.feedback(score=0.5, label="ok")
        s.error("RateLimited")
        s.escalate(reason="angry", target="tier2")

    kinds = [type(e).__name__ for e in h.events()]  # decoding raises on any invalid event
    assert kinds == [
        "SessionStart",
        "LlmCall",
        "ToolCall",
        "PolicyCheck",
        "Security",
        "Feedback",
        "Error",
        "Escalation",
        "SessionEnd",
    ]


def test_every_event_carries_the_agent_identity_and_a_unique_id(h: Harness) -> None:
    with h.tracer.session() as s:
        s.feedback(score=1)
        s.feedback(score=2)

    events = h.events()
    assert {(e.agent_id, e.agent_version, e.environment, e.schema_version) for e in events} == {
        ("billing-agent", "1.4.2", "staging", 1)
    }
    assert len({e.event_id for e in events}) == len(events) == 4


def test_the_kafka_key_is_the_session_id(h: Harness) -> None:
    with h.tracer.session("conv-42") as s:
        s.feedback(score=1)
    with h.tracer.session() as other:
        pass

    keys = [key for key, _ in h.records()]
    assert keys == [b"conv-42"] * 3 + [other.session_id.encode()] * 2


def test_ts_is_utc_with_exactly_three_fraction_digits(h: Harness) -> None:
    h.clock.now = dt.datetime(2025, 3, 4, 7, 6, 7, 5_999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with h.tracer.session():
        h.clock.now = dt.datetime(2025, 3, 4, 5, 6, 8, tzinfo=dt.UTC)

    assert [e["ts"] for e in h.raw()] == ["2025-03-04T05:06:07.005Z", "2025-03-04T05:06:08.000Z"]


def test_a_naive_clock_is_taken_as_utc(h: Harness) -> None:
    h.clock.now = dt.datetime(2025, 1, 1, 12, 0, 0)
    with h.tracer.session():
        pass

    assert h.raw()[0]["ts"] == "2025-01-01T12:00:00.000Z"


def test_llm_latency_is_measured_with_the_injected_clock(h: Harness) -> None:
    with h.tracer.session() as s, s.llm_call("m") as call:
        h.clock.advance(250)
        call.first_token()
        h.clock.advance(984)

    llm = one(h.events(), LlmCall)
    assert llm.latency_ms == 1234
    assert llm.time_to_first_token_ms == 250
    assert llm.ts == T0.replace(microsecond=890_000) + dt.timedelta(milliseconds=1234)


def test_what_the_agent_sets_on_an_llm_call_is_reported(h: Harness) -> None:
    with h.tracer.session() as s, s.llm_call("gpt-4o", provider="openai") as call:
        call.model = "gpt-4o-2024-08-06"
        call.input_tokens, call.output_tokens, call.cost_usd = 10, 5, 0.25
        call.attributes["temperature"] = 0.2

    llm = one(h.events(), LlmCall)
    assert (llm.model, llm.provider, llm.input_tokens, llm.output_tokens, llm.cost_usd) == (
        "gpt-4o-2024-08-06",
        "openai",
        10,
        5,
        0.25,
    )
    assert llm.attributes == {"temperature": 0.2}
    assert llm.status is None and llm.error_type is None


def test_an_exception_in_an_llm_call_is_recorded_and_reraised_unchanged(h: Harness) -> None:
    boom = TimeoutError("provider timed out")
    with h.tracer.session() as s, pytest.raises(TimeoutError) as raised, s.llm_call("m"):
        h.clock.advance(30_000)
        raise boom

    assert raised.value is boom
    llm = one(h.events(), LlmCall)
    assert (llm.status, llm.error_type, llm.latency_ms) == ("error", "TimeoutError", 30_000)
    assert (llm.input_tokens, llm.output_tokens) == (0, 0)


def test_an_exception_in_a_tool_call_is_recorded_and_reraised(h: Harness) -> None:
    with h.tracer.session() as s, pytest.raises(KeyError), s.tool_call("db", "sql"):
        h.clock.advance(5)
        raise KeyError("missing")

    tool = one(h.events(), ToolCall)
    assert (tool.tool_name, tool.tool_type, tool.status, tool.error_type, tool.latency_ms) == (
        "db",
        "sql",
        "error",
        "KeyError",
        5,
    )


def test_a_call_can_be_marked_failed_without_raising(h: Harness) -> None:
    with h.tracer.session() as s, s.tool_call("search") as call:
        call.fail("NoResults")

    tool = one(h.events(), ToolCall)
    assert (tool.status, tool.error_type) == ("error", "NoResults")


def test_a_session_ends_resolved_by_default(h: Harness) -> None:
    with h.tracer.session(intent="refund") as s:
        h.clock.advance(60_000)
        s.intent = "refund_partial"

    end = one(h.events(), SessionEnd)
    assert (end.resolution, end.intent, end.latency_ms, end.status) == (
        "resolved",
        "refund_partial",
        60_000,
        None,
    )


def test_a_session_ends_with_the_resolution_the_agent_set(h: Harness) -> None:
    with h.tracer.session() as s:
        s.resolve("abandoned")

    assert one(h.events(), SessionEnd).resolution == "abandoned"


def test_an_escalation_makes_the_session_end_escalated(h: Harness) -> None:
    with h.tracer.session() as s:
        s.escalate(reason="legal question", target="legal")

    assert one(h.events(), SessionEnd).resolution == "escalated"


def test_an_escaping_exception_ends_the_session_failed_and_is_reraised(h: Harness) -> None:
    boom = RuntimeError("agent bug")
    with pytest.raises(RuntimeError) as raised, h.tracer.session() as s:
        s.resolve("resolved")
        raise boom

    assert raised.value is boom
    end = one(h.events(), SessionEnd)
    assert (end.resolution, end.status, end.error_type) == ("failed", "error", "RuntimeError")


def test_a_cancelled_session_ends_abandoned(h: Harness) -> None:
    async def conversation() -> None:
        with h.tracer.session():
            await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(conversation())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    end = one(h.events(), SessionEnd)
    assert (end.resolution, end.error_type) == ("abandoned", "CancelledError")


def test_an_unknown_resolution_is_ignored_not_raised(h: Harness) -> None:
    with h.tracer.session() as s:
        s.resolve("won")  # type: ignore[arg-type]

    assert one(h.events(), SessionEnd).resolution == "resolved"


def test_a_session_without_a_with_block_starts_and_ends_once(h: Harness) -> None:
    s = h.tracer.session("long-lived").start()
    s.start()
    s.end("escalated")
    s.end("resolved")

    assert [type(e).__name__ for e in h.events()] == ["SessionStart", "SessionEnd"]
    assert one(h.events(), SessionEnd).resolution == "escalated"


def test_the_session_trace_id_is_the_default_for_its_events(h: Harness) -> None:
    with h.tracer.session(trace_id="t" * 32) as s:
        with s.llm_call("m", span_id="a" * 16):
            pass
        s.feedback(score=1, trace_id="u" * 32)

    assert [e.trace_id for e in h.events()] == ["t" * 32, "t" * 32, "u" * 32, "t" * 32]


def test_the_guard_is_asked_before_each_call(h: Harness) -> None:
    asked: list[CallInfo] = []
    h.tracer.guard = asked.append
    with h.tracer.session("s") as s:
        with s.llm_call("m"):
            pass
        with s.tool_call("t"):
            pass

    assert asked == [
        CallInfo("llm_call", "billing-agent", "s", "m"),
        CallInfo("tool_call", "billing-agent", "s", "t"),
    ]


def test_a_guard_that_raises_stops_the_call_before_it_is_traced(h: Harness) -> None:
    class Halted(Exception):
        pass

    def halt(info: CallInfo) -> None:
        raise Halted(info.name)

    h.tracer.guard = halt
    ran = False
    with pytest.raises(Halted), h.tracer.session() as s, s.llm_call("m"):
        ran = True

    assert not ran
    assert [type(e).__name__ for e in h.events()] == ["SessionStart", "SessionEnd"]


def test_an_event_that_breaks_the_contract_is_dropped_and_counted_not_raised(
    h: Harness,
) -> None:
    with h.tracer.session() as s, s.llm_call("m") as call:
        call.input_tokens = -1

    assert [type(e).__name__ for e in h.events()] == ["SessionStart", "SessionEnd"]
    assert h.tracer.stats().invalid == 1


def test_attribute_values_json_cannot_hold_are_sent_as_text(h: Harness) -> None:
    with h.tracer.session() as s:
        s.feedback(score=1, attributes={"when": dt.date(2025, 1, 2), "obj": object})

    feedback = h.raw()[1]
    assert feedback["attributes"]["when"] == "2025-01-02"
    assert feedback["attributes"]["obj"] == "<class 'object'>"


def test_a_failing_clock_falls_back_to_the_system_clock(h: Harness) -> None:
    def broken() -> dt.datetime:
        raise OSError("no clock")

    h.tracer = Tracer("a", emitter=h.tracer.emitter, clock=broken)
    with h.tracer.session():
        pass

    assert len(h.events()) == 2
    assert h.tracer.stats().internal_errors == 2


def test_tracing_into_a_closed_emitter_neither_raises_nor_blocks(h: Harness) -> None:
    h.tracer.close(timeout=5)

    with h.tracer.session() as s, s.llm_call("m"):
        pass

    assert h.tracer.stats().emitter.dropped == {"closed": 3}


def test_the_session_id_defaults_to_a_fresh_random_id(h: Harness) -> None:
    first, second = h.tracer.session(), h.tracer.session()

    assert first.session_id != second.session_id
    assert re.fullmatch(r"[0-9a-f]{32}", first.session_id)
