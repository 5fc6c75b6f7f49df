"""The agent catalog: the shipped example covers the simulated fleet; bad files are refused."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.governance.catalog import (
    EXAMPLE_CATALOG,
    AgentEntry,
    CatalogError,
    Pinned,
    catalog_from_entries,
    load_catalog,
    parse_catalog,
)
from agentwatch.ingest.sim.profiles import make_agents

DEMO_SEED = 7  # `agentwatch demo`'s default


def agent(**overrides: Any) -> dict[str, Any]:
    return {
        "agent_id": "hr-assistant-1",
        "owner": "people-platform",
        "oncall": "people-platform-oncall",
        "risk_tier": "medium",
        "status": "active",
    } | overrides


def problems(doc: Any) -> str:
    with pytest.raises(CatalogError) as err:
        parse_catalog(doc, "test.yaml")
    return str(err.value)


# --------------------------------------------------------------------------- the shipped example


@pytest.mark.parametrize("seed", [0, DEMO_SEED, 12345])
def test_shipped_catalog_lists_every_simulated_agent_as_active(seed: int) -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for sim in make_agents(8, seed):
        entry = catalog.get(sim.agent_id)
        assert entry is not None, sim.agent_id
        assert entry.status == "active"


@pytest.mark.parametrize("seed", [0, DEMO_SEED, 12345])
def test_shipped_catalog_approves_every_model_and_tool_the_simulator_uses(seed: int) -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for sim in make_agents(8, seed):
        entry = catalog.get(sim.agent_id)
        assert entry is not None and entry.approved_models is not None
        assert entry.approved_tools is not None
        assert {m.name for m in sim.parameters.models.items} <= entry.approved_models
        assert set(sim.parameters.tools) <= entry.approved_tools


def test_the_demo_fleet_runs_its_pinned_releases_in_prod() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for sim in make_agents(8, DEMO_SEED):
        entry = catalog.get(sim.agent_id)
        assert entry is not None
        if sim.environment == "prod":
            assert entry.pinned.agent_version == sim.parameters.agent_version, sim.agent_id
            assert entry.pinned.prompt_version == sim.parameters.prompt_version, sim.agent_id


def test_shipped_catalog_has_owner_oncall_budget_and_slos_for_each_simulated_agent() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for sim in make_agents(8):
        entry = catalog.get(sim.agent_id)
        assert entry is not None
        assert entry.owner and entry.oncall
        assert entry.daily_budget_usd is not None and entry.daily_budget_usd > 0
        assert {"p95_latency_ms", "containment_floor"} <= set(entry.slo)


def test_shipped_catalog_also_holds_paused_and_retired_agents() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    assert {a.agent_id for a in catalog.with_status("paused")} == {"hr-assistant-3"}
    assert {a.agent_id for a in catalog.with_status("retired")} == {"finance-compliance-3"}
    assert "claims-intake-1" in catalog


def test_an_agent_overrides_what_it_merges_from_an_anchor() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    retired = catalog.get("finance-compliance-3")
    assert retired is not None
    assert retired.risk_tier == "critical"
    assert retired.approved_tools == frozenset()


# --------------------------------------------------------------------------- reading


def test_a_minimal_entry_leaves_models_and_tools_ungoverned() -> None:
    entry = parse_catalog({"agents": [agent()]}).agents["hr-assistant-1"]
    assert entry.approved_models is None
    assert entry.approved_tools is None
    assert entry.pinned == Pinned()
    assert entry.slo == {}


def test_numbers_are_looked_up_by_their_rule_names() -> None:
    entry = parse_catalog(
        {"agents": [agent(daily_budget_usd=50, slo={"p95_latency_ms": 4000})]}
    ).agents["hr-assistant-1"]
    assert entry.number("daily_budget_usd") == 50.0
    assert entry.number("slo.p95_latency_ms") == 4000.0
    assert entry.number("slo.containment_floor") is None
    with pytest.raises(KeyError):
        entry.number("owner")


def test_the_sql_frame_tells_an_empty_list_from_an_ungoverned_one() -> None:
    catalog = parse_catalog(
        {"agents": [agent(approved_tools=[]), agent(agent_id="it-support-1", approved_tools=["x"])]}
    )
    rows = {r["agent_id"]: r for r in catalog.frame().iter_rows(named=True)}
    assert rows["hr-assistant-1"]["approved_tools"] == []
    assert rows["hr-assistant-1"]["approved_models"] is None
    assert rows["it-support-1"]["approved_tools"] == ["x"]


def test_an_empty_catalog_still_has_the_frame_columns() -> None:
    frame = parse_catalog({"agents": []}).frame()
    assert frame.height == 0
    assert "approved_models" in frame.columns


def test_extension_keys_hold_shared_anchors(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        textwrap.dedent(
            """
            x-team: &team {owner: ops, oncall: ops-pager, risk_tier: low}
            agents:
              - {agent_id: a1, status: active, <<: *team}
              - {agent_id: a2, status: paused, <<: *team, risk_tier: high}
            """
        )
    )
    catalog = load_catalog(path)
    assert catalog.agents["a1"].owner == "ops"
    assert catalog.agents["a2"].risk_tier == "high"


# --------------------------------------------------------------------------- refusing


def test_an_unknown_key_is_refused_with_the_agent_named() -> None:
    message = problems({"agents": [agent(aproved_models=["gpt-4o"])]})
    assert "agent hr-assistant-1" in message
    assert "aproved_models" in message


def test_a_status_outside_the_lifecycle_is_refused() -> None:
    assert "`status` must be one of active, paused, retired" in problems(
        {"agents": [agent(status="deprecated")]}
    )


def test_a_missing_required_field_is_refused() -> None:
    doc = agent()
    del doc["oncall"]
    assert "`oncall` is required" in problems({"agents": [doc]})


def test_a_version_written_as_a_number_is_refused() -> None:
    message = problems({"agents": [agent(pinned={"agent_version": 1.1})]})
    assert "`pinned.agent_version` must be a string" in message
    assert "quote" in message


def test_an_agent_listed_twice_is_refused() -> None:
    assert "listed twice" in problems({"agents": [agent(), agent()]})


def test_a_key_written_twice_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "agents:\n"
        "  - {agent_id: a1, owner: o, oncall: p, risk_tier: low, status: active,"
        " status: retired}\n"
    )
    with pytest.raises(CatalogError, match="duplicate key 'status'"):
        load_catalog(path)


def test_an_unknown_slo_is_refused_with_the_known_ones() -> None:
    message = problems({"agents": [agent(slo={"p99_latency_ms": 100})]})
    assert "slo.p99_latency_ms is not a known SLO" in message
    assert "p95_latency_ms" in message


def test_a_containment_floor_above_one_is_refused() -> None:
    assert "between 0 and 1" in problems({"agents": [agent(slo={"containment_floor": 80})]})


def test_a_budget_of_zero_is_refused() -> None:
    assert "daily_budget_usd must be positive" in problems({"agents": [agent(daily_budget_usd=0)]})


def test_approved_models_must_be_a_list_of_names() -> None:
    assert "`approved_models` must be a list of names" in problems(
        {"agents": [agent(approved_models="gpt-4o")]}
    )


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"approved_models": [1]}, "`approved_models[0]` must be a string, got 1"),
        ({"credentials": ["svc-hr", None]}, "`credentials[1]` must be a string, got None"),
        ({"slo": {"p95_latency_ms": "fast"}}, "`slo.p95_latency_ms` must be a number, got 'fast'"),
        ({"slo": 5}, "`slo` must be a mapping of names to numbers, got 5"),
        (
            {"tool_tiers": {"kb.search": "huge"}},
            "`tool_tiers.kb.search` must be one of read, write, destructive, got 'huge'",
        ),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_what_is_expected_and_the_value_given(
    overrides: dict[str, Any], problem: str
) -> None:
    assert problems({"agents": [agent(**overrides)]}).splitlines()[-1] == (
        f"  agent hr-assistant-1: {problem}"
    )


def test_every_problem_is_reported_at_once() -> None:
    message = problems({"agents": [agent(status="gone"), agent(agent_id="b", risk_tier="extreme")]})
    assert "agent hr-assistant-1" in message
    assert "agent b" in message


def test_a_file_without_an_agents_list_is_refused() -> None:
    assert "`agents` must be a list" in problems({"version": 1})


def test_an_unknown_format_version_is_refused() -> None:
    assert "version must be 1" in problems({"version": 2, "agents": []})


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("agents: [\n")
    with pytest.raises(CatalogError, match=r"catalog\.yaml:2:1: not valid YAML"):
        load_catalog(path)


def test_a_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "nope.yaml")


def test_a_catalog_built_in_code_refuses_duplicates() -> None:
    entry = AgentEntry("a1", "o", "p", "low", "active")
    with pytest.raises(CatalogError, match="listed twice"):
        catalog_from_entries([entry, entry])
