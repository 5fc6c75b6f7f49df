"""A misspelt key in any of agentwatch's files is refused with the closest valid key."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.alerts.response.runbook_files import RunbookError, parse_runbook
from agentwatch.alerts.rules import RuleError, parse_rules
from agentwatch.ingest.sim.scenario import ScenarioError
from agentwatch.ingest.sim.scenario_file import parse_scenario
from agentwatch.processors.drift.config import config_from_mapping
from agentwatch.settings import ConfigError

RULE: dict[str, Any] = {
    "name": "HighErrors",
    "metric": "error_rate",
    "window": "5m",
    "op": ">",
    "threshold": 0.1,
    "severity": "warning",
}


def test_a_rule_with_a_misspelt_key_names_the_closest_one() -> None:
    with pytest.raises(RuleError, match=r"rules\[0\]\.fro: unknown key \(did you mean for\?\)"):
        parse_rules({"rules": [{**RULE, "fro": "5m"}]}, "rules.yaml")


def test_a_runbook_step_with_a_misspelt_key_names_the_closest_one() -> None:
    doc = {"id": "x", "steps": [{"action": "open_breaker", "cooldwn": "5m"}]}
    with pytest.raises(RunbookError, match=r"takes no cooldwn \(did you mean cooldown\?\)"):
        parse_runbook(doc, "x.yaml")


def test_a_scenario_with_a_misspelt_key_names_the_closest_one() -> None:
    with pytest.raises(ScenarioError, match=r"chnges: unknown key \(did you mean changes\?\)"):
        parse_scenario({"chnges": []}, "s.yaml")


def test_drift_settings_with_a_misspelt_key_name_the_closest_one() -> None:
    with pytest.raises(ConfigError, match=r"\['windw'\] \(did you mean window\?\)"):
        config_from_mapping({"windw": "1h"})
