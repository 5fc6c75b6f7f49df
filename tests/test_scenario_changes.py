"""Scenario changes over a simulated fleet: each kind from its time on (and not before),
composition of overlapping changes, and determinism."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
import pytest

from agentwatch.ingest.contract.events import (
    Event,
    LlmCall,
    PolicyCheck,
    SessionEnd,
    SessionStart,
    ToolCall,
)
from agentwatch.ingest.sim.changes import LatencyShift
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.scenario_file import parse_scenario
from tests.scenario_helpers import START

CHANGE = START + 1200.0  # every change below starts at +20m
SETTLED = CHANGE + 300.0  # by then every turn under way at the change has ended
END = START + 2400.0


ENCODER = msgspec.json.Encoder()


def fleet_run(doc: dict[str, Any] | None, seed: int = 5, agents: int = 4) -> list[Event]:
    """40 minutes of a 4-agent fleet at 40 events/s, with ``doc`` applied if given."""
    fleet_agents = make_agents(agents, seed)
    if doc is not None:
        parse_scenario(doc).apply(fleet_agents, START)
    fleet = Fleet(fleet_agents, seed=seed, start=START, events_per_second=40.0)
    events = list(fleet.events_until(END))
    events.extend(fleet.drain())
    return events


def change(agent: str, **kind: Any) -> dict[str, Any]:
    return {"changes": [{"at": "+20m", "agent": agent, **kind}]}


E = TypeVar("E", bound=Event)


def of(events: Iterable[Event], agent: str, cls: type[E]) -> list[E]:
    return [e for e in events if e.agent_id == agent and isinstance(e, cls)]


def before(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if e.ts.timestamp() < CHANGE]


def after(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if SETTLED <= e.ts.timestamp() < END]


def sessions_started(events: Iterable[Event], agent: str, since: float) -> dict[str, list[Event]]:
    """Events of the sessions of ``agent`` that began at or after ``since`` and before END."""
    starts = {
        e.session_id
        for e in of(events, agent, SessionStart)
        if since <= e.ts.timestamp() < END and isinstance(e, SessionStart)
    }
    grouped: dict[str, list[Event]] = {s: [] for s in starts}
    for e in events:
        if e.session_id in grouped:
            grouped[e.session_id].append(e)
    return grouped


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# --------------------------------------------------------------------------- scheduling


def test_changes_compose_in_order_and_end_after_their_duration() -> None:
    doc = {
        "changes": [
            {"at": "+10m", "agent": "hr-assistant-1", "tokens": {"scale": 2}},
            {"at": "+20m", "agent": "hr-assistant-1", "duration": "10m",
             "latency": {"scale": 3, "model": "gpt-4o"}},
            {"at": "+25m", "agent_type": "hr-assistant", "tokens": {"scale": 1.5}},
        ]
    }  # fmt: skip
    agents = make_agents(8, 2)
    base = {a.agent_id: a.parameters for a in agents}
    scheduled = parse_scenario(doc).apply(agents, START)
    hr1, hr2 = agents[0], agents[4]
    assert (hr1.agent_id, hr2.agent_id) == ("hr-assistant-1", "hr-assistant-2")

    def gpt4o_scale(ts: float) -> float:
        return next(
            m for m in hr1.parameters_at(ts).models.items if m.name == "gpt-4o"
        ).latency_scale

    assert hr1.parameters_at(START + 599.9) is base["hr-assistant-1"]
    assert hr1.parameters_at(START + 600).token_scale == 2.0
    assert gpt4o_scale(START + 1199.9) == 1.0 and gpt4o_scale(START + 1200) == 3.0
    assert hr1.parameters_at(START + 1500).token_scale == 3.0 and gpt4o_scale(START + 1500) == 3.0
    assert gpt4o_scale(START + 1800) == 1.0  # the latency shift is over ...
    assert hr1.parameters_at(START + 1800).token_scale == 3.0  # ... the token changes are not
    assert hr2.parameters_at(START + 1499).token_scale == 1.0
    assert hr2.parameters_at(START + 1500).token_scale == 1.5
    assert all(a.parameters_at(START + 9e9) is base[a.agent_id] for a in agents[1:4])
    assert [(s.agent_id, s.start - START, s.end and s.end - START) for s in scheduled] == [
        ("hr-assistant-1", 600, None),
        ("hr-assistant-1", 1200, 1800),
        ("hr-assistant-1", 1500, None),
        ("hr-assistant-2", 1500, None),
    ]
    assert scheduled[1].description == "latency of gpt-4o x3, for 10m"


def test_absolute_times_do_not_depend_on_the_start() -> None:
    doc = {"changes": [{"at": "2026-11-20T10:00:00Z", "agent": "it-support-1",
                        "tokens": {"scale": 2}}]}  # fmt: skip
    for start in (START, START - 86_400):
        agents = make_agents(2)
        parse_scenario(doc).apply(agents, start)
        assert agents[1].parameters_at(START + 3599).token_scale == 1.0
        assert agents[1].parameters_at(START + 3600).token_scale == 2.0


# --------------------------------------------------------------------------- each kind


@pytest.fixture(scope="module")
def baseline() -> list[Event]:
    return fleet_run(None)


def test_the_same_scenario_and_seed_repeat_the_same_events(baseline: list[Event]) -> None:
    spec = change("it-support-1", prompt={"version": "v13", "escalation_scale": 2.0})
    first = [ENCODER.encode(e) for e in fleet_run(spec)]
    second = [ENCODER.encode(e) for e in fleet_run(spec)]
    assert first == second
    # Until shortly before the change the stream is the unchanged fleet's, event for event.
    early = [ENCODER.encode(e) for e in baseline if e.ts.timestamp() < CHANGE - 600]
    assert first[: len(early)] == early
    assert first != [ENCODER.encode(e) for e in baseline]


def test_latency_shift_of_one_model(baseline: list[Event]) -> None:
    events = fleet_run(change("hr-assistant-1", latency={"model": "gpt-4o-mini", "scale": 2.0}))

    def latency(group: list[Event], agent: str, model: str) -> float:
        return median(
            e.latency_ms
            for e in of(group, agent, LlmCall)
            if e.model == model and not e.status and e.latency_ms is not None
        )

    ratio = latency(after(events), "hr-assistant-1", "gpt-4o-mini") / latency(
        before(events), "hr-assistant-1", "gpt-4o-mini"
    )
    assert 1.75 < ratio < 2.3
    for agent, model in (("hr-assistant-1", "gpt-4o"), ("it-support-1", "gpt-4o-mini")):
        other = latency(after(events), agent, model) / latency(before(events), agent, model)
        assert 0.85 < other < 1.15
    # Not before: up to the change the latencies are those of the unchanged fleet.
    unchanged = latency(before(baseline), "hr-assistant-1", "gpt-4o-mini")
    assert 0.97 < latency(before(events), "hr-assistant-1", "gpt-4o-mini") / unchanged < 1.03


def test_model_swap() -> None:
    events = fleet_run(
        change("member-services-1", model_swap={"from": "gpt-4o-mini", "to": "claude-3-5-sonnet"})
    )
    early = [e.model for e in of(before(events), "member-services-1", LlmCall)]
    late = [e.model for e in of(after(events), "member-services-1", LlmCall)]
    assert "claude-3-5-sonnet" not in early and early.count("gpt-4o-mini") > 0.4 * len(early)
    assert "gpt-4o-mini" not in late
    assert 0.4 < late.count("claude-3-5-sonnet") / len(late) < 0.6


def test_partial_model_swap_moves_its_share() -> None:
    events = fleet_run(
        change("member-services-1",
               model_swap={"from": "gpt-4o-mini", "to": "gemini-1.5-flash", "share": 0.5})
    )  # fmt: skip
    late = [e.model for e in of(after(events), "member-services-1", LlmCall)]
    assert 0.2 < late.count("gpt-4o-mini") / len(late) < 0.3  # half of its 50%
    assert 0.5 < late.count("gemini-1.5-flash") / len(late) < 0.6  # 30% plus 25%


def test_prompt_release_uses_tools_differently_and_escalates_more() -> None:
    events = fleet_run(
        change(
            "it-support-1",
            prompt={"version": "v13", "agent_version": "1.1.0", "add_tools": ["policy.search"],
                    "drop_tools": ["kb.search_it"], "escalation_scale": 2.5},
        )
    )  # fmt: skip
    early_tools = {e.tool_name for e in of(before(events), "it-support-1", ToolCall)}
    assert "kb.search_it" in early_tools and "policy.search" not in early_tools
    assert {e.prompt_version for e in of(before(events), "it-support-1", LlmCall)} == {"v12"}
    assert {e.agent_version for e in of(before(events), "it-support-1", Event)} == {"1.0.4"}

    new = sessions_started(events, "it-support-1", CHANGE)
    old = sessions_started(events, "it-support-1", START)
    old = {k: v for k, v in old.items() if v[0].ts.timestamp() < CHANGE}
    for session in new.values():
        assert {e.agent_version for e in session} == {"1.1.0"}
        assert {e.prompt_version for e in session if isinstance(e, LlmCall)} <= {"v13"}
        tools = [e.tool_name for e in session if isinstance(e, ToolCall)]
        assert "kb.search_it" not in tools

    def with_tool(group: dict[str, list[Event]], tool: str) -> float:
        hits = sum(any(isinstance(e, ToolCall) and e.tool_name == tool for e in s)
                   for s in group.values())  # fmt: skip
        return hits / len(group)

    def escalated(group: dict[str, list[Event]]) -> float:
        ends = [s[-1] for s in group.values() if isinstance(s[-1], SessionEnd)]
        return sum(e.resolution == "escalated" for e in ends) / len(ends)

    assert with_tool(new, "policy.search") > 0.8 and with_tool(old, "policy.search") == 0
    assert escalated(new) > 1.6 * escalated(old)
    assert len(new) > 300 and len(old) > 300


def test_token_growth() -> None:
    events = fleet_run(change("finance-compliance-1", tokens={"scale": 1.5}))

    def tokens(group: list[Event], agent: str, field: str) -> float:
        return median(getattr(e, field) for e in of(group, agent, LlmCall) if not e.status)

    for field in ("input_tokens", "output_tokens"):
        ratio = tokens(after(events), "finance-compliance-1", field) / tokens(
            before(events), "finance-compliance-1", field
        )
        assert 1.35 < ratio < 1.65, field
        other = tokens(after(events), "hr-assistant-1", field) / tokens(
            before(events), "hr-assistant-1", field
        )
        assert 0.85 < other < 1.15, field


def test_intent_shift() -> None:
    events = fleet_run(
        change("member-services-1", intents={"billing_dispute": 0.6, "balance_inquiry": 0.05})
    )

    def share(group: list[Event], intent: str) -> float:
        starts = of(group, "member-services-1", SessionStart)
        return sum(e.intent == intent for e in starts) / len(starts)

    assert 0.15 < share(before(events), "billing_dispute") < 0.25
    # New weights 0.6 and 0.05 beside the others' 0.48: 0.6 / 1.13 of sessions.
    assert 0.47 < share(after(events), "billing_dispute") < 0.59
    assert share(after(events), "balance_inquiry") < 0.08


def test_violation_burst_ends_after_its_duration() -> None:
    events = fleet_run(
        {
            "changes": [
                {
                    "at": "+20m",
                    "agent": "it-support-1",
                    "duration": "10m",
                    "violations": {"scale": 8},
                }
            ]
        }
    )

    def rate(lo: float, hi: float) -> float:
        checks = [e for e in of(events, "it-support-1", PolicyCheck)
                  if lo <= e.ts.timestamp() < hi]  # fmt: skip
        return sum(e.outcome != "pass" for e in checks) / len(checks)

    quiet_before = rate(START, CHANGE)
    burst = rate(CHANGE + 60, CHANGE + 600)
    quiet_after = rate(CHANGE + 900, END)
    assert burst > 5 * quiet_before and burst > 5 * quiet_after
    assert quiet_after < 2 * quiet_before


def test_one_policy_burst_leaves_the_others() -> None:
    events = fleet_run(change("it-support-1", violations={"scale": 10, "policy": "pii-output"}))

    def rate(group: list[Event], policy: str) -> float:
        checks = [e for e in of(group, "it-support-1", PolicyCheck) if e.policy_id == policy]
        return sum(e.outcome != "pass" for e in checks) / len(checks)

    assert rate(after(events), "pii-output") > 5 * rate(before(events), "pii-output")
    assert rate(after(events), "prompt-guard") < 3 * max(
        rate(before(events), "prompt-guard"), 0.004
    )


def test_tool_latency_shift() -> None:
    events = fleet_run(change("it-support-1", latency={"tool": "okta.get_user", "scale": 3}))

    def latency(group: list[Event], tool: str) -> float:
        return median(
            e.latency_ms for e in of(group, "it-support-1", ToolCall)
            if e.tool_name == tool and not e.status and e.latency_ms is not None
        )  # fmt: skip

    def ratio(tool: str) -> float:
        return latency(after(events), tool) / latency(before(events), tool)

    assert 2.6 < ratio("okta.get_user") < 3.4
    assert 0.85 < ratio("kb.search_it") < 1.15


def test_a_canary_rollout_runs_both_versions_side_by_side() -> None:
    events = fleet_run(
        {
            "changes": [
                {
                    "at": "+20m",
                    "agent": "it-support-1",
                    "rollout": 0.3,
                    "prompt": {"version": "v13", "agent_version": "1.1.0", "escalation_scale": 2.0},
                }
            ]
        }
    )
    assert {e.agent_version for e in of(before(events), "it-support-1", Event)} == {"1.0.4"}
    new = sessions_started(events, "it-support-1", CHANGE)
    versions = [s[0].agent_version for s in new.values()]
    assert 0.24 < versions.count("1.1.0") / len(versions) < 0.36
    for session in new.values():  # a session stays on the version it began with
        assert len({e.agent_version for e in session}) == 1
        canary = session[0].agent_version == "1.1.0"
        prompts = {e.prompt_version for e in session if isinstance(e, LlmCall)}
        assert prompts <= ({"v13"} if canary else {"v12"})


def test_a_change_for_an_agent_type_reaches_every_agent_of_it() -> None:
    doc = {"changes": [{"at": "+20m", "agent_type": "hr-assistant", "prompt": {"version": "v8"}}]}
    events = fleet_run(doc, agents=8)
    late = after(events)
    for agent in ("hr-assistant-1", "hr-assistant-2"):
        assert {e.prompt_version for e in of(late, agent, LlmCall)} == {"v8"}
    assert "v8" not in {e.prompt_version for e in of(late, "it-support-1", LlmCall)}


def test_latency_shift_describes_itself() -> None:
    assert LatencyShift(2.0).describe() == "latency of every model x2"
