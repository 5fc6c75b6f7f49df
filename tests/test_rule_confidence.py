"""A rule on a share with ``confidence`` judges the share's Wilson bound, not the share."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwatch.alerts.rules import RuleError, load_rules, metrics, parse_rules
from agentwatch.alerts.rules.confidence import bound_promql, wilson_bound
from agentwatch.alerts.rules.metrics import SHARE

DOC = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text()


def rule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "ContainmentBelowFloor",
        "metric": "containment_rate",
        "window": "15m",
        "op": "<",
        "threshold": 0.7,
        "min_samples": 30,
        "confidence": 0.9,
        "severity": "warning",
        "annotations": {"summary": "containment is low"},
        **overrides,
    }


def test_the_wilson_bounds_of_half_of_a_hundred_are_the_textbook_ones() -> None:
    # One-sided 97.5% bounds are the two-sided 95% interval: 0.4038 to 0.5962.
    assert wilson_bound(0.5, 100, 0.975, upper=False) == pytest.approx(0.4038, abs=1e-4)
    assert wilson_bound(0.5, 100, 0.975, upper=True) == pytest.approx(0.5962, abs=1e-4)


@given(
    share=st.floats(0.0, 1.0),
    samples=st.integers(1, 100_000),
    confidence=st.floats(0.51, 0.999),
)
def test_the_share_lies_between_its_bounds_and_they_stay_within_zero_and_one(
    share: float, samples: int, confidence: float
) -> None:
    low = wilson_bound(share, samples, confidence, upper=False)
    high = wilson_bound(share, samples, confidence, upper=True)
    assert -1e-12 <= low <= share + 1e-12 and share - 1e-12 <= high <= 1 + 1e-12


def test_more_samples_bring_the_bound_closer_to_the_share() -> None:
    widths = [wilson_bound(0.6, n, 0.9, upper=True) - 0.6 for n in (30, 300, 3000)]
    assert widths[0] > widths[1] > widths[2] > 0


def test_a_window_just_below_the_floor_on_a_few_sessions_is_not_judged_below_it() -> None:
    (loaded,) = parse_rules({"rules": [rule()]})
    assert loaded.holds(0.62, 0.7)  # the share alone would fire
    assert not loaded.holds(loaded.judged(0.62, 32), 0.7)


def test_a_window_far_below_the_floor_is_judged_below_it() -> None:
    (loaded,) = parse_rules({"rules": [rule()]})
    assert loaded.holds(loaded.judged(0.45, 32), 0.7)


def test_a_rule_above_a_threshold_judges_the_lower_bound() -> None:
    (loaded,) = parse_rules({"rules": [rule(metric="failed_check_rate", op=">", threshold=0.05)]})
    assert loaded.judged(0.1, 100) == wilson_bound(0.1, 100, 0.9, upper=False)


def test_a_rule_without_confidence_judges_the_value_itself() -> None:
    raw = rule()
    del raw["confidence"]
    (loaded,) = parse_rules({"rules": [raw]})
    assert loaded.judged(0.62, 32) == 0.62


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metric": "events", "threshold": 10}, "confidence: applies to shares"),
        ({"confidence": 1.5}, "confidence: must be between 0.5 and 1"),
        ({"confidence": "high"}, r"confidence: Expected `float \| null`, got `str`"),
        ({"op": "=="}, "confidence: needs op"),
        ({"change": "ratio"}, "confidence: cannot be combined with change"),
    ],
)
def test_a_confidence_that_cannot_apply_is_refused_with_the_rule_named(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(RuleError, match=message) as caught:
        parse_rules({"rules": [rule(**overrides)]}, "slo.yaml")
    assert str(caught.value).startswith("slo.yaml: rules[0].confidence: ")


def test_the_exported_promql_bound_computes_the_same_number() -> None:
    expr = bound_promql("0.62", "32", 0.9, upper=True)
    assert eval(expr, {"sqrt": math.sqrt}) == pytest.approx(wilson_bound(0.62, 32, 0.9, upper=True))


def test_the_shipped_containment_floor_rule_asks_for_confidence() -> None:
    floor = next(r for r in load_rules() if r.name == "AgentContainmentBelowFloor")
    assert floor.confidence is not None


def test_the_docs_name_exactly_the_share_metrics_a_confidence_applies_to() -> None:
    listed = re.search(r"for shares only \(([^)]*)\)", DOC)
    assert listed, "docs/alerts.md no longer lists the shares a confidence applies to"
    documented = re.findall(r"`(\w+)`", listed[1])
    shares = [m.name for m in metrics().values() if m.unit == SHARE]
    assert sorted(documented) == sorted(shares)
