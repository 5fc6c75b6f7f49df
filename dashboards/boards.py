"""The dashboards of the fleet's owners, and the list of every dashboard.

``DASHBOARDS`` is the list ``build`` writes and the tests prove, query by query, against a
real Prometheus; a new dashboard is one more ``DashboardSpec`` appended there. This file
declares the fleet overview, the agent detail, cost and tokens, and safety; the numbers
they share are in :mod:`agentwatch.dashboards.numbers`, and the dashboards of other
audiences each have their own module (pipeline, alerting, drift, governance).
"""

from __future__ import annotations

from typing import Final

from agentwatch.dashboards.alerting import ALERTS_DASHBOARD
from agentwatch.dashboards.drift import DRIFT
from agentwatch.dashboards.governance import GOVERNANCE
from agentwatch.dashboards.numbers import (
    AGENT_DETAIL_UID,
    AGENT_LINK,
    BLOCKED,
    BUDGET,
    BUDGET_LEVELS,
    CHECKS,
    CONTAINMENT_LEVELS,
    CONTAINMENT_TEXT,
    COST,
    ERROR_LEVELS,
    ERROR_TEXT,
    ERRORS,
    ESCALATION_LEVELS,
    ESCALATIONS,
    FEEDBACK_LEVELS,
    LATENCY_LEVELS,
    LATENCY_TEXT,
    LLM_CALLS,
    LLM_LATENCY,
    SECURITY,
    SESSION_DURATION,
    SESSIONS_ENDED,
    SESSIONS_STARTED,
    TOKENS,
    TOOL_CALLS,
    TOOL_LATENCY,
    TTFT,
    UNPRICED,
    VIOLATION_LEVELS,
    VIOLATIONS,
    blocked_stat,
    budget_used_stat,
    containment,
    containment_stat,
    critical_alerts_stat,
    error_rate,
    error_rate_stat,
    escalation_rate,
    feedback_mean,
    firing_alerts_stat,
    latency_stat,
    llm_p95,
    open_breakers_stat,
    pending_alerts_stat,
    sessions_stat,
    spend_per_session,
    spend_today_stat,
    violations_per_100_sessions,
    violations_stat,
)
from agentwatch.dashboards.panels import (
    AGENT_VARIABLES,
    COUNT,
    DAILY_BUDGET,
    ENVIRONMENT,
    NEUTRAL,
    ONE_AGENT,
    PER_MINUTE,
    RATE_WINDOW,
    RATIO,
    SCORE,
    SECONDS,
    USD,
    VERSION,
    DashboardSpec,
    PanelSpec,
    Query,
    Row,
    Thresholds,
    column,
    higher_is_worse,
    increase,
    quantile,
    rate,
    ratio,
    stat,
    table,
    timeseries,
)
from agentwatch.dashboards.pipeline import PIPELINE
from agentwatch.processors.metrics import series
from agentwatch.processors.store.definitions import IS_BLOCKED

# --------------------------------------------------------------------------- fleet overview

SESSIONS_BY_OUTCOME: Final = timeseries(
    "Sessions by outcome",
    "Sessions ending per minute, by how they ended: resolved by the agent, escalated to a "
    "human, abandoned by the user, or failed.",
    PER_MINUTE, Query(rate(SESSIONS_ENDED, by=("resolution",), per=60), "{{resolution}}"),
    key="sessions_by_outcome", stack=True,
)  # fmt: skip
CONTAINMENT_TREND: Final = timeseries(
    "Containment", CONTAINMENT_TEXT, RATIO, Query(containment(window=None), "containment"),
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
            _by_version("LLM latency p95 by release", LATENCY_TEXT, SECONDS,
                        llm_p95(V, window=RATE_WINDOW), thresholds=LATENCY_LEVELS),
            _by_version("Error rate by release", ERROR_TEXT, RATIO, error_rate(V, None),
                        thresholds=ERROR_LEVELS),
            _by_version("Containment by release", CONTAINMENT_TEXT, RATIO,
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
            timeseries("LLM latency p95 by model", LATENCY_TEXT, SECONDS,
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
# A policy's own blocks: its checks with outcome blocked (security blocks have no policy).
POLICY_BLOCKED: Final = IS_BLOCKED.matcher(series.POLICY_CHECKS.labels)

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
                column("Blocked", increase(CHECKS, by=POLICY, where=POLICY_BLOCKED)),
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
