"""Scenario files: the shipped ones, durations and times, validation that says where and
why, and changes that do not fit the fleet."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentwatch.durations import DurationError, format_duration, parse_seconds
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.scenario import ScenarioError, When, parse_start, parse_when
from agentwatch.ingest.sim.scenario_file import load_scenario, parse_scenario
from tests.scenario_helpers import SCENARIOS, START


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
        (_edit("colour", "red"), r"^t\.yaml: colour: unknown key$"),
        (_edit("changes", {"at": "+1h"}), r"changes: Expected `array`, got `object`"),
        (_edit("changes.0.latency", {"scale": 2}), r"changes\[0\]: expected exactly one kind"),
        (_edit("changes.0.tokens", ...), r"changes\[0\]: expected exactly one kind .* none"),
        (_edit("changes.0.at", ...), r"changes\[0\]\.at: required key is missing"),
        (_edit("changes.0.at", "tomorrow"), r"changes\[0\]\.at: expected an offset"),
        (_edit("changes.0.agent", ...), r"changes\[0\]: name the agent"),
        (_edit("changes.0.agent_type", "robot"), r"agent_type: unknown type 'robot'"),
        (
            _edit("changes.0.tokens", {"scale": -1}),
            r"changes\[0\]\.tokens\.scale: Expected `float` > 0\.0",
        ),
        (
            _edit("changes.0.tokens", {"scale": "big"}),
            r"changes\[0\]\.tokens\.scale: Expected `float`, got `str`",
        ),
        (_edit("changes.0.tokens", {}), r"changes\[0\]\.tokens\.scale: required key is missing"),
        (
            _edit("changes.0.tokens", {"scale": 2, "size": 3}),
            r"changes\[0\]\.tokens\.size: unknown key",
        ),
        (_edit("changes.0.duration", "soon"), r"changes\[0\]\.duration: not a duration"),
        (_edit("changes.0.duration", 0), r"duration: must be positive"),
        (_edit("changes.0.rollout", 1.5), r"changes\[0\]\.rollout: Expected `float` <= 1\.0"),
        (_edit("changes.0.tokens", ...), r"exactly one kind"),
        (_edit("expect.0.agent", "hr-assistant-1"), r"no change names agent 'hr-assistant-1'"),
        (_edit("expect.0.signals", ["x"]), r"either 'signal' or 'signals'"),
        (_edit("expect.0.signal", []), r"expected at least one name"),
        (
            _edit("expect.0.comparison", "weekly"),
            r"expect\[0\]\.comparison: Invalid enum value 'weekly'",
        ),
        (_edit("run", {"agents": 0}), r"run\.agents: Expected `int` >= 1"),
        (_edit("run", {"duration": "forever"}), r"run\.duration"),
        (_edit("run", {"sim_rate": 0}), r"run\.sim_rate: Expected `float` > 0\.0"),
        (_edit("run", {"cpus": 2}), r"run\.cpus: unknown key"),
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
        ({"model_swap": {"from": "gpt-4o"}}, r"model_swap\.to: required key is missing"),
        ({"model_swap": {"from": "gpt-4o", "to": "gpt-4o"}}, r"the same model"),
        ({"model_swap": {"from": "gpt-4o", "to": "o3-mini", "share": 0}}, r"share: Expected"),
        ({"prompt": {"add_tools": ["kb.search_it"]}}, r"prompt\.version: required key is missing"),
        ({"prompt": {"version": "v2", "add_tools": ["kb.search_it"],
                     "drop_tools": ["kb.search_it"]}}, r"both added and dropped"),
        ({"prompt": {"version": "v2", "followup_tool_rate": 2}}, r"followup_tool_rate"),
        ({"intents": {}}, r"intents: expected intent weights"),
        ({"intents": {"faq": -1}}, r"intents\.faq: must be >= 0, got -1"),
        ({"violations": {"scale": 8, "duration": "3h"}}, r"violations\.duration: unknown key"),
        ({"model_swap": "gpt-4o"}, r"model_swap: Expected `object \| null`, got `str`"),
    ],
)  # fmt: skip
def test_invalid_changes_say_where_and_why(kind: dict[str, Any], message: str) -> None:
    doc = {"changes": [{"at": "+1h", "agent": "it-support-1", **kind}]}
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(doc, "t.yaml")


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.yaml: cannot read: "):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("changes: [\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml:\d+:\d+: not valid YAML"):
        load_scenario(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- at: +1h\n")
    with pytest.raises(
        ScenarioError, match=r"listed\.yaml: must be a mapping, got \[\{'at': '\+1h'\}\]"
    ):
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
