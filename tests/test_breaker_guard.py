"""The SDK's breaker guard without Kafka: control messages, halts, probes and throttles, the
follower's one confirmation per message, and rollback callbacks."""

from __future__ import annotations

import msgspec
import pytest

from agentwatch.alerts.response.observations import (
    Confirmation,
    observe_event,
)
from agentwatch.ingest.contract.control import (
    Applied,
    ControlMessage,
    decode_message,
    encode_message,
)
from agentwatch.ingest.contract.events import AnyEvent, PolicyCheck
from agentwatch.ingest.sdk.calls import CallInfo
from agentwatch.ingest.sdk.control import (
    BREAKER_POLICY,
    AgentHalted,
    AgentThrottled,
    ControlFollower,
    ControlState,
)
from agentwatch.ingest.sdk.emitter import Emitter
from agentwatch.ingest.sdk.tracer import Tracer
from tests.breaker_helpers import msg
from tests.test_tracer import CollectingTransport

DECODER = msgspec.json.Decoder(AnyEvent)


def call(name: str = "payroll_lookup", kind: str = "tool_call") -> CallInfo:
    return CallInfo(kind, "hr-assistant", "sess-1", name)  # type: ignore[arg-type]


def test_control_messages_round_trip_and_refuse_a_breaker_without_state() -> None:
    m = msg(tool="x")
    assert decode_message(encode_message(m)) == m
    assert m.key == "hr-assistant/x"
    with pytest.raises(ValueError):
        decode_message(encode_message(msg(None)))
    raw = msgspec.json.decode(encode_message(m))
    assert {"id", "type", "agent_id", "at", "actor", "state", "cooldown_s"} <= set(raw)


def test_the_guard_halts_under_an_open_breaker_and_confirms_once_per_message() -> None:
    state = ControlState("hr-assistant")
    assert state.decide(call()).error is None
    opened = Applied(msg(), 0, 7)
    state.load({opened.message.key: opened})
    first = state.decide(call())
    second = state.decide(call("gpt-4o", "llm_call"))
    assert isinstance(first.error, AgentHalted) and first.confirm == opened
    assert isinstance(second.error, AgentHalted) and second.confirm is None
    assert first.error.breaker == "hr-assistant" and first.error.control_id == opened.message.id
    reopened = Applied(msg(), 0, 9)
    state.apply(reopened)
    assert state.decide(call()).confirm == reopened  # a new change confirms again


def test_a_tool_breaker_halts_that_tool_only_and_other_agents_messages_are_ignored() -> None:
    state = ControlState("hr-assistant")
    state.load({})
    state.apply(Applied(msg(tool="payroll_lookup"), 0, 1))
    assert not state.apply(Applied(msg(agent_id="it-support"), 0, 2))
    assert isinstance(state.decide(call("payroll_lookup")).error, AgentHalted)
    assert state.decide(call("search")).error is None
    assert state.breaker_state("payroll_lookup") == "open"
    assert state.breaker_state() == "closed"
    state.remove("hr-assistant/payroll_lookup")  # a tombstone
    assert state.decide(call("payroll_lookup")).error is None


def test_half_open_admits_one_probe_per_message_and_halts_the_rest() -> None:
    state = ControlState("hr-assistant")
    half = Applied(msg("half_open"), 0, 3)
    state.load({half.message.key: half})
    probe = state.decide(call())
    assert probe.error is None and probe.probe and probe.confirm == half
    rest = state.decide(call())
    assert isinstance(rest.error, AgentHalted) and rest.confirm == half
    assert state.decide(call()).confirm is None


def test_a_throttle_lets_calls_through_at_its_rate() -> None:
    ticks = [100.0]
    state = ControlState("hr-assistant", monotonic=lambda: ticks[0])
    throttle = msg(None, type="throttle", rate_per_s=2.0)
    state.load({throttle.key: Applied(throttle, 0, 1)})
    results = [state.decide(call()).error for _ in range(3)]
    assert results[:2] == [None, None] and isinstance(results[2], AgentThrottled)
    ticks[0] += 0.5
    assert state.decide(call()).error is None
    lifted = msg(None, type="throttle", rate_per_s=None)
    state.apply(Applied(lifted, 0, 2))
    assert all(state.decide(call()).error is None for _ in range(10))


def _tracer() -> tuple[Tracer, CollectingTransport]:
    transport = CollectingTransport()
    return Tracer("hr-assistant", emitter=Emitter(transport, exit_timeout_s=None)), transport


def test_the_follower_guard_raises_before_the_call_and_emits_one_confirmation() -> None:
    tracer, transport = _tracer()
    follower = ControlFollower("127.0.0.1:1", "hr-assistant").attach(tracer)  # never started
    opened = Applied(msg(), 0, 42)
    follower.state.load({opened.message.key: opened})
    ran = []
    with tracer.session("sess-9") as s:
        for _ in range(3):
            with pytest.raises(AgentHalted), s.tool_call("payroll_lookup"):
                ran.append(1)
    assert ran == []
    assert tracer.flush(5)
    events = [DECODER.decode(v) for _, v in transport.records]
    checks = [e for e in events if isinstance(e, PolicyCheck)]
    assert [type(e).__name__ for e in events] == ["SessionStart", "PolicyCheck", "SessionEnd"]
    [check] = checks
    assert (check.policy_id, check.outcome, check.session_id) == (
        BREAKER_POLICY,
        "blocked",
        "sess-9",
    )
    assert check.attributes == {
        "breaker_key": "hr-assistant",
        "breaker_state": "open",
        "control_id": opened.message.id,
        "control_partition": 0,
        "control_offset": 42,
        "call_kind": "tool_call",
        "call_name": "payroll_lookup",
        "probe": False,
    }
    observed = observe_event(check)
    assert isinstance(observed, Confirmation) and observed.control_id == opened.message.id


def test_a_broken_guard_lets_the_call_go(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer, _ = _tracer()
    follower = ControlFollower("127.0.0.1:1", "hr-assistant").attach(tracer)

    def broken(info: CallInfo) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(follower.state, "decide", broken)
    with tracer.session() as s, s.tool_call("search"):
        pass
    assert follower.stats()["errors"] == 1


def test_rollback_callbacks_run_once_per_message_and_their_errors_are_contained() -> None:
    seen: list[dict[str, str] | None] = []

    def callback(message: ControlMessage) -> None:
        seen.append(message.versions)
        raise RuntimeError("agent-side failure")

    follower = ControlFollower("127.0.0.1:1", "hr-assistant", on_rollback=callback)
    rollback = Applied(msg(None, type="rollback", versions={"prompt_version": "v3"}), 0, 5)
    for applied in follower.state.load({rollback.message.key: rollback}):
        follower._on_applied(applied)
    follower._on_applied(rollback)
    assert seen == [{"prompt_version": "v3"}]
