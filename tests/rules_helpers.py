"""The catalog the rule tests read thresholds and governance facts from: an agent with
SLOs, pins and approved lists, one with no approved tools, one ungoverned, one retired and
one paused."""

from __future__ import annotations

from agentwatch.alerts.governance.catalog import parse_catalog

CATALOG = parse_catalog(
    {
        "agents": [
            {
                "agent_id": "hr-1",
                "owner": "people",
                "oncall": "people-pager",
                "risk_tier": "medium",
                "status": "active",
                "approved_models": ["gpt-4o-mini"],
                "approved_tools": ["kb.search"],
                "pinned": {"agent_version": "2.0.0", "prompt_version": "v7"},
                "daily_budget_usd": 10,
                "slo": {"p95_latency_ms": 5000, "containment_floor": 0.7},
            },
            {
                "agent_id": "locked-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "high",
                "status": "active",
                "approved_tools": [],
            },
            {
                "agent_id": "free-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "low",
                "status": "active",
            },
            {
                "agent_id": "old-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "low",
                "status": "retired",
            },
            {
                "agent_id": "paused-1",
                "owner": "ops",
                "oncall": "ops-pager",
                "risk_tier": "low",
                "status": "paused",
            },
        ]
    },
    "test-catalog",
)
