"""Breakers' state machine without Kafka: cooldowns, probes, retired agents held open, and
breaker keys as the control topic's record keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.alerts.response.breaker import (
    Breaker,
    BreakerBook,
    BreakerError,
    BreakerKey,
)
from agentwatch.clock import ManualClock
from agentwatch.ingest.contract.control import (
    control_key,
)
from tests.breaker_helpers import T0

AGENT = BreakerKey("hr-assistant")
TOOL = BreakerKey("hr-assistant", "payroll_lookup")


def test_open_half_open_after_the_cooldown_then_closed_by_a_good_probe() -> None:
    clock = ManualClock(T0)
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
    clock = ManualClock(T0)
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
    book = BreakerBook(ManualClock(T0))
    first = book.open(AGENT, reason="a", actor="rule:x").after
    again = book.open(AGENT, reason="b", actor="rule:y")
    assert not again.changed and again.after == first
    book.close(AGENT, reason="fixed", actor="person:ana")
    assert not book.close(AGENT, reason="again", actor="person:ana").changed


def test_a_tool_breaker_leaves_the_agents_other_calls_alone() -> None:
    book = BreakerBook(ManualClock(T0))
    book.open(TOOL, reason="bad tool", actor="rule:x")
    assert book.allows("hr-assistant")
    assert book.allows("hr-assistant", "search")
    assert not book.allows("hr-assistant", "payroll_lookup")


def test_a_retired_agent_is_held_open_and_cannot_be_closed() -> None:
    clock = ManualClock(T0)
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
    book = BreakerBook(ManualClock(T0))
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
    clock = ManualClock(T0)
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
