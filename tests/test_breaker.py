"""Breakers without Kafka: the state machine, the SDK's guard, confirmations and probes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.alerts.response.breaker import (
    Breaker,
    BreakerBook,
    BreakerError,
    BreakerKey,
)
from agentwatch.alerts.response.confirm import UNCONFIRMED_RULE, ConfirmationTracker
from agentwatch.alerts.response.control import BreakerControl
from agentwatch.alerts.response.observations import (
    CallOutcome,
    Confirmation,
    observe_event,
    observe_row,
)
from agentwatch.alerts.response.supervisor import BreakerSupervisor
from agentwatch.clock import ManualClock
from agentwatch.ingest.contract.control import (
    Applied,
    ControlFold,
    ControlMessage,
    control_key,
    decode_message,
    encode_message,
    new_message_id,
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
from tests.conftest import TEST_KEYRING
from tests.test_tracer import CollectingTransport

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DECODER = msgspec.json.Decoder(AnyEvent)


def Clock(start: dt.datetime = T0) -> ManualClock:
    """A settable clock: tests move time by hand, nothing sleeps."""
    return ManualClock(start)


AGENT = BreakerKey("hr-assistant")
TOOL = BreakerKey("hr-assistant", "payroll_lookup")


# --------------------------------------------------------------------------- state machine


def test_open_half_open_after_the_cooldown_then_closed_by_a_good_probe() -> None:
    clock = Clock()
    book = BreakerBook(clock, default_cooldown_s=60)
    change = book.open(AGENT, reason="violations", actor="rule:PolicyBurst")
    assert (change.before.state, change.after.state, change.changed) == ("closed", "open", True)
    assert not book.allows("hr-assistant")

    clock.advance(59.999)
    assert book.tick() == []
    assert book.get(AGENT).state == "open"

    clock.advance(0.001)
    [half] = book.tick()
    assert half.after.state == "half_open" and half.after.since == clock.now

    closed = book.probe_result(AGENT, ok=True, actor="system:probe")
    assert closed.after.state == "closed" and closed.after.opened_at is None
    assert book.allows("hr-assistant", "payroll_lookup")


def test_a_bad_probe_opens_again_with_a_fresh_cooldown() -> None:
    clock = Clock()
    book = BreakerBook(clock, default_cooldown_s=10)
    book.open(TOOL, reason="errors", actor="person:ana", cooldown_s=30)
    clock.advance(30)
    book.tick()
    clock.advance(5)
    reopened = book.probe_result(TOOL, ok=False, actor="system:probe").after
    assert (reopened.state, reopened.opened_at, reopened.cooldown_s) == ("open", clock.now, 30)
    clock.advance(29)
    assert book.tick() == []
    clock.advance(1)
    assert [c.after.state for c in book.tick()] == ["half_open"]


def test_opening_an_open_breaker_or_closing_a_closed_one_changes_nothing() -> None:
    book = BreakerBook(Clock())
    first = book.open(AGENT, reason="a", actor="rule:x").after
    again = book.open(AGENT, reason="b", actor="rule:y")
    assert not again.changed and again.after == first
    book.close(AGENT, reason="fixed", actor="person:ana")
    assert not book.close(AGENT, reason="again", actor="person:ana").changed


def test_a_tool_breaker_leaves_the_agents_other_calls_alone() -> None:
    book = BreakerBook(Clock())
    book.open(TOOL, reason="bad tool", actor="rule:x")
    assert book.allows("hr-assistant")
    assert book.allows("hr-assistant", "search")
    assert not book.allows("hr-assistant", "payroll_lookup")


def test_a_retired_agent_is_held_open_and_cannot_be_closed() -> None:
    clock = Clock()
    book = BreakerBook(clock, default_cooldown_s=1, retired=["legacy-bot"])
    held = book.get(BreakerKey("legacy-bot"))
    assert (held.state, held.held, held.actor) == ("open", True, "system:catalog")
    with pytest.raises(BreakerError, match="retired"):
        book.close(BreakerKey("legacy-bot"), reason="please", actor="person:ana")
    with pytest.raises(BreakerError, match="retired"):
        book.close(BreakerKey("legacy-bot", "search"), reason="please", actor="person:ana")
    clock.advance(3600)
    assert book.tick() == []
    assert book.get(BreakerKey("legacy-bot")).state == "open"

    # Back in service: no longer held, still open until someone closes it.
    assert book.set_retired([]) == []
    assert book.get(BreakerKey("legacy-bot")).held is False
    assert book.close(BreakerKey("legacy-bot"), reason="back", actor="person:ana").changed


def test_holding_an_already_open_breaker_is_no_transition_to_announce() -> None:
    book = BreakerBook(Clock())
    book.open(AGENT, reason="a", actor="rule:x")
    assert book.set_retired(["hr-assistant"]) == []
    assert book.get(AGENT).held


def test_breaker_keys_are_the_control_topics_record_keys() -> None:
    assert (
        str(TOOL) == "hr-assistant/payroll_lookup" == control_key("hr-assistant", "payroll_lookup")
    )
    assert BreakerKey.parse("hr-assistant/a/b") == BreakerKey("hr-assistant", "a/b")
    assert BreakerKey.parse("hr-assistant") == AGENT
    assert control_key("a", kind="rollback") == "a#rollback"
    with pytest.raises(ValueError):
        control_key("bad#agent")
    with pytest.raises(BreakerError):
        Breaker(AGENT).open(T0, reason="", actor="", cooldown_s=-1)


# Operations a property test strings together: (name, key index, seconds to advance first).
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "tick", "probe_ok", "probe_bad", "retire", "unretire"]),
        st.integers(0, 2),
        st.floats(0, 120, allow_nan=False),
        st.sampled_from([0.0, 30.0, 60.0]),
    ),
    max_size=40,
)
_KEYS = [AGENT, TOOL, BreakerKey("it-support")]


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_property_automatic_transitions_respect_the_cooldown_and_the_catalog(
    ops: list[tuple[str, int, float, float]],
) -> None:
    clock = Clock()
    book = BreakerBook(clock, default_cooldown_s=45)
    for name, index, wait, cooldown in ops:
        clock.advance(wait)
        key = _KEYS[index]
        before = {k: book.get(k) for k in _KEYS}
        manual = False
        if name == "open":
            book.open(key, reason="r", actor="rule:x", cooldown_s=cooldown)
            manual = True
        elif name == "close":
            manual = True
            try:
                book.close(key, reason="r", actor="person:p")
            except BreakerError:
                assert key.agent_id in book.retired
        elif name == "tick":
            book.tick()
        elif name in ("probe_ok", "probe_bad"):
            book.probe_result(key, ok=name == "probe_ok", actor="system:probe")
        elif name == "retire":
            book.set_retired(book.retired | {key.agent_id})
        else:
            book.set_retired(book.retired - {key.agent_id})
        for k in _KEYS:
            old, new = before[k], book.get(k)
            if k == BreakerKey(k.agent_id) and k.agent_id in book.retired:
                assert new.state == "open" and new.held  # retired: held open, always
            # Only a person closes early; automatically, never before the cooldown.
            if old.state == "open" and new.state != "open" and not (manual and k == key):
                ends = old.cooldown_ends()
                assert ends is not None and clock.now >= ends and not old.held
                assert new.state == "half_open"
            if new.state == "half_open" and old.state != "half_open":
                assert old.state == "open"
            if new.state == "closed" and old.state != "closed":
                assert (manual and k == key) or (old.state == "half_open" and name == "probe_ok")


# --------------------------------------------------------------------------- SDK guard


def msg(state: str | None = "open", *, tool: str | None = None, **kw: Any) -> ControlMessage:
    fields: dict[str, Any] = {
        "id": new_message_id(),
        "type": "breaker",
        "agent_id": "hr-assistant",
        "at": T0,
        "actor": "rule:PolicyBurst",
        "reason": "violations",
        "tool": tool,
        "state": state,
        "cooldown_s": 60.0,
    }
    fields.update(kw)
    return ControlMessage(**fields)


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


# --------------------------------------------------------------------------- confirmations


def confirmation(m: ControlMessage, ts: dt.datetime, probe: bool = False) -> Confirmation:
    return Confirmation(m.id, m.key, m.agent_id, "sess-1", ts, probe, "tool_call", "search")


def test_a_breaker_is_pending_until_confirmed_and_escalated_when_the_timeout_passes() -> None:
    clock = Clock()
    tracker = ConfirmationTracker(clock, timeout_s=30)
    opened = msg(alert="fp-1")
    tracker.expect(opened)
    assert tracker.status(opened.id) == "pending"
    clock.advance(29)
    assert tracker.check() == []
    clock.advance(1)
    [alert] = tracker.check()
    assert (alert.rule, alert.state, alert.severity, alert.agent_id) == (
        UNCONFIRMED_RULE,
        "firing",
        "critical",
        "hr-assistant",
    )
    assert alert.labels["breaker"] == "hr-assistant"
    assert tracker.check() == []  # escalated once
    assert tracker.status(opened.id) == "unconfirmed"

    tracker.observe([confirmation(opened, clock.now)])
    [resolved] = tracker.check()
    assert resolved.state == "resolved" and resolved.fingerprint == alert.fingerprint
    rows = tracker.actions()
    assert [(r["action"], r["result"]) for r in rows] == [
        ("confirm_breaker", "failed"),
        ("confirm_breaker", "ok"),
    ]
    assert rows[0]["alert_fingerprint"] == "fp-1"


def test_a_confirmation_in_time_means_no_escalation_even_if_seen_before_the_message() -> None:
    clock = Clock()
    tracker = ConfirmationTracker(clock, timeout_s=5)
    opened = msg()
    tracker.observe([confirmation(opened, T0)])
    tracker.expect(opened)
    assert tracker.status(opened.id) == "confirmed"
    clock.advance(60)
    assert tracker.check() == []


def test_a_probe_is_judged_by_the_next_call_of_its_session() -> None:
    tracker = ConfirmationTracker(Clock())
    half = msg("half_open", tool="search")
    tracker.expect(half)
    marker = confirmation(half, T0, probe=True)
    other = CallOutcome("hr-assistant", "sess-2", "tool_call", "search", T0, False)
    probe_call = CallOutcome("hr-assistant", "sess-1", "tool_call", "search", T0, True)
    assert tracker.observe([marker, other]) == []
    [verdict] = tracker.observe([probe_call])
    assert (verdict.key, verdict.ok, verdict.control_id) == (
        BreakerKey("hr-assistant", "search"),
        True,
        half.id,
    )
    assert tracker.observe([probe_call]) == []


def test_rows_of_the_events_view_are_observed_like_events() -> None:
    ts = dt.datetime(2025, 6, 1, 12, 0)  # DuckDB may hand back naive UTC
    row = {
        "kind": "policy_check",
        "policy_id": BREAKER_POLICY,
        "outcome": "blocked",
        "agent_id": "a",
        "session_id": "s",
        "ts": ts,
        "attributes": '{"control_id": "c1", "breaker_key": "a/t", "call_kind": "tool_call"}',
    }
    found = observe_row(row)
    assert isinstance(found, Confirmation) and found.breaker_key == "a/t"
    assert found.ts.tzinfo is not None
    failed = observe_row(
        {"kind": "tool_call", "agent_id": "a", "session_id": "s", "ts": ts, "status": "error"}
    )
    assert isinstance(failed, CallOutcome) and not failed.ok
    assert observe_row({**row, "outcome": "pass"}) is None  # a pass without probe says nothing


# ----------------------------------------------------- agent and tool breakers together


class NoObservations:
    def poll(self, since: dt.datetime) -> list[Any]:
        return []


def _control_on_fake_topic(clock: ManualClock) -> tuple[Any, BreakerControl]:
    from tests.test_runbooks import FakeTopic

    topic = FakeTopic()
    return topic, BreakerControl(topic, clock=clock, default_cooldown_s=45)  # type: ignore[arg-type]


def test_status_and_supervision_list_an_agents_breaker_with_its_tool_breakers() -> None:
    clock = Clock()
    _, control = _control_on_fake_topic(clock)
    control.open("hr-assistant", reason="r", actor="person:p")
    control.open("hr-assistant", "payroll_lookup", reason="r", actor="person:p")
    control.open("hr-assistant", "calendar", reason="r", actor="person:p")
    keys = [str(s.breaker.key) for s in control.status()]
    assert keys == ["hr-assistant", "hr-assistant/calendar", "hr-assistant/payroll_lookup"]
    report = BreakerSupervisor(control, NoObservations()).cycle()
    assert report.alerts == []


@dataclass
class SignedRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    offset: int
    topic: str = "agent-control"
    partition: int = 0


_BREAKER_OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "tick", "probe_ok", "probe_bad"]),
        st.sampled_from(["hr-assistant", "it-support"]),
        st.sampled_from([None, "payroll_lookup", "calendar"]),
        st.floats(0, 120, allow_nan=False),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(_BREAKER_OPS)
def test_property_status_supervision_and_the_sdk_fold_agree_on_every_breaker(
    ops: list[tuple[str, str, str | None, float]],
) -> None:
    clock = Clock()
    topic, control = _control_on_fake_topic(clock)
    supervisor = BreakerSupervisor(control, NoObservations(), timeout_s=1e9)
    followers = {a: ControlState(a) for a in ("hr-assistant", "it-support")}
    fold = ControlFold(TEST_KEYRING)  # the SDK's fold, over the records as published
    folded = 0
    for name, agent, tool, wait in ops:
        clock.advance(wait)
        if name == "open":
            control.open(agent, tool, reason="r", actor="person:p")
        elif name == "close":
            control.close(agent, tool, reason="r", actor="person:p")
        elif name == "tick":
            supervisor.cycle()
        else:
            control.probe_result(BreakerKey(agent, tool), ok=name == "probe_ok")
        statuses = control.status()
        keys = [s.breaker.key for s in statuses]
        assert keys == sorted(keys, key=lambda k: k.sort_key) and len(set(keys)) == len(keys)
        for offset, message in enumerate(topic.published[folded:], folded):
            key, value = message.key.encode(), encode_message(message)
            result = fold.fold(SignedRecord(key, value, TEST_KEYRING.sign(key, value), offset))
            assert isinstance(result, Applied)
            followers[message.agent_id].apply(result)
        folded = len(topic.published)
        for status in statuses:
            key = status.breaker.key
            sdk = followers[key.agent_id].breaker_state(key.tool)
            assert sdk == status.breaker.state, (key, sdk, status.breaker.state)
