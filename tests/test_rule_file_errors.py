"""A rule file that cannot be used is refused in one line naming the file, the key path
(``rules[0].window``) and the problem; the command that loads it exits 2 on that line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.rules import DEFAULT_RULES_DIR, RuleError, parse_rules
from agentwatch.cli import main
from agentwatch.yamlfile import read_yaml

RULE: dict[str, Any] = {
    "name": "HighErrors",
    "metric": "error_rate",
    "window": "5m",
    "op": ">",
    "threshold": 0.1,
    "severity": "warning",
    "annotations": {"summary": "{{ $labels.agent_id }} errs"},
}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in RULE.items() if k != key}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"rules": [RULE], "rule": []},
            "slo.yaml: rule: unknown key (did you mean rules?)",
        ),
        (
            {"rules": [{**RULE, "sevrity": "info"}]},
            "slo.yaml: rules[0].sevrity: unknown key (did you mean severity?)",
        ),
        (
            {"rules": [{**RULE, "threshold": {"catalog": "daily_budget_usd", "defualt": 5}}]},
            "slo.yaml: rules[0].threshold.defualt: unknown key (did you mean default?)",
        ),
        (
            {"rules": [{**RULE, "min_samples": "many"}]},
            "slo.yaml: rules[0].min_samples: Expected `int | null`, got `str`",
        ),
        (
            {"rules": [RULE, {**RULE, "name": "Slow", "window": "1 minute"}]},
            "slo.yaml: rules[1].window: not a duration: '1 minute' "
            "(use e.g. 500ms, 30s, 5m, 1h30m, 2d or 1w)",
        ),
        ({"rules": [without("metric")]}, "slo.yaml: rules[0].metric: required key is missing"),
        ({"x-common": {}}, "slo.yaml: rules: required key is missing"),
        ({"rules": [RULE, RULE]}, "slo.yaml: rules[1].name: HighErrors is also rules[0]"),
    ],
    ids=[
        "unknown-top-level-key",
        "unknown-rule-key",
        "unknown-threshold-key",
        "wrong-type",
        "bad-duration",
        "missing-required-key",
        "missing-rules",
        "name-twice",
    ],
)
def test_a_bad_rule_file_is_refused_in_one_line(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(doc, "slo.yaml")
    assert str(caught.value) == message


def test_each_bad_rule_of_a_file_gets_its_own_line() -> None:
    doc = {"rules": [without("op"), RULE, {**RULE, "name": "Other", "severity": "page"}]}
    with pytest.raises(RuleError) as caught:
        parse_rules(doc, "slo.yaml")
    assert str(caught.value).splitlines() == [
        "slo.yaml: rules[0].op: required key is missing",
        "slo.yaml: rules[2].severity: Invalid enum value 'page'",
    ]


@pytest.mark.parametrize("path", sorted(DEFAULT_RULES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_rule_file_decodes(path: Path) -> None:
    assert parse_rules(read_yaml(path, RuleError), str(path))


def test_the_cli_reports_a_bad_rule_file_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "slo.yaml").write_text(
        "rules:\n  - {name: R, metric: events, window: 1 minute, op: '>', threshold: 1,\n"
        "     severity: info, annotations: {summary: s}}\n"
    )
    assert main(["alerts", "export-prometheus", "--rules", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"agentwatch: {tmp_path / 'slo.yaml'}: rules[0].window: not a duration: '1 minute' "
        "(use e.g. 500ms, 30s, 5m, 1h30m, 2d or 1w)\n"
    )


def test_a_rule_on_a_renamed_metric_names_its_new_name() -> None:
    doc = {"rules": [{"name": "Old", "metric": "violation_rate", "window": "1m", "op": ">",
                      "threshold": 0.05, "severity": "critical"}]}  # fmt: skip
    with pytest.raises(RuleError) as caught:
        parse_rules(doc, "old.yaml")
    assert str(caught.value) == (
        "old.yaml: rules[0].metric: 'violation_rate' is now 'failed_check_rate' "
        "(violations and blocks together)"
    )
