"""What the Prometheus export tests share: a catalog with per-agent thresholds, and the
export of rules over it written where Prometheus can load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentwatch.alerts.alertmanager.export import export_rules
from agentwatch.alerts.governance.catalog import parse_catalog
from agentwatch.alerts.rules import Rule

CATALOG = parse_catalog(
    {
        "version": 1,
        "agents": [
            {"agent_id": "strict-bot", "owner": "a", "oncall": "a-oncall", "risk_tier": "high",
             "status": "active", "slo": {"error_rate_max": 0.02},
             "approved_models": ["gpt-4o-mini"]},
            {"agent_id": "lenient.bot", "owner": "b", "oncall": "b-oncall", "risk_tier": "low",
             "status": "active", "slo": {"error_rate_max": 0.2}},
            {"agent_id": "old-bot", "owner": "c", "oncall": "c-oncall", "risk_tier": "low",
             "status": "retired"},
        ],
    }
)  # fmt: skip


def write_rules(tmp_path: Path, rules: list[Rule], catalog: Any) -> Path:
    export = export_rules(rules, catalog)
    path = tmp_path / "agentwatch.rules.yml"
    path.write_text(export.render())
    return path
