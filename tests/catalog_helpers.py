"""Agent catalogs for the tests, each entry written as only what its tests care about: an
agent is active, low-risk and paged at its owner's pager unless it says otherwise."""

from __future__ import annotations

from typing import Any

from agentwatch.alerts.governance.catalog import Catalog, parse_catalog


def agent(
    agent_id: str, *, owner: str = "ops", risk_tier: str = "low", status: str = "active",
    **facts: Any,
) -> dict[str, Any]:  # fmt: skip
    """A catalog entry; ``facts`` are its other keys (slo, approved_tools, pinned, ...)."""
    return {
        "agent_id": agent_id, "owner": owner, "oncall": f"{owner}-pager",
        "risk_tier": risk_tier, "status": status, **facts,
    }  # fmt: skip


def catalog(*agents: dict[str, Any]) -> Catalog:
    return parse_catalog({"agents": list(agents)}, "test-catalog")


HR = agent("hr-1", owner="people", risk_tier="medium", slo={"p95_latency_ms": 5000})
"""The agent most alert tests watch: the people team's, medium risk, with a latency SLO."""
