"""The dashboards: what each audience sees, declared once as data.

``DASHBOARDS`` is the list ``build`` writes and the tests prove, query by query, against a
real Prometheus; a new dashboard is one more ``DashboardSpec`` appended there. Numbers
that several dashboards show (sessions, containment, latency, alerts, ...) are functions
here, so the fleet overview and the agent detail can never disagree on what "containment"
means.

Thresholds are defaults for a typical fleet; tune them in this file, not in Grafana.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from agentwatch.dashboards.governance import GOVERNANCE
from agentwatch.dashboards.panels import (
    AGENT_VARIABLES,
    COUNT,
    DAILY_BUDGET,
    ENVIRONMENT,
    NEUTRAL,
    ONE_AGENT,
    PER_MINUTE,
    PER_SECOND,
    RANGE,
    RATE_WINDOW,
    RATIO,
    RUNBOOKS_URL,
    SCORE,
    SECONDS,
    TOPIC,
    TOPIC_SCOPE,
    USD,
    VERSION,
    DashboardSpec,
    Link,
    PanelSpec,
    Query,
    Row,
    Thresholds,
    column,
    higher_is_worse,
    increase,
    label_picker,
    lower_is_worse,
    quantile,
    rate,
    ratio,
    selector,
    stat,
    table,
    timeseries,
    zero_while,
)

EVENTS: Final = "agentwatch_events_total"
SESSIONS_STARTED: Final = "agentwatch_sessions_started_total"
SESSIONS_ENDED: Final = "agentwatch_sessions_total"
CONTAINED: Final = "agentwatch_sessions_contained_total"
COST: Final = "agentwatch_cost_usd_total"
TOKENS: Final = "agentwatch_tokens_total"
LLM_CALLS: Final = "agentwatch_llm_calls_total"
TOOL_CALLS: Final = "agentwatch_tool_calls_total"
UNPRICED: Final = "agentwatch_unpriced_events_total"
ERRORS: Final = "agentwatch_errors_total"
CHECKS: Final = "agentwatch_policy_checks_total"
VIOLATIONS: Final = "agentwatch_policy_violations_total"
BLOCKED: Final = "agentwatch_blocked_actions_total"
SECURITY: Final = "agentwatch_security_events_total"
ESCALATIONS: Final = "agentwatch_escalations_total"
LLM_LATENCY: Final = "agentwatch_llm_call_duration_seconds"
TTFT: Final = "agentwatch_llm_time_to_first_token_seconds"
TOOL_LATENCY: Final = "agentwatch_tool_call_duration_seconds"
SESSION_DURATION: Final = "agentwatch_session_duration_seconds"
FEEDBACK: Final = "agentwatch_feedback_score"

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


def containment(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(CONTAINED, by, window), _count(SESSIONS_ENDED, by, window))


def error_rate(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(ERRORS, by, window), _count(EVENTS, by, window))


def violations_per_100_sessions(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(VIOLATIONS, by, window), _count(SESSIONS_STARTED, by, window), 100)


def spend_per_session(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(COST, by, window), _count(SESSIONS_ENDED, by, window))


def feedback_mean(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(f"{FEEDBACK}_sum", by, window), _count(f"{FEEDBACK}_count", by, window))


def escalation_rate(by: Sequence[str] = (), window: str | None = RANGE) -> str:
    return ratio(_count(ESCALATIONS, by, window), _count(SESSIONS_STARTED, by, window))


def llm_p95(by: Sequence[str] = (), window: str = RANGE) -> str:
    return quantile(0.95, LLM_LATENCY, by=by, window=window)


_CONTAINMENT_TEXT: Final = (
    "Share of ended sessions the agent resolved itself, with no escalation to a human. "
    "Higher is better: red below 60%, green from 75%."
)
_ERROR_TEXT: Final = (
    "Share of trace events that are errors (failed LLM or tool calls, agent errors). "
    "Yellow from 2%, red from 5%."
)
_LATENCY_TEXT: Final = (
    "95% of LLM calls answered within this time (from the processor's latency histogram, "
    "so it is accurate to a bucket). Yellow from 8 s, red from 15 s."
)
_VIOLATIONS_TEXT: Final = (
    "Policy violations found by guardrail checks per 100 sessions started. "
    "Yellow from 3, red from 10."
)


def sessions_stat() -> PanelSpec:
    return stat(
        "Sessions", "Conversations started in the time range by the selected agents.",
        increase(SESSIONS_STARTED), COUNT, key="sessions",
    )  # fmt: skip


def containment_stat() -> PanelSpec:
    return stat("Containment", _CONTAINMENT_TEXT, containment(), RATIO, CONTAINMENT_LEVELS,
                key="containment")  # fmt: skip


def latency_stat() -> PanelSpec:
    return stat("LLM latency p95", _LATENCY_TEXT, llm_p95(), SECONDS, LATENCY_LEVELS,
                key="llm_p95", decimals=2)  # fmt: skip


def error_rate_stat() -> PanelSpec:
    return stat("Error rate", _ERROR_TEXT, error_rate(), RATIO, ERROR_LEVELS, key="error_rate",
                decimals=2)  # fmt: skip


def violations_stat() -> PanelSpec:
    return stat("Violations / 100 sessions", _VIOLATIONS_TEXT, violations_per_100_sessions(),
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

ALERTS: Final = "agentwatch_alerts"
ALERT_STARTED: Final = "agentwatch_alerts_started_timestamp_seconds"
RULE_INFO: Final = "agentwatch_alert_rule_info"
LAST_EVALUATION: Final = "agentwatch_alerts_last_evaluation_timestamp_seconds"
BREAKER_OPEN: Final = "agentwatch_breaker_open"
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


# --------------------------------------------------------------------------- fleet overview

SESSIONS_BY_OUTCOME: Final = timeseries(
    "Sessions by outcome",
    "Sessions ending per minute, by how they ended: resolved by the agent, escalated to a "
    "human, abandoned by the user, or failed.",
    PER_MINUTE, Query(rate(SESSIONS_ENDED, by=("resolution",), per=60), "{{resolution}}"),
    key="sessions_by_outcome", stack=True,
)  # fmt: skip
CONTAINMENT_TREND: Final = timeseries(
    "Containment", _CONTAINMENT_TEXT, RATIO, Query(containment(window=None), "containment"),
    thresholds=CONTAINMENT_LEVELS, key="containment_trend",
)  # fmt: skip
SPEND_BY_AGENT: Final = timeseries(
    "Spend rate by agent", "LLM spend in USD per hour, by agent, stacked to the fleet total.",
    USD, Query(rate(COST, by=("agent_id",), per=3600), "{{agent_id}}"),
    key="spend_by_agent", stack=True,
)  # fmt: skip
LLM_LATENCY_TREND: Final = timeseries(
    "LLM latency", "Median (p50) and 95th percentile (p95) time for an LLM call to answer. "
    "Dashed lines: the 8 s and 15 s warning levels.",
    SECONDS, Query(quantile(0.5, LLM_LATENCY), "p50"), Query(quantile(0.95, LLM_LATENCY), "p95"),
    thresholds=LATENCY_LEVELS, key="llm_latency",
)  # fmt: skip
SAFETY_TREND: Final = timeseries(
    "Policy violations and blocked actions",
    "Per minute: violations found by guardrail checks, and actions a guardrail or "
    "security control blocked.",
    PER_MINUTE, Query(rate(VIOLATIONS, per=60), "violations"),
    Query(rate(BLOCKED, per=60), "blocked actions"), key="safety",
)  # fmt: skip
ERRORS_BY_TYPE: Final = timeseries(
    "Errors by type", "Errors per minute by type (timeouts, rate limits, tool failures...).",
    PER_MINUTE, Query(rate(ERRORS, by=("error_type",), per=60), "{{error_type}}"),
    key="errors_by_type", stack=True,
)  # fmt: skip

AGENT_ROW: Final = ("agent_id", "agent_version", "environment")
AGENTS_TABLE: Final = table(
    "Agents",
    "One row per agent release over the time range. Click an agent for its detail dashboard.",
    AGENT_ROW,
    column("Sessions", increase(SESSIONS_STARTED, by=AGENT_ROW)),
    column("Containment", containment(AGENT_ROW), RATIO, CONTAINMENT_LEVELS),
    column("Spend", increase(COST, by=AGENT_ROW), USD),
    column("LLM p95", llm_p95(AGENT_ROW), SECONDS, LATENCY_LEVELS),
    column("Error rate", error_rate(AGENT_ROW), RATIO, ERROR_LEVELS),
    column("Violations / 100 sessions", violations_per_100_sessions(AGENT_ROW), COUNT,
           VIOLATION_LEVELS, decimals=1),
    key="agents",
    links=(AGENT_LINK,),
)  # fmt: skip

FLEET: Final = DashboardSpec(
    uid="agentwatch-fleet",
    title="agentwatch / Fleet overview",
    description="How the agent fleet is doing, for product owners: sessions, containment, "
    "spend against budget, latency, safety, and every agent side by side.",
    variables=(*AGENT_VARIABLES, DAILY_BUDGET),
    rows=(
        Row("At a glance", (
            sessions_stat(), containment_stat(), spend_today_stat(), budget_used_stat(),
            latency_stat(), error_rate_stat(), violations_stat(), blocked_stat(),
        )),
        Row("Alerts", (firing_alerts_stat(), critical_alerts_stat(), pending_alerts_stat(),
                       open_breakers_stat())),
        Row("Trends", (SESSIONS_BY_OUTCOME, CONTAINMENT_TREND, SPEND_BY_AGENT,
                       LLM_LATENCY_TREND, SAFETY_TREND, ERRORS_BY_TYPE)),
        Row("Agents", (AGENTS_TABLE,)),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- agent detail

V: Final = ("agent_version",)


def _by_version(
    title: str, description: str, unit: str, expr: str, thresholds: Thresholds = NEUTRAL
) -> PanelSpec:
    """One line per release of the agent: the release comparison at a glance."""
    return timeseries(title, description, unit, Query(expr, "{{agent_version}}"),
                      thresholds=thresholds, width=8)  # fmt: skip


AGENT_DETAIL: Final = DashboardSpec(
    uid=AGENT_DETAIL_UID,
    title="agentwatch / Agent detail",
    description="Everything about one agent, with its releases compared version against "
    "version.",
    variables=(ENVIRONMENT, ONE_AGENT, VERSION),
    rows=(
        Row("Overview", (
            sessions_stat(), containment_stat(), latency_stat(), error_rate_stat(),
            violations_stat(),
            stat("Spend", "LLM spend over the time range, in USD.", increase(COST), USD,
                 decimals=2),
            stat("Escalations", "Sessions handed to a human over the time range.",
                 increase(ESCALATIONS), COUNT),
            stat("Feedback", "Mean user feedback score (thumbs up 1, down 0: the share of "
                 "positive ratings). Red below 0.6, green from 0.8.",
                 feedback_mean(), SCORE, FEEDBACK_LEVELS, decimals=2),
        )),
        Row("Releases compared", (
            table(
                "Releases", "Each release of the agent over the time range, side by side.", V,
                column("Sessions", increase(SESSIONS_STARTED, by=V)),
                column("Containment", containment(V), RATIO, CONTAINMENT_LEVELS),
                column("LLM p95", llm_p95(V), SECONDS, LATENCY_LEVELS),
                column("Error rate", error_rate(V), RATIO, ERROR_LEVELS),
                column("Spend / session", spend_per_session(V), USD),
                column("Violations / 100 sessions", violations_per_100_sessions(V), COUNT,
                       VIOLATION_LEVELS, decimals=1),
                column("Feedback", feedback_mean(V), SCORE, FEEDBACK_LEVELS, decimals=2),
                height=7,
            ),
            _by_version("LLM latency p95 by release", _LATENCY_TEXT, SECONDS,
                        llm_p95(V, window=RATE_WINDOW), thresholds=LATENCY_LEVELS),
            _by_version("Error rate by release", _ERROR_TEXT, RATIO, error_rate(V, None),
                        thresholds=ERROR_LEVELS),
            _by_version("Containment by release", _CONTAINMENT_TEXT, RATIO,
                        containment(V, None), thresholds=CONTAINMENT_LEVELS),
            _by_version("Spend per session by release",
                        "Mean LLM spend per ended session, in USD.", USD,
                        spend_per_session(V, None)),
            _by_version("Tokens per LLM call by release",
                        "Mean tokens (input, output, cache reads, reasoning) per LLM call.",
                        COUNT, ratio(rate(TOKENS, by=V), rate(LLM_CALLS, by=V))),
            _by_version("Feedback by release", "Mean user feedback score per release.", SCORE,
                        feedback_mean(V, None), thresholds=FEEDBACK_LEVELS),
        )),
        Row("Models and tools", (
            timeseries("LLM calls by model", "LLM calls per minute, by model.", PER_MINUTE,
                       Query(rate(LLM_CALLS, by=("model",), per=60), "{{model}}"), width=8,
                       stack=True),
            timeseries("LLM latency p95 by model", _LATENCY_TEXT, SECONDS,
                       Query(quantile(0.95, LLM_LATENCY, by=("model",)), "{{model}}"),
                       thresholds=LATENCY_LEVELS, width=8),
            timeseries("Time to first token p95 by model",
                       "95% of streamed LLM answers started within this time.", SECONDS,
                       Query(quantile(0.95, TTFT, by=("model",)), "{{model}}"),
                       thresholds=higher_is_worse(2, 5), width=8),
            timeseries("Tool calls by tool", "Tool calls per minute, by tool.", PER_MINUTE,
                       Query(rate(TOOL_CALLS, by=("tool_name",), per=60), "{{tool_name}}"),
                       width=8, stack=True),
            timeseries("Tool latency p95 by tool",
                       "95% of tool calls returned within this time. Yellow from 5 s, "
                       "red from 10 s.", SECONDS,
                       Query(quantile(0.95, TOOL_LATENCY, by=("tool_name",)), "{{tool_name}}"),
                       thresholds=higher_is_worse(5, 10), width=8),
            timeseries("Errors by type", "Errors per minute, by type.", PER_MINUTE,
                       Query(rate(ERRORS, by=("error_type",), per=60), "{{error_type}}"),
                       width=8, stack=True),
        )),
        Row("Sessions", (
            timeseries(SESSIONS_BY_OUTCOME.title, SESSIONS_BY_OUTCOME.description,
                       PER_MINUTE, *SESSIONS_BY_OUTCOME.queries, width=8, stack=True),
            timeseries("Session duration", "Median and 95th percentile time from a "
                       "session's start to its end.", SECONDS,
                       Query(quantile(0.5, SESSION_DURATION), "p50"),
                       Query(quantile(0.95, SESSION_DURATION), "p95"), width=8),
            timeseries("Escalation rate", "Escalations to a human per session started. "
                       "Yellow from 15%, red from 30%.", RATIO,
                       Query(escalation_rate(window=None), "escalation rate"),
                       thresholds=ESCALATION_LEVELS, width=8),
        )),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- cost and tokens

MODEL: Final = ("model",)

COST_AND_TOKENS: Final = DashboardSpec(
    uid="agentwatch-cost",
    title="agentwatch / Cost and tokens",
    description="LLM spend and token use by model and agent, against the daily budget.",
    variables=(*AGENT_VARIABLES, DAILY_BUDGET),
    rows=(
        Row("Budget", (
            spend_today_stat(width=4), budget_used_stat(width=4),
            stat("Budget burn rate",
                 "Spend over the last hour, projected to a day, as a share of the daily "
                 "budget: above 100% the budget runs out before midnight at this pace.",
                 ratio(rate(COST, per=86400, window="1h"), BUDGET), RATIO, BUDGET_LEVELS,
                 width=4),
            stat("Spend", "LLM spend over the time range, in USD.", increase(COST), USD,
                 decimals=2, width=4),
            stat("Spend per session", "Mean LLM spend per ended session, in USD.",
                 spend_per_session(), USD, decimals=4, width=4),
            stat("Unpriced LLM calls",
                 "LLM calls whose model has no price in the pricing table: their cost is "
                 "unknown, so spend is understated. Add the model to the pricing table.",
                 increase(UNPRICED), COUNT, higher_is_worse(1, 100), width=4),
        )),
        Row("Budget burn", (
            timeseries("Budget burn rate", "Spend over the last hour, projected to a day, as "
                       "a share of the daily budget; dashed: 80% and 100%.", RATIO,
                       Query(ratio(rate(COST, per=86400, window="1h"), BUDGET), "burn rate"),
                       thresholds=BUDGET_LEVELS),
            timeseries("Spend rate by model", "LLM spend in USD per hour, by model.", USD,
                       Query(rate(COST, by=MODEL, per=3600), "{{model}}"), stack=True),
        )),
        Row("Where the money goes", (
            timeseries(SPEND_BY_AGENT.title, SPEND_BY_AGENT.description, USD,
                       *SPEND_BY_AGENT.queries, stack=True, width=8),
            timeseries("Spend per session by agent", "Mean LLM spend per ended session, "
                       "in USD, by agent.", USD,
                       Query(spend_per_session(("agent_id",), None), "{{agent_id}}"), width=8),
            timeseries("Cost per LLM call by model", "Mean USD per LLM call, by model.", USD,
                       Query(ratio(rate(COST, by=MODEL), rate(LLM_CALLS, by=MODEL)),
                             "{{model}}"), width=8),
            timeseries("Tokens by type", "Tokens per minute: input (prompt), output, "
                       "cache reads, and hidden reasoning tokens.", PER_MINUTE,
                       Query(rate(TOKENS, by=("type",), per=60), "{{type}}"), stack=True,
                       width=8),
            timeseries("Tokens by model", "Tokens per minute (all types), by model.",
                       PER_MINUTE, Query(rate(TOKENS, by=MODEL, per=60), "{{model}}"),
                       stack=True, width=8),
            timeseries("Unpriced LLM calls by model", "Calls per minute to models with no "
                       "price: their spend is missing from every cost panel.", PER_MINUTE,
                       Query(rate(UNPRICED, by=MODEL, per=60), "{{model}}"), width=8),
            table(
                "Spend by model", "Calls, tokens and spend per model over the time range.",
                MODEL,
                column("LLM calls", increase(LLM_CALLS, by=MODEL)),
                column("Input tokens", increase(TOKENS, by=MODEL, where='type="input"')),
                column("Output tokens", increase(TOKENS, by=MODEL, where='type="output"')),
                column("Spend", increase(COST, by=MODEL), USD),
                column("Cost / call", ratio(increase(COST, by=MODEL),
                                            increase(LLM_CALLS, by=MODEL)), USD),
                column("Unpriced calls", increase(UNPRICED, by=MODEL), COUNT,
                       higher_is_worse(1, 100)),
                height=8,
            ),
        )),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- safety and policy

POLICY: Final = ("policy_id",)

SAFETY: Final = DashboardSpec(
    uid="agentwatch-safety",
    title="agentwatch / Safety and policy",
    description="Guardrail violations by policy and severity, blocked actions, security "
    "events and escalations to humans.",
    variables=AGENT_VARIABLES,
    rows=(
        Row("Summary", (
            stat("Policy violations", "Violations found by guardrail checks over the time "
                 "range.", increase(VIOLATIONS), COUNT, higher_is_worse(1, 25), width=4),
            stat("Violation rate", "Share of guardrail checks that found a violation. "
                 "Yellow from 1%, red from 5%.", ratio(increase(VIOLATIONS), increase(CHECKS)),
                 RATIO, higher_is_worse(0.01, 0.05), decimals=2, width=4),
            stat("High and critical violations", "Violations of high or critical severity: "
                 "each deserves a look. Yellow from 1, red from 5.",
                 increase(VIOLATIONS, where='severity=~"high|critical"'), COUNT,
                 higher_is_worse(1, 5), width=4),
            stat("Blocked actions", blocked_stat().description, increase(BLOCKED), COUNT,
                 width=4),
            stat("Security events", "Prompt injections, jailbreaks and exfiltration "
                 "attempts detected. Yellow from 1, red from 10.", increase(SECURITY), COUNT,
                 higher_is_worse(1, 10), width=4),
            stat("Escalation rate", "Escalations to a human per session started. Yellow from "
                 "15%, red from 30%.", escalation_rate(), RATIO, ESCALATION_LEVELS, width=4),
        )),
        Row("Policies", (
            timeseries("Violations by policy", "Violations per minute, by policy.",
                       PER_MINUTE, Query(rate(VIOLATIONS, by=POLICY, per=60), "{{policy_id}}"),
                       stack=True, width=8),
            timeseries("Violations by severity", "Violations per minute, by severity.",
                       PER_MINUTE,
                       Query(rate(VIOLATIONS, by=("severity",), per=60), "{{severity}}"),
                       stack=True, width=8),
            timeseries("Blocked actions by control", "Actions blocked per minute, by a "
                       "policy check or a security control.", PER_MINUTE,
                       Query(rate(BLOCKED, by=("source",), per=60), "{{source}}"), stack=True,
                       width=8),
            table(
                "Policies", "Each guardrail over the time range: checks run, violations found, "
                "actions blocked.", POLICY,
                column("Checks", increase(CHECKS, by=POLICY)),
                column("Violations", increase(VIOLATIONS, by=POLICY), COUNT,
                       higher_is_worse(1, 25)),
                column("Blocked", increase(CHECKS, by=POLICY, where='outcome="blocked"')),
                column("Violation rate", ratio(increase(VIOLATIONS, by=POLICY),
                                               increase(CHECKS, by=POLICY)), RATIO,
                       higher_is_worse(0.01, 0.05)),
                height=8,
            ),
        )),
        Row("Security and escalations", (
            timeseries("Security events by category", "Security events per minute, by "
                       "category.", PER_MINUTE,
                       Query(rate(SECURITY, by=("category",), per=60), "{{category}}"),
                       stack=True, width=8),
            timeseries("Security events by action", "Security events per minute: blocked "
                       "by a control, or only flagged.", PER_MINUTE,
                       Query(rate(SECURITY, by=("action",), per=60), "{{action}}"),
                       stack=True, width=8),
            timeseries("Escalations by agent", "Sessions handed to a human per minute, by "
                       "agent.", PER_MINUTE,
                       Query(rate(ESCALATIONS, by=("agent_id",), per=60), "{{agent_id}}"),
                       stack=True, width=8),
        )),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- pipeline health

PIPELINE_RECORDS: Final = "agentwatch_pipeline_records_total"
LAG: Final = "agentwatch_pipeline_consumer_lag"
DELAY: Final = "agentwatch_pipeline_processing_delay_seconds"
LAST_COMMIT: Final = "agentwatch_pipeline_last_commit_timestamp_seconds"
DEAD_LETTERS: Final = "agentwatch_pipeline_dead_letters_total"
FOLDED: Final = "agentwatch_label_values_folded_total"
OTLP_SPANS: Final = "agentwatch_otlp_spans_total"
PARTITION: Final = ("partition",)
LAG_LEVELS: Final = higher_is_worse(1_000, 10_000)
DELAY_LEVELS: Final = higher_is_worse(60, 300)


def _topic(metric: str) -> str:
    return selector(metric, scope=TOPIC_SCOPE)


def _pipeline_rate(key: str, per: int = 1) -> str:
    return rate(f"agentwatch_pipeline_{key}_total", per=per, scope=TOPIC_SCOPE)


_LAG_TEXT: Final = (
    "Records in Kafka not yet consumed, over all partitions. Growing lag means processors "
    "cannot keep up: add partitions and processor instances. Yellow from 1,000, red from "
    "10,000."
)
_DELAY_TEXT: Final = (
    "Time from the newest event of a batch to its landing, for the slowest partition. "
    "Yellow from 1 minute, red from 5 (events later than that count as late)."
)
_COMMIT_TEXT: Final = (
    "Time since a partition's last landed batch. High while events are flowing means a "
    "stalled processor; an idle topic also grows it. Yellow from 1 minute, red from 5."
)

PIPELINE: Final = DashboardSpec(
    uid="agentwatch-pipeline",
    title="agentwatch / Pipeline health",
    description="The processors themselves: consumer lag, throughput, dead letters and "
    "processing delay, for the platform engineers who run them.",
    variables=(TOPIC,),
    rows=(
        Row("Now", (
            stat("Consumer lag", _LAG_TEXT, f"sum({_topic(LAG)})", COUNT, LAG_LEVELS,
                 width=4),
            stat("Processing delay", _DELAY_TEXT, f"max({_topic(DELAY)})", SECONDS,
                 DELAY_LEVELS, decimals=1, width=4),
            stat("Throughput", "Kafka records landed per second (valid or not).",
                 _pipeline_rate("records"), PER_SECOND, width=4),
            stat("Dead letters", "Invalid messages over the time range, sent to the dead-"
                 "letter topic and table with a reason. Yellow from 1, red from 100.",
                 increase(DEAD_LETTERS, scope=""), COUNT, higher_is_worse(1, 100), width=4),
            stat("Since last commit", _COMMIT_TEXT, f"time() - max({_topic(LAST_COMMIT)})",
                 SECONDS, DELAY_LEVELS, decimals=0, width=4),
            stat("Label values folded", "Metric label values folded into 'other' by the "
                 "cardinality guard over the time range: some agents, models or tools then "
                 "show as 'other'. Raise --max-label-values if that matters.",
                 increase(FOLDED, scope=""), COUNT, higher_is_worse(1, 1000), width=4),
        )),
        Row("Flow", (
            timeseries("Throughput", "Per second: records consumed, valid events landed, "
                       "re-sent duplicates dropped, and events that arrived after their "
                       "window closed.", PER_SECOND,
                       Query(_pipeline_rate("records"), "records"),
                       Query(_pipeline_rate("events"), "events"),
                       Query(_pipeline_rate("duplicates"), "duplicates"),
                       Query(_pipeline_rate("late_events"), "late events")),
            timeseries("Consumer lag by partition", _LAG_TEXT, COUNT,
                       Query(f"sum by (partition) ({_topic(LAG)})", "partition {{partition}}"),
                       thresholds=LAG_LEVELS, stack=True),
            timeseries("Processing delay by partition", _DELAY_TEXT, SECONDS,
                       Query(f"max by (partition) ({_topic(DELAY)})",
                             "partition {{partition}}"), thresholds=DELAY_LEVELS, width=8),
            timeseries("Since last commit by partition", _COMMIT_TEXT, SECONDS,
                       Query(f"time() - max by (partition) ({_topic(LAST_COMMIT)})",
                             "partition {{partition}}"), thresholds=DELAY_LEVELS, width=8),
            timeseries("Dead letters by reason", "Invalid messages per minute, by reason "
                       "code (see the trace-event contract).", PER_MINUTE,
                       Query(rate(DEAD_LETTERS, by=("reason_code",), per=60, scope=""),
                             "{{reason_code}}"), stack=True, width=8),
            timeseries("Label values folded", "Label values folded into 'other' per minute, "
                       "by label.", PER_MINUTE,
                       Query(rate(FOLDED, by=("label",), per=60, scope=""), "{{label}}"),
                       width=24, height=6),
        )),
        Row("OpenTelemetry in", (
            timeseries("OTLP spans by outcome", "OpenTelemetry spans per minute, from the "
                       "OTLP receivers and the Collector topic, by outcome and reason: mapped "
                       "to events, skipped (nothing to record), unmapped (sampled in the "
                       "otlp_unmapped table) or rejected (reported to the exporter).",
                       PER_MINUTE,
                       Query(rate(OTLP_SPANS, by=("outcome", "reason"), per=60, scope=""),
                             "{{outcome}} {{reason}}"), stack=True, width=24, height=6),
        )),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- alerts dashboard

ALERT_AGENT: Final = label_picker(
    "agent", "Agent", "", "agent_id", "Agents with alerts or circuit breakers.",
    scope=f'__name__=~"{ALERTS}|{BREAKER_OPEN}"',
)  # fmt: skip
ALERT_ROW: Final = ("alertname", "severity", "agent_id", "state", "runbook_url")
BREAKER_ROW: Final = ("agent_id", "tool")
RUNBOOK_LINK: Final = Link(
    "Open the runbook", f"${{{RUNBOOKS_URL.name}}}/${{__value.raw}}", "runbook_url"
)


def _with_runbook(metric: str) -> str:
    """The alert series, each with its rule's runbook_url joined on from the rule info."""
    alerts = selector(metric, "", AGENT_ONLY)
    return f"{alerts} * on (alertname) group_left (runbook_url) {RULE_INFO}"


