"""The catalog the rule tests read thresholds and governance facts from: an agent with
SLOs, pins and approved lists, one with no approved tools, one ungoverned, one retired and
one paused."""

from __future__ import annotations

from tests.catalog_helpers import HR, agent, catalog

CATALOG = catalog(
    HR
    | {
        "approved_models": ["gpt-4o-mini"],
        "approved_tools": ["kb.search"],
        "pinned": {"agent_version": "2.0.0", "prompt_version": "v7"},
        "daily_budget_usd": 10,
        "slo": HR["slo"] | {"containment_floor": 0.7},
    },
    agent("locked-1", risk_tier="high", approved_tools=[]),
    agent("free-1"),
    agent("old-1", status="retired"),
    agent("paused-1", status="paused"),
)
