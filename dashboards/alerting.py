"""The alerts dashboard: active alerts with their runbooks, and the circuit breakers.

From ``agentwatch alerts run --metrics-port``; the alert and breaker counts it shares
with the fleet overview are in :mod:`agentwatch.dashboards.numbers`.
"""

from __future__ import annotations

from typing import Final

from agentwatch.dashboards.numbers import (
    AGENT_LINK,
    AGENT_ONLY,
    ALERT_STARTED,
    ALERTS,
    ALERTS_UID,
    BREAKER_OPEN,
    LAST_EVALUATION,
    RED_FROM_ONE,
    RULE_INFO,
    UNKNOWN,
    critical_alerts_stat,
    firing_alerts_stat,
    open_breakers_stat,
    pending_alerts_stat,
)
from agentwatch.dashboards.panels import (
    COUNT,
    RUNBOOKS_URL,
    SECONDS,
    DashboardSpec,
    Link,
    Query,
    Row,
    column,
    higher_is_worse,
    label_picker,
    selector,
    stat,
    table,
    timeseries,
)

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