_BY_ALERT: Final = ", ".join(ALERT_ROW)
_FIRING: Final = selector(ALERTS, 'state="firing"', AGENT_ONLY)

ALERTS_DASHBOARD: Final = DashboardSpec(
    uid=ALERTS_UID,
    title="agentwatch / Alerts and breakers",
    description="What the alert evaluator has found and what its runbooks did about it: "
    "active alerts with their runbooks, and the circuit breakers halting agents.",
    variables=(ALERT_AGENT, RUNBOOKS_URL),
    rows=(
        Row("Now", (
            firing_alerts_stat(4), critical_alerts_stat(4), pending_alerts_stat(4),
            open_breakers_stat(4),
            stat("Rules in force", "Alert rules the evaluator has loaded (re-read when their "
                 "files change).", f"count({RULE_INFO})", COUNT, no_value=UNKNOWN, width=4),
            stat("Last evaluation", "Time since the evaluator last checked the rules (every "
                 "10 s by default). Yellow from 1 minute, red from 5: alerts are stale.",
                 f"time() - max({LAST_EVALUATION})", SECONDS, higher_is_worse(60, 300),
                 decimals=0, width=4),
        )),
        Row("Active alerts", (
            table(
                "Active alerts", "Every pending and firing alert, longest-running first. "
                "Click a runbook to read what it does (the Runbooks URL box says where they "
                "are served), or an agent for its dashboard.", ALERT_ROW,
                column("Active for", f"time() - min by ({_BY_ALERT}) "
                       f"({_with_runbook(ALERT_STARTED)})", SECONDS, decimals=0),
                column("Instances", f"sum by ({_BY_ALERT}) ({_with_runbook(ALERTS)})"),
                key="active_alerts", links=(RUNBOOK_LINK, AGENT_LINK), height=8,
            ),
            timeseries("Firing alerts by rule", "Alerts firing, by rule.", COUNT,
                       Query(f"sum by (alertname) ({_FIRING})", "{{alertname}}"),
                       stack=True),
            timeseries("Alerts by severity", "Pending and firing alerts, by severity and "
                       "state.", COUNT,
                       Query(f"sum by (severity, state) ({selector(ALERTS, '', AGENT_ONLY)})",
                             "{{severity}} {{state}}"), stack=True),
        )),
        Row("Circuit breakers", (
            table(
                "Circuit breakers", "Every breaker the control topic knows: 1 while it halts "
                "the agent's calls (a blank tool: the whole agent), 0 once closed.",
                BREAKER_ROW,
                column("Halting calls", f"max by (agent_id, tool) "
                       f"({selector(BREAKER_OPEN, '', AGENT_ONLY)})", COUNT, RED_FROM_ONE),
                key="breakers", links=(AGENT_LINK,), width=12, height=8,
            ),
            timeseries("Open breakers by agent", "Breakers halting calls, by agent.", COUNT,
                       Query(f"sum by (agent_id) ({selector(BREAKER_OPEN, '', AGENT_ONLY)})",
                             "{{agent_id}}"), thresholds=RED_FROM_ONE, stack=True),
        )),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- drift dashboard
# From `agentwatch drift run --metrics-port`: each agent's latest evaluated window, per
# signal; no environment or version label (release comparisons name their versions).

DRIFT_SCORE: Final = "agentwatch_drift_score"
DRIFT_DETECTED: Final = "agentwatch_drift_detected"
DRIFT_INSUFFICIENT: Final = "agentwatch_drift_insufficient_data"
DRIFT_WINDOW_END: Final = "agentwatch_drift_window_end_timestamp_seconds"
RELEASE_SCORE: Final = "agentwatch_drift_release_score"
RELEASE_DETECTED: Final = "agentwatch_drift_release_detected"
DRIFT_SCOPE: Final = 'agent_id=~"$agent", signal=~"$signal"'
# Severity: 1 is the test's threshold, so red is a drift verdict and yellow a near miss.
SEVERITY_LEVELS: Final = higher_is_worse(0.8, 1.0)
RELEASE: Final = ("agent_id", "dimension", "baseline", "candidate")
_SEVERITY_TEXT: Final = (
    "Severity puts every test on one scale where 1 is its threshold: at or above 1 the "
    "test found drift. Yellow from 0.8, red from 1."
)


def _drift(metric: str) -> str:
    return selector(metric, scope=DRIFT_SCOPE)


DRIFT_AGENT: Final = label_picker(
    "agent", "Agent", DRIFT_SCORE, "agent_id", "Agents with drift results.",
)  # fmt: skip
SIGNAL: Final = label_picker(
    "signal", "Signal", DRIFT_SCORE, "signal", "Signals tested for the chosen agents.",
    scope=AGENT_ONLY,
)  # fmt: skip

DRIFT: Final = DashboardSpec(
    uid="agentwatch-drift",
    title="agentwatch / Drift",
    description="Whether agents still behave as when they were approved, and whether new "
    "releases, prompts and models behave like the ones they replace: drift scores and "
    "verdicts per signal over time.",
    variables=(DRIFT_AGENT, SIGNAL),
    rows=(
        Row("Latest window", (
            stat("Agents drifting", "Agents with at least one signal found drifting in their "
                 "latest window. Yellow from 1, red from 3.",
                 f"sum(max by (agent_id) ({_drift(DRIFT_DETECTED)}))", COUNT,
                 higher_is_worse(1, 3), width=4),
            stat("Signals drifting", "Agent and signal pairs found drifting in the latest "
                 "window. Yellow from 1, red from 5.", f"sum({_drift(DRIFT_DETECTED)})", COUNT,
                 higher_is_worse(1, 5), width=4),
            stat("Worst severity", "The largest severity of any signal. " + _SEVERITY_TEXT,
                 f"max({_drift(DRIFT_SCORE)})", SCORE, SEVERITY_LEVELS, decimals=2, width=4),
            stat("Releases drifting", "New releases, prompts or models found unlike the stable "
                 "one they run beside, on at least one signal. Red from 1.",
                 f"sum(max by ({', '.join(RELEASE)}) ({_drift(RELEASE_DETECTED)}))", COUNT,
                 RED_FROM_ONE, width=4),
            stat("Signals without enough data", "Agent and signal pairs no test could judge "
                 "for lack of samples (not the same as no drift).",
                 f"sum({_drift(DRIFT_INSUFFICIENT)})", COUNT, width=4),
            stat("Evaluation lag", "Time since the end of the latest evaluated window (the "
                 "oldest among the agents). Windows are evaluated an hour apart, a few minutes "
                 "after they end: yellow from 2 hours, red from 3 (the evaluator is behind).",
                 f"time() - min({selector(DRIFT_WINDOW_END, scope=AGENT_ONLY)})", SECONDS,
                 higher_is_worse(7200, 10800), decimals=0, width=4),
        )),
        Row("Scores and verdicts over time", (
            timeseries("Drift severity by signal", "The largest severity of each signal among "
                       "the selected agents. " + _SEVERITY_TEXT, SCORE,
                       Query(f"max by (signal) ({_drift(DRIFT_SCORE)})", "{{signal}}"),
                       thresholds=SEVERITY_LEVELS),
            timeseries("Drift severity by agent", "The largest severity of any signal of each "
                       "agent. " + _SEVERITY_TEXT, SCORE,
                       Query(f"max by (agent_id) ({_drift(DRIFT_SCORE)})", "{{agent_id}}"),
                       thresholds=SEVERITY_LEVELS),
            timeseries("Signals drifting by agent", "How many signals of each agent were found "
                       "drifting.", COUNT,
                       Query(f"sum by (agent_id) ({_drift(DRIFT_DETECTED)})", "{{agent_id}}"),
                       stack=True),
            timeseries("Signals without enough data by agent", "How many signals of each "
                       "agent no test could judge for lack of samples.", COUNT,
                       Query(f"sum by (agent_id) ({_drift(DRIFT_INSUFFICIENT)})",
                             "{{agent_id}}"), stack=True),
            table(
                "Signals now", "Each agent's signals in its latest window, most severe first: "
                "1 in Drift means a test found it drifting. Click an agent for its dashboard.",
                ("agent_id", "signal"),
                column("Severity", f"max by (agent_id, signal) ({_drift(DRIFT_SCORE)})", SCORE,
                       SEVERITY_LEVELS, decimals=2),
                column("Drift", f"max by (agent_id, signal) ({_drift(DRIFT_DETECTED)})", COUNT,
                       RED_FROM_ONE),
                key="signals", links=(AGENT_LINK,), height=10,
            ),
        )),
        Row("Releases compared", (
            table(
                "Releases compared", "Each new release, prompt or model (first seen in the "
                "last day) against the stable one it runs beside, over the same period: how "
                "many signals differ, and how much. Click an agent to compare its versions "
                "on its dashboard.", RELEASE,
                column("Signals drifting", f"sum by ({', '.join(RELEASE)}) "
                       f"({_drift(RELEASE_DETECTED)})", COUNT, RED_FROM_ONE),
                column("Signals tested", f"count by ({', '.join(RELEASE)}) "
                       f"({_drift(RELEASE_DETECTED)})"),
                column("Worst severity", f"max by ({', '.join(RELEASE)}) "
                       f"({_drift(RELEASE_SCORE)})", SCORE, SEVERITY_LEVELS, decimals=2),
                key="releases", links=(AGENT_LINK,), height=7,
            ),
            timeseries("Release drift severity", "The largest severity of each new release "
                       "against its stable one. " + _SEVERITY_TEXT, SCORE,
                       Query(f"max by ({', '.join(RELEASE)}) ({_drift(RELEASE_SCORE)})",
                             "{{agent_id}} {{dimension}} {{candidate}} vs {{baseline}}"),
                       thresholds=SEVERITY_LEVELS),
            timeseries("Release signals drifting", "How many signals of each new release "
                       "differ from its stable one.", COUNT,
                       Query(f"sum by ({', '.join(RELEASE)}) ({_drift(RELEASE_DETECTED)})",
                             "{{agent_id}} {{dimension}} {{candidate}} vs {{baseline}}"),
                       stack=True),
        )),
    ),
)  # fmt: skip

DASHBOARDS: Final[tuple[DashboardSpec, ...]] = (
    FLEET,
    AGENT_DETAIL,
    COST_AND_TOKENS,
    SAFETY,
    DRIFT,
    ALERTS_DASHBOARD,
    PIPELINE,
    GOVERNANCE,
)
