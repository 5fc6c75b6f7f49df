"""Scenario timelines: parsing and validation, each kind of change from its time on (and not
before), composition of overlapping changes, determinism, and the simulate command's
--scenario and --start handling (which needs no broker: every check runs before Kafka)."""

from __future__ import annotations

import copy
import datetime as dt
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import polars as pl
import pytest

from agentwatch.cli import build_parser, main
from agentwatch.commands.simulate import _plan
from agentwatch.durations import DurationError, format_duration, parse_seconds
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
from agentwatch.ingest.sim.scenario import Scenario, ScenarioError, When, parse_start, parse_when
from agentwatch.ingest.sim.scenario_file import load_scenario, parse_scenario
from agentwatch.settings import load_settings
from bench.drift import alarms, binomial_upper, changed_agents, detection

START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC).timestamp()
CHANGE = START + 1200.0  # every change below starts at +20m
SETTLED = CHANGE + 300.0  # by then every turn under way at the change has ended
END = START + 2400.0
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
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


# --------------------------------------------------------------------------- parsing


def test_every_shipped_scenario_loads_and_names_what_should_drift() -> None:
    files = sorted(SCENARIOS.glob("*.yaml"))
    names = {f.stem for f in files}
    assert {
        "control", "latency-shift", "model-swap", "prompt-regression", "token-growth",
        "intent-shift", "violation-burst",
    } <= names  # fmt: skip
    for path in files:
        scenario = load_scenario(path)
        assert scenario.name == path.stem and scenario.description
        assert scenario.run.agents and scenario.run.duration_s and scenario.run.sim_rate
        agents = make_agents(scenario.run.agents, scenario.run.seed or 0)
        scheduled = scenario.apply(agents, START)  # fits the fleet it was written for
        if path.stem == "control":
            assert not scenario.changes and not scenario.expect and not scheduled
            continue
        assert scenario.expect, path
        for expectation in scenario.expect:
            assert expectation.signals
            since = scenario.since(expectation, START)
            assert START < since < START + scenario.run.duration_s
            assert any(s.agent_id == expectation.agent and s.start <= since for s in scheduled)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("2d", 172_800),
     ("1.5h", 5400), (3600, 3600), (0.5, 0.5), ("0s", 0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "-1h", "2h-", "1h 30", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(DurationError, match="duration"):
        parse_seconds(text)


def test_times_are_offsets_or_instants_with_a_zone() -> None:
    assert parse_when("+30h", "at").resolve(START) == START + 108_000
    instant = "2026-11-21T15:00:00Z"
    expected = dt.datetime(2026, 11, 21, 15, tzinfo=dt.UTC).timestamp()
    assert parse_when(instant, "at").resolve(START) == expected
    assert parse_when(dt.datetime.fromisoformat(instant), "at").resolve(0.0) == expected
    assert parse_when("2026-11-21T16:00:00+01:00", "at").absolute == expected
    with pytest.raises(ScenarioError, match="time zone"):
        parse_when("2026-11-21T15:00:00", "at")
    with pytest.raises(ScenarioError, match="time zone"):
        parse_when(dt.datetime(2026, 11, 21, 15), "at")
    with pytest.raises(ScenarioError, match=r"\+30h"):
        parse_when("30h", "at")
    assert str(When(offset_s=108_000)) == "+1d6h" and format_duration(5400) == "1h30m"


def test_start_is_an_instant_or_how_long_ago() -> None:
    now = START + 1_000_000
    assert parse_start("now-2d", now) == now - 172_800
    assert parse_start("-36h", now) == now - 129_600
    assert parse_start("now-1h30m", now) == now - 5400
    assert parse_start("36h", now) == now - 129_600
    assert parse_start("2026-11-20T09:00:00Z", now) == START
    assert parse_start("2026-11-20T09:00:00", now) == START  # UTC, as the drift command reads
    assert parse_start("2026-11-20", now) == START - 9 * 3600
    for bad in ("yesterday", "-2x", "now+1h", "now-", "2d ago"):
        with pytest.raises(ScenarioError, match="--start"):
            parse_start(bad, now)


VALID: dict[str, Any] = {
    "name": "t",
    "changes": [{"at": "+1h", "agent": "it-support-1", "tokens": {"scale": 1.5}}],
    "expect": [{"agent": "it-support-1", "signal": "input_tokens"}],
}


def _edit(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or, with ..., delete) the value at a dotted path such as ``changes.0.tokens``."""

    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is ...:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit("colour", "red"), r"unknown key 'colour'"),
        (_edit("changes", {"at": "+1h"}), r"changes: expected a list"),
        (_edit("changes.0.latency", {"scale": 2}), r"changes\[0\]: expected exactly one kind"),
        (_edit("changes.0.tokens", ...), r"changes\[0\]: expected exactly one kind .* none"),
        (_edit("changes.0.at", ...), r"changes\[0\]: 'at' is required"),
        (_edit("changes.0.at", "tomorrow"), r"changes\[0\]\.at: expected an offset"),
        (_edit("changes.0.agent", ...), r"changes\[0\]: name the agent"),
        (_edit("changes.0.agent_type", "robot"), r"agent_type: unknown type 'robot'"),
        (_edit("changes.0.tokens", {"scale": -1}), r"tokens\.scale: expected a number > 0"),
        (_edit("changes.0.tokens", {"scale": "big"}), r"tokens\.scale: expected a number"),
        (_edit("changes.0.tokens", {}), r"changes\[0\]\.tokens: 'scale' is required"),
        (_edit("changes.0.tokens", {"scale": 2, "size": 3}), r"tokens: unknown key 'size'"),
        (_edit("changes.0.duration", "soon"), r"changes\[0\]\.duration: not a duration"),
        (_edit("changes.0.duration", 0), r"duration: must be positive"),
        (_edit("changes.0.rollout", 1.5), r"rollout: expected a number > 0 and <= 1"),
        (_edit("changes.0.tokens", ...), r"exactly one kind"),
        (_edit("expect.0.agent", "hr-assistant-1"), r"no change names agent 'hr-assistant-1'"),
        (_edit("expect.0.signals", ["x"]), r"either 'signal' or 'signals'"),
        (_edit("expect.0.signal", []), r"expected at least one name"),
        (_edit("expect.0.comparison", "weekly"), r"comparison: expected one of rolling, release"),
        (_edit("run", {"agents": 0}), r"run\.agents: must be at least 1"),
        (_edit("run", {"duration": "forever"}), r"run\.duration"),
        (_edit("run", {"sim_rate": 0}), r"run\.sim_rate: expected a number > 0"),
        (_edit("run", {"cpus": 2}), r"run: unknown key 'cpus'"),
    ],
)
def test_invalid_documents_say_where_and_why(
    edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = copy.deepcopy(VALID)
    parse_scenario(doc, "t.yaml")  # valid before the edit
    edit(doc)
    with pytest.raises(ScenarioError, match=message) as caught:
        parse_scenario(doc, "t.yaml")
    assert str(caught.value).startswith("t.yaml: ")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ({"latency": {"scale": 2, "model": "gpt-5"}}, r"latency\.model: unknown model 'gpt-5'"),
        ({"latency": {"scale": 2, "tool": "x.y"}}, r"latency\.tool: unknown tool 'x\.y'"),
        ({"latency": {"scale": 2, "model": "gpt-4o", "tool": "okta.get_user"}}, r"not both"),
        ({"model_swap": {"from": "gpt-4o"}}, r"model_swap: 'to' is required"),
        ({"model_swap": {"from": "gpt-4o", "to": "gpt-4o"}}, r"the same model"),
        ({"model_swap": {"from": "gpt-4o", "to": "o3-mini", "share": 0}}, r"share: expected"),
        ({"prompt": {"add_tools": ["kb.search_it"]}}, r"prompt: 'version' is required"),
        ({"prompt": {"version": "v2", "add_tools": ["kb.search_it"],
                     "drop_tools": ["kb.search_it"]}}, r"both added and dropped"),
        ({"prompt": {"version": "v2", "followup_tool_rate": 2}}, r"followup_tool_rate"),
        ({"intents": {}}, r"intents: expected intent weights"),
        ({"intents": {"faq": -1}}, r"intents\.faq: expected a number >= 0"),
        ({"violations": {"scale": 8, "duration": "3h"}}, r"violations: unknown key 'duration'"),
        ({"model_swap": "gpt-4o"}, r"model_swap: expected a mapping"),
    ],
)  # fmt: skip
def test_invalid_changes_say_where_and_why(kind: dict[str, Any], message: str) -> None:
    doc = {"changes": [{"at": "+1h", "agent": "it-support-1", **kind}]}
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(doc, "t.yaml")


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("changes: [\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: not valid YAML"):
        load_scenario(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- at: +1h\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(listed)
    named = tmp_path / "my-scenario.yaml"
    named.write_text("description: nothing happens\n")
    assert load_scenario(named).name == "my-scenario"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"agent": "it-support-9", "tokens": {"scale": 2}}, r"no agent 'it-support-9' in this"),
        ({"agent": "it-support-1", "latency": {"scale": 2, "model": "o3-mini"}},
         r"it-support-1 does not use model 'o3-mini'; its models: gpt-4o-mini"),
        ({"agent": "it-support-1", "latency": {"scale": 2, "tool": "sap.get_invoice"}},
         r"does not call tool 'sap.get_invoice'"),
        ({"agent": "it-support-1", "model_swap": {"from": "o3-mini", "to": "gpt-4o"}},
         r"does not use model 'o3-mini'"),
        ({"agent": "it-support-1", "prompt": {"version": "v2", "drop_tools": ["sap.get_invoice"]}},
         r"does not call sap.get_invoice, so it cannot stop"),
        ({"agent": "it-support-1", "intents": {"payslip": 1}}, r"has no intent 'payslip'"),
        ({"agent": "it-support-1", "intents": {"password_reset": 0, "vpn_issue": 0,
          "laptop_issue": 0, "software_access": 0, "mfa_reset": 0}}, r"all zero"),
        ({"agent": "it-support-1", "violations": {"scale": 2, "policy": "nope"}},
         r"runs no policy 'nope'"),
    ],
)  # fmt: skip
def test_changes_that_do_not_fit_the_fleet(entry: dict[str, Any], message: str) -> None:
    scenario = parse_scenario({"changes": [{"at": "+1h", **entry}]}, "t.yaml")
    with pytest.raises(ScenarioError, match=message) as caught:
        scenario.apply(make_agents(4, 1), START)
    assert str(caught.value).startswith("t.yaml: changes[0]")


def test_a_fleet_too_small_for_the_scenario() -> None:
    scenario = load_scenario(SCENARIOS / "prompt-regression.yaml")
    with pytest.raises(ScenarioError, match=r"no agent 'it-support-1' in this fleet of 1"):
        scenario.apply(make_agents(1), START)
    by_type = parse_scenario({"changes": [{"at": "+1h", "agent_type": "it-support",
                                           "tokens": {"scale": 2}}]})  # fmt: skip
    with pytest.raises(ScenarioError, match=r"no agent of type 'it-support'"):
        by_type.apply(make_agents(1), START)


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


# --------------------------------------------------------------------------- the command


def plan(*argv: str, now: float = START) -> Any:
    args = build_parser(load_settings(None)).parse_args(["simulate", *argv])
    return _plan(args, now)


def test_start_runs_as_fast_as_possible_until_now() -> None:
    p = plan("--start", "now-2d")
    assert p.rate == 0.0 and p.start == START - 172_800 and p.duration == 172_800
    p = plan("--start", "2026-11-19T09:00:00Z", "--duration", "3600")
    assert p.start == START - 86_400 and p.duration == 3600
    with pytest.raises(ScenarioError, match="--start runs as fast as possible"):
        plan("--start", "now-2d", "--rate", "50")
    assert plan("--start", "now-2d", "--rate", "0").rate == 0.0
    with pytest.raises(ScenarioError, match="not in the past"):
        plan("--start", "2026-11-21T09:00:00Z")


def test_the_scenario_run_block_fills_in_what_flags_leave_out() -> None:
    path = str(SCENARIOS / "latency-shift.yaml")
    hints = load_scenario(path).run
    p = plan("--scenario", path, "--rate", "0")
    assert (p.agents, p.duration, p.sim_rate, p.seed) == (
        hints.agents, hints.duration_s, hints.sim_rate, hints.seed,
    )  # fmt: skip
    assert isinstance(p.scenario, Scenario) and p.start is None
    p = plan("--scenario", path, "--rate", "0", "--agents", "8", "--seed", "3", "--sim-rate", "9")
    assert (p.agents, p.seed, p.sim_rate, p.duration) == (8, 3, 9.0, hints.duration_s)
    p = plan("--scenario", path, "--start", "now-1d")
    assert p.duration == 86_400 and p.rate == 0.0
    # In real time the hints' simulated hours do not apply; agents and seed still do.
    p = plan("--scenario", path)
    assert p.rate > 0 and p.duration == 60.0 and p.agents == hints.agents


def test_cli_reports_scenario_errors_before_touching_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = ["--bootstrap", "127.0.0.1:9", "--timeout", "1"]
    assert main(["simulate", *nowhere, "--scenario", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read scenario" in capsys.readouterr().err
    path = str(SCENARIOS / "prompt-regression.yaml")
    assert main(["simulate", *nowhere, "--scenario", path, "--agents", "1", "--rate", "0"]) == 2
    assert "no agent 'it-support-1' in this fleet of 1" in capsys.readouterr().err
    assert main(["simulate", *nowhere, "--start", "now-1h", "--rate", "10"]) == 2
    assert "--start runs as fast as possible" in capsys.readouterr().err
    assert main(["simulate", *nowhere, "--start", "last week"]) == 2
    assert "--start: expected an RFC 3339 time" in capsys.readouterr().err


def test_latency_shift_describes_itself() -> None:
    assert LatencyShift(2.0).describe() == "latency of every model x2"


# --------------------------------------------------------------------------- bench scoring


def _scores(rows: list[tuple[int, str, str, str]]) -> pl.DataFrame:
    """drift_scores-like rows: (hours after START, agent, signal, verdict)."""
    return pl.DataFrame(
        {
            "window_end": [dt.datetime.fromtimestamp(START + h * 3600, dt.UTC) for h, *_ in rows],
            "agent_id": [r[1] for r in rows],
            "comparison": ["rolling"] * len(rows),
            "signal": [r[2] for r in rows],
            "test": ["chi2"] * len(rows),
            "verdict": [r[3] for r in rows],
        }
    )


def test_bench_delay_counts_windows_from_the_change_to_the_first_drift() -> None:
    scenario = parse_scenario(
        {
            "changes": [{"at": "+2h", "agent": "a-1", "tokens": {"scale": 2}}],
            "expect": [{"agent": "a-1", "signals": ["x", "y", "z"]}],
        }
    )
    scores = _scores(
        [
            (1, "a-1", "x", "drift"),  # before the change: early, not a detection
            (2, "a-1", "y", "drift"),  # the window ending at the change: still before it
            (3, "a-1", "x", "drift"),  # window 1
            (4, "a-1", "y", "drift"),  # window 2
            (5, "a-1", "y", "drift"),
            (3, "b-1", "z", "drift"),  # another agent
            (3, "a-1", "z", "ok"),
            (4, "b-1", "x", "insufficient_data"),
        ]
    )
    start = dt.datetime.fromtimestamp(START, dt.UTC)
    (result,) = detection(scores, scenario, start)
    delays = {s.signal: (s.delay, s.early) for s in result.signals}
    assert delays == {"x": (1, 1), "y": (2, 1), "z": (None, 0)}
    assert result.delay is None  # an expectation counts when every signal is found
    counted = alarms(scores, changed_agents(scenario, ["a-1", "b-1"]))
    assert (counted.drifts, counted.tests, counted.by_signal) == (1, 1, {"z/chi2": 1})
    assert counted.per_1000 == 1000.0
    everyone = alarms(scores)
    assert (everyone.drifts, everyone.tests) == (6, 7)
    # The bound on the rate: 3/n for none seen (the rule of three), Clopper-Pearson beyond.
    assert binomial_upper(0, 1000) == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert binomial_upper(5, 100) == pytest.approx(0.1023, abs=1e-4)
    assert binomial_upper(3, 3) == 1.0
