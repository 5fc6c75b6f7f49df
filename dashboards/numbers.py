"""The numbers several dashboards show, defined once: metric names, queries, thresholds.

Sessions, containment, latency, error rate, violations, spend and the alert and breaker
counts are functions or panels here, so the fleet overview and the agent detail (and
the alerts dashboard) can never disagree on what "containment" means.

Thresholds are defaults for a typical fleet; tune them in this file, not in Grafana.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agentwatch.dashboards.panels import (
    COUNT,
    DAILY_BUDGET,
    RANGE,
    RATE_WINDOW,
    RATIO,
    SECONDS,
    USD,
    Link,
    PanelSpec,
    Thresholds,
    higher_is_worse,
    increase,
    lower_is_worse,
    quantile,
    rate,
    ratio,
    selector,
    stat,
    zero_while,
)
from agentwatch.processors.metrics import promql, series
from agentwatch.processors.metrics.promql import Counter, Quantity, render
from agentwatch.processors.metrics.series import Series

SESSIONS_STARTED: Final = series.SESSIONS_STARTED.name
SESSIONS_ENDED: Final = series.SESSIONS_ENDED.name
COST: Final = series.COST.name
TOKENS: Final = series.TOKENS.name
LLM_CALLS: Final = series.LLM_CALLS.name
TOOL_CALLS: Final = series.TOOL_CALLS.name
UNPRICED: Final = series.UNPRICED.name
ERRORS: Final = series.ERRORS.name
CHECKS: Final = series.POLICY_CHECKS.name
VIOLATIONS: Final = series.POLICY_VIOLATIONS.name
BLOCKED: Final = series.BLOCKED_ACTIONS.name
SECURITY: Final = series.SECURITY_EVENTS.name
ESCALATIONS: Final = series.ESCALATIONS.name
LLM_LATENCY: Final = series.LLM_LATENCY.name
TTFT: Final = series.TTFT.name
TOOL_LATENCY: Final = series.TOOL_LATENCY.name
SESSION_DURATION: Final = series.SESSION_DURATION.name
FEEDBACK: Final = series.FEEDBACK_SCORE.name

# Thresholds shared by every panel showing the same number.
CONTAINMENT_LEVELS: Final = lower_is_worse(0.6, 0.75)
LATENCY_LEVELS: Final = higher_is_worse(8, 15)
ERROR_LEVELS: Final = higher_is_worse(0.02, 0.05)
VIOLATION_LEVELS: Final = higher_is_worse(3, 10)
BUDGET_LEVELS: Final = higher_is_worse(0.8, 1.0)
FEEDBACK_LEVELS: Final = lower_is_worse(0.6, 0.8)
ESCALATION_LEVELS: Final = higher_is_worse(0.15, 0.3)

AGENT_DETAIL_UID: Final = "agentwatch-agent"
ALERTS_UID: Final = "agentwatch-alerts"
BUDGET: Final = f"${DAILY_BUDGET.name}"
# Cells of an agent_id column open the agent's own dashboard.
AGENT_LINK: Final = Link(
    "Open the agent's dashboard",
    f"/d/{AGENT_DETAIL_UID}?var-agent=${{__value.raw}}&${{__url_time_range}}", "agent_id",
)  # fmt: skip

# --------------------------------------------------------------------------- shared numbers
# Each takes the labels to keep (``by``) and the window, so one definition serves a stat
# (whole range), a table (range, by agent or version) and a trend (rate window).


def _count(metric: str, by: Sequence[str], window: str | None, where: str = "") -> str:
    """Growth over ``window`` (None: per-second rate over the rate window)."""
    if window is None:
        return rate(metric, by=by, where=where)
    return increase(metric, by=by, where=where, window=window)


@dataclass(frozen=True)
class _Panel:
    """How a quantity the alert rules read too (processors/metrics/promql.py) is written on
    a panel: over the selected agents, kept by ``by``, over ``window``."""

    by: Sequence[str]
    window: str | None

    def count(self, counter: Counter) -> str:
        return _count(counter.name, self.by, self.window, counter.where)

    def ratio(self, num: str, den: str) -> str:
        return ratio(num, den)

    def quantile(self, q: float, histogram: Series) -> str:
        return quantile(q, histogram.name, by=self.by, window=self.window or RATE_WINDOW)


def _shared(quantity: Quantity, by: Sequence[str], window: str | None) -> str:
    return render(quantity, _Panel(by, window))


def containment(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return _shared(promql.CONTAINMENT, by, window)


def error_rate(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return _shared(promql.ERROR_RATE, by, window)


def violations_per_100_sessions(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(VIOLATIONS, by, window), _count(SESSIONS_STARTED, by, window), 100)


def spend_per_session(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(COST, by, window), _count(SESSIONS_ENDED, by, window))


def feedback_mean(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(f"{FEEDBACK}_sum", by, window), _count(f"{FEEDBACK}_count", by, window))


def escalation_rate(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(ESCALATIONS, by, window), _count(SESSIONS_STARTED, by, window))


def llm_p95(by: Sequence[str] = (), window: str = RANGE) -> str:
    return _shared(promql.LLM_P95, by, window)


CONTAINMENT_TEXT: Final = (
    "Share of ended sessions the agent resolved itself, with no escalation to a human. "
    "Higher is better: red below 60%, green from 75%."
)
ERROR_TEXT: Final = (
    "Share of trace events that are errors (failed LLM or tool calls, agent errors). "
    "Yellow from 2%, red from 5%."
)
LATENCY_TEXT: Final = (
    "95% of LLM calls answered within this time (from the processor's latency histogram, "
    "so it is accurate to a bucket). Yellow from 8 s, red from 15 s."
)
VIOLATIONS_TEXT: Final = (
    "Policy violations found by guardrail checks per 100 sessions started. "
    "Yellow from 3, red from 10."
)


def sessions_stat() -> PanelSpec:
    return stat(
        "Sessions", "Conversations started in the time range by the selected agents.",
        increase(SESSIONS_STARTED), COUNT, key="sessions",
    )  # fmt: skip


def containment_stat() -> PanelSpec:
    return stat("Containment", CONTAINMENT_TEXT, containment(), RATIO, CONTAINMENT_LEVELS,
                key="containment")  # fmt: skip


def latency_stat() -> PanelSpec:
    return stat("LLM latency p95", LATENCY_TEXT, llm_p95(), SECONDS, LATENCY_LEVELS,
                key="llm_p95", decimals=2)  # fmt: skip


def error_rate_stat() -> PanelSpec:
    return stat("Error rate", ERROR_TEXT, error_rate(), RATIO, ERROR_LEVELS, key="error_rate",
                decimals=2)  # fmt: skip


def violations_stat() -> PanelSpec:
    return stat("Violations / 100 sessions", VIOLATIONS_TEXT, violations_per_100_sessions(),
                COUNT, VIOLATION_LEVELS, key="violations", decimals=1)  # fmt: skip


def blocked_stat() -> PanelSpec:
    return stat(
        "Blocked actions",
        "Actions a guardrail or security control stopped: the controls working, not a fault.",
        increase(BLOCKED), COUNT, key="blocked",
    )  # fmt: skip


def spend_today_stat(width: int = 3) -> PanelSpec:
    return stat(
        "Spend today", "LLM spend since midnight (UTC) for the selected agents, in USD.",
        increase(COST), USD, key="spend_today", today=True, decimals=2, width=width,
    )  # fmt: skip


def budget_used_stat(width: int = 3) -> PanelSpec:
    return stat(
        "Budget used today",
        "Spend since midnight (UTC) as a share of the daily budget (the 'Daily budget' box "
        "above). Yellow from 80%, red from 100%.",
        ratio(increase(COST), BUDGET), RATIO, BUDGET_LEVELS, key="budget_used", today=True,
        width=width,
    )  # fmt: skip


# --------------------------------------------------------------------------- alerts and breakers
# From `agentwatch alerts run --metrics-port`. Alerts and breakers carry no environment
# or version label, so their panels follow the agent picker only.

ALERTS: Final = series.ALERTS.name
ALERT_STARTED: Final = series.ALERT_STARTED.name
RULE_INFO: Final = series.RULE_INFO.name
LAST_EVALUATION: Final = series.LAST_EVALUATION.name
BREAKER_OPEN: Final = series.BREAKER_OPEN.name
AGENT_ONLY: Final = 'agent_id=~"$agent"'
# Any one is worth a look: red from the first.
RED_FROM_ONE: Final = Thresholds("green", ((1, "red"),))
YELLOW_FROM_ONE: Final = Thresholds("green", ((1, "yellow"),))
ALERTS_LINK: Final = Link(
    "Alerts and breakers", f"/d/{ALERTS_UID}?${{__url_time_range}}&${{agent:queryparam}}"
)


# Alert and breaker counts read 0 while the evaluator reports, n/a when it does not: a
# stopped evaluator must not look like a quiet fleet.
EVALUATOR_UP: Final = f"max({LAST_EVALUATION})"
UNKNOWN: Final = "n/a"


def _alerts(where: str) -> str:
    """How many alerts match ``where`` now."""
    return zero_while(f"sum({selector(ALERTS, where, AGENT_ONLY)})", EVALUATOR_UP)


def firing_alerts_stat(width: int = 6) -> PanelSpec:
    return stat(
        "Firing alerts", "Alerts firing now for the selected agents, of every severity. "
        "Yellow from 1; the alerts dashboard lists each one with its runbook.",
        _alerts('state="firing"'), COUNT, YELLOW_FROM_ONE, key="firing_alerts",
        links=(ALERTS_LINK,), no_value=UNKNOWN, width=width,
    )  # fmt: skip


def critical_alerts_stat(width: int = 6) -> PanelSpec:
    return stat(
        "Critical alerts", "Critical alerts firing now (violation bursts, budget overruns, "
        "unapproved models or tools, shadow or retired agents): each needs someone now. "
        "Red from 1.",
        _alerts('state="firing", severity="critical"'), COUNT, RED_FROM_ONE,
        key="critical_alerts", links=(ALERTS_LINK,), no_value=UNKNOWN, width=width,
    )  # fmt: skip


def pending_alerts_stat(width: int = 6) -> PanelSpec:
    return stat(
        "Pending alerts", "Alerts whose condition holds but not yet for the rule's `for` "
        "duration: they fire if it goes on. Yellow from 1.",
        _alerts('state="pending"'), COUNT, YELLOW_FROM_ONE, key="pending_alerts",
        links=(ALERTS_LINK,), no_value=UNKNOWN, width=width,
    )  # fmt: skip


def open_breakers_stat(width: int = 6) -> PanelSpec:
    return stat(
        "Open breakers", "Circuit breakers halting an agent (or one of its tools) now, "
        "opened by a runbook or by hand; half-open ones, letting a probe through, count "
        "too. Red from 1.",
        zero_while(f"sum({selector(BREAKER_OPEN, '', AGENT_ONLY)})", EVALUATOR_UP), COUNT,
        RED_FROM_ONE, key="open_breakers", links=(ALERTS_LINK,), no_value=UNKNOWN,
        width=width,
    )  # fmt: skip
