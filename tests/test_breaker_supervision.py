"""Supervising breakers without Kafka: confirmations that the SDK obeyed, escalation when
none comes, probes judged by the next call, and status, supervision and the SDK's fold
agreeing on every breaker."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.alerts.response.breaker import (
    BreakerKey,
)
from agentwatch.alerts.response.confirm import UNCONFIRMED_RULE, ConfirmationTracker
from agentwatch.alerts.response.control import BreakerControl
from agentwatch.alerts.response.observations import (
    CallOutcome,
    Confirmation,
    observe_row,
)
from agentwatch.alerts.response.supervisor import BreakerSupervisor
from agentwatch.clock import ManualClock
from agentwatch.ingest.contract.control import (
    Applied,
    ControlFold,
    ControlMessage,
    encode_message,
)
from agentwatch.ingest.sdk.control import (
    BREAKER_POLICY,
    ControlState,
)
from tests.breaker_helpers import T0, msg
from tests.conftest import TEST_KEYRING


def confirmation(m: ControlMessage, ts: dt.datetime, probe: bool = False) -> Confirmation:
    return Confirmation(m.id, m.key, m.agent_id, "sess-1", ts, probe, "tool_call", "search")


def test_a_breaker_is_pending_until_confirmed_and_escalated_when_the_timeout_passes() -> None:
    clock = ManualClock(T0)
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
    clock = ManualClock(T0)
    tracker = ConfirmationTracker(clock, timeout_s=5)
    opened = msg()
    tracker.observe([confirmation(opened, T0)])
    tracker.expect(opened)
    assert tracker.status(opened.id) == "confirmed"
    clock.advance(60)
    assert tracker.check() == []


def test_a_probe_is_judged_by_the_next_call_of_its_session() -> None:
    tracker = ConfirmationTracker(ManualClock(T0))
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
    clock = ManualClock(T0)
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
    clock = ManualClock(T0)
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
