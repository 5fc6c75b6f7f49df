"""What the Prometheus export tests share: a catalog with per-agent thresholds, and the
export of rules over it written where Prometheus can load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentwatch.alerts.alertmanager.export import export_rules
from agentwatch.alerts.rules import Rule
from tests.catalog_helpers import agent, catalog

CATALOG = catalog(
    agent("strict-bot", owner="a", risk_tier="high", slo={"error_rate_max": 0.02},
          approved_models=["gpt-4o-mini"]),
    agent("lenient.bot", owner="b", slo={"error_rate_max": 0.2}),
    agent("old-bot", owner="c", status="retired"),
)  # fmt: skip


def write_rules(tmp_path: Path, rules: list[Rule], catalog: Any) -> Path:
    export = export_rules(rules, catalog)
    path = tmp_path / "agentwatch.rules.yml"
    path.write_text(export.render())
    return path
