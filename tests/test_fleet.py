"""The simulated fleet: valid, deterministic, well-formed sessions at plausible rates."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from dataclasses import replace

import msgspec
import pytest

from agentwatch.ingest.contract.events import (
    AnyEvent,
    Escalation,
    Event,
    LlmCall,
    PolicyCheck,
    Security,
    SessionEnd,
    SessionStart,
    ToolCall,
)
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.parameters import AGENT_TYPES, Agent, LogNormal, Mix
from agentwatch.ingest.sim.profiles import make_agents

START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC).timestamp()
ENCODER = msgspec.json.Encoder()


def run(seed: int = 1, agents: int = 8, seconds: float = 60.0, rate: float = 200.0) -> list[Event]:
    """Sessions started in the first ``seconds``, every one run to its end."""
    fleet = Fleet(make_agents(agents, seed), seed=seed, start=START, events_per_second=rate)
    events = list(fleet.events_until(START + seconds))
    events.extend(fleet.drain())
    assert fleet.open_sessions == 0
    return events


def by_session(events: list[Event]) -> dict[str, list[Event]]:
    sessions: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        sessions[event.session_id].append(event)
    return sessions


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    # About 3,500 sessions and 50,000 events.
    return run(seed=11, agents=8, seconds=200.0, rate=250.0)


@pytest.fixture(scope="module")
def sessions(stream: list[Event]) -> dict[str, list[Event]]:
    return by_session(stream)


def test_every_event_is_valid_under_the_contract(stream: list[Event]) -> None:
    decoder = msgspec.json.Decoder(AnyEvent)
    for event in stream:
        decoded = decoder.decode(ENCODER.encode(event))
        assert decoded == event


def test_same_seed_same_events_and_other_seeds_differ() -> None:
    first = [ENCODER.encode(e) for e in run(seed=5, seconds=20)]
    again = [ENCODER.encode(e) for e in run(seed=5, seconds=20)]
    other = [ENCODER.encode(e) for e in run(seed=6, seconds=20)]
    assert first == again
    assert first != other
    assert len(first) > 1000


def test_the_clock_start_is_part_of_the_identity() -> None:
    a = Fleet(make_agents(4, 1), seed=1, start=START)
    b = Fleet(make_agents(4, 1), seed=1, start=START + 3600)
    ids_a = {e.event_id for e in a.events_until(START + 30)}
    ids_b = {e.event_id for e in b.events_until(START + 3630)}
    assert ids_a and ids_b and not ids_a & ids_b


def test_slicing_time_does_not_change_the_sequence() -> None:
    whole = Fleet(make_agents(8, 3), seed=3, start=START)
    sliced = Fleet(make_agents(8, 3), seed=3, start=START)
    expected = [ENCODER.encode(e) for e in whole.events_until(START + 90)]
    got: list[bytes] = []
    t = START
    while t < START + 90:
        t = min(t + 0.37, START + 90)
        for n, event in enumerate(sliced.events_until(t)):
            got.append(ENCODER.encode(event))
            if n == 2:  # abandoning an iterator midway loses nothing
                break
        got.extend(ENCODER.encode(e) for e in sliced.events_until(t))
    assert got == expected


def test_events_come_in_timestamp_order(stream: list[Event]) -> None:
    stamps = [e.ts for e in stream]
    assert stamps == sorted(stamps)
    assert all(e.ts.utcoffset() == dt.timedelta(0) for e in stream[:100])


def test_ids_are_unique(stream: list[Event], sessions: dict[str, list[Event]]) -> None:
    assert len({e.event_id for e in stream}) == len(stream)
    assert len({s[0].trace_id for s in sessions.values()}) == len(sessions)


def test_each_session_is_one_start_then_steps_then_one_end(
    sessions: dict[str, list[Event]],
) -> None:
    assert len(sessions) > 3000
    for events in sessions.values():
        assert isinstance(events[0], SessionStart)
        assert isinstance(events[-1], SessionEnd)
        assert sum(isinstance(e, SessionStart) for e in events) == 1
        assert sum(isinstance(e, SessionEnd) for e in events) == 1
        assert len({e.agent_id for e in events}) == 1
        assert len({e.trace_id for e in events}) == 1
        assert all(e.parent_span_id == events[0].span_id for e in events[1:])
        assert events[-1].intent == events[0].intent


def test_escalated_sessions_contain_an_escalation(sessions: dict[str, list[Event]]) -> None:
    for events in sessions.values():
        end = events[-1]
        assert isinstance(end, SessionEnd)
        escalations = [e for e in events if isinstance(e, Escalation)]
        if end.resolution == "escalated":
            assert len(escalations) == 1
            assert escalations[0].target and escalations[0].reason
        else:
            assert not escalations
        if end.resolution == "failed":
            assert any(e.status == "error" for e in events)


def test_all_agent_types_appear(stream: list[Event]) -> None:
    agent_ids = {e.agent_id for e in stream}
    for agent_type in AGENT_TYPES:
        assert f"{agent_type}-1" in agent_ids
        assert f"{agent_type}-2" in agent_ids


def test_rates_are_plausible(stream: list[Event], sessions: dict[str, list[Event]]) -> None:
    ends = [s[-1] for s in sessions.values()]
    assert all(isinstance(e, SessionEnd) for e in ends)
    resolutions = Counter(e.resolution for e in ends if isinstance(e, SessionEnd))
    share = {r: n / len(ends) for r, n in resolutions.items()}
    assert 0.60 < share["resolved"] < 0.85
    assert 0.08 < share["escalated"] < 0.25
    assert 0.03 < share["abandoned"] < 0.12
    assert 0.01 < share["failed"] < 0.08

    checks = [e for e in stream if isinstance(e, PolicyCheck)]
    outcomes = Counter(c.outcome for c in checks)
    assert 0.002 < outcomes["violation"] / len(checks) < 0.03
    assert 0.001 < outcomes["blocked"] / len(checks) < 0.03
    assert {c.severity for c in checks if c.outcome != "pass"} >= {"medium", "high", "critical"}

    security = [e for e in stream if isinstance(e, Security)]
    assert 0.003 < len(security) / len(sessions) < 0.03
    assert {s.category for s in security} == {"prompt_injection", "jailbreak", "data_exfiltration"}

    calls = [e for e in stream if isinstance(e, LlmCall)]
    priced = sum(c.cost_usd is not None for c in calls) / len(calls)
    assert 0.05 < priced < 0.4  # most cost is left to the pricing table
    errors = Counter(c.error_type for c in calls if c.status == "error")
    assert errors["RateLimitError"] > 0 and errors["Timeout"] > 0
    assert len({c.model for c in calls}) >= 5
    assert {c.provider for c in calls} >= {"openai", "anthropic", "google"}
    tool_errors = [e for e in stream if isinstance(e, ToolCall) and e.status == "error"]
    assert tool_errors and all(e.error_type for e in tool_errors)


def test_the_rate_settles_at_the_target() -> None:
    fleet = Fleet(make_agents(8, 2), seed=2, start=START, events_per_second=300.0)
    count = sum(1 for _ in fleet.events_until(START + 300))
    assert 0.95 * 300 * 300 < count < 1.05 * 300 * 300
    assert fleet.open_sessions > 0


def test_make_agents_cycles_types_with_ids_and_mostly_prod() -> None:
    agents = make_agents(40, seed=9)
    assert [a.agent_id for a in agents[:5]] == [
        "hr-assistant-1",
        "it-support-1",
        "finance-compliance-1",
        "member-services-1",
        "hr-assistant-2",
    ]
    assert len({a.agent_id for a in agents}) == 40
    environments = Counter(a.environment for a in agents)
    assert environments["prod"] > 0.6 * 40
    assert all(a.environment == "prod" for a in agents[:4])
    assert all(a.parameters.agent_version for a in agents)
    assert [a.agent_id for a in make_agents(40, seed=9)] == [a.agent_id for a in agents]
    with pytest.raises(ValueError):
        make_agents(0)


def test_a_scheduled_change_applies_from_its_time() -> None:
    agents = make_agents(4, seed=1)
    switch = START + 120
    for agent in agents:
        base = agent.parameters
        slow = Mix.of((replace(m, latency_scale=3.0), w) for m, w in zip(
            base.models.items, base.models.weights, strict=True
        ))  # fmt: skip
        agent.change_at(
            switch, replace(base, prompt_version="v99", models=slow, escalation_rate=0.5)
        )
    fleet = Fleet(agents, seed=1, start=START)
    events = list(fleet.events_until(START + 240))
    events.extend(fleet.drain())
    sessions = by_session(events)

    def started_before(events: list[Event]) -> bool:
        return events[0].ts.timestamp() < switch

    before = [s for s in sessions.values() if started_before(s)]
    after = [s for s in sessions.values() if not started_before(s)]
    versions_after = {e.prompt_version for s in after for e in s if isinstance(e, LlmCall)}
    versions_before = {e.prompt_version for s in before for e in s if isinstance(e, LlmCall)}
    assert versions_after == {"v99"}
    assert "v99" not in versions_before

    def median_latency(group: list[list[Event]]) -> float:
        return statistics.median(
            e.latency_ms or 0.0
            for s in group
            for e in s
            if isinstance(e, LlmCall) and e.status is None and e.ts.timestamp() > START + 5
        )

    assert median_latency(after) > 2.0 * median_latency(before)

    def escalated(group: list[list[Event]]) -> float:
        return sum(
            isinstance(s[-1], SessionEnd) and s[-1].resolution == "escalated" for s in group
        ) / len(group)

    assert escalated(after) > escalated(before) + 0.2


def test_parameters_at_follows_the_schedule() -> None:
    agent: Agent = make_agents(1)[0]
    base = agent.parameters
    later = replace(base, token_scale=2.0)
    latest = replace(base, token_scale=3.0)
    agent.change_at(200.0, latest)
    agent.change_at(100.0, later)
    assert agent.parameters_at(50.0) is base
    assert agent.parameters_at(100.0) is later
    assert agent.parameters_at(150.0) is later
    assert agent.parameters_at(250.0) is latest


def test_mix_and_lognormal() -> None:
    import random

    rng = random.Random(0)
    mix = Mix.of([("a", 3.0), ("b", 1.0), ("never", 0.0)])
    picks = Counter(mix.pick(rng) for _ in range(20_000))
    assert picks["never"] == 0
    assert 0.72 < picks["a"] / 20_000 < 0.78
    assert mix.share("b") == 0.25
    with pytest.raises(ValueError):
        Mix(("a",), (0.0,))
    with pytest.raises(ValueError):
        Mix(("a", "b"), (1.0,))
    samples = sorted(LogNormal(100.0, 0.5).sample(rng) for _ in range(20_001))
    assert 95 < samples[10_000] < 105


def test_fleet_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Fleet([], seed=1, start=START)
    with pytest.raises(ValueError):
        Fleet(make_agents(1), seed=1, start=START, events_per_second=0)
