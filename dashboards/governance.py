"""The governance dashboard: the agent inventory held against what the fleet does.

From ``alerts run --metrics-port`` (the registry's gauges: alerts/governance/metrics.py,
and the alert states) and the processor (what each agent actually runs and calls):
inventory by risk tier and status, agents without a business owner, access reviews
overdue, prod versions nobody registered, LLM calls to models not approved for the
agent, and activity of retired agents.
"""

from __future__ import annotations

from typing import Final

from agentwatch.dashboards.panels import (
    COUNT,
    RANGE,
    DashboardSpec,
    Query,
    Row,
    Thresholds,
    column,
    stat,
    table,
    timeseries,
    zero_while,
)
from agentwatch.processors.metrics import series

INFO: Final = series.AGENT_INFO.name
MODEL_APPROVED: Final = series.MODEL_APPROVED.name
REVIEW_AGE: Final = series.REVIEW_AGE.name
REVIEW_INTERVAL: Final = series.REVIEW_INTERVAL.name
RELEASE: Final = series.RELEASE_REGISTERED.name
EVENTS: Final = series.EVENTS.name
LLM_CALLS: Final = series.LLM_CALLS.name
ALERTS: Final = series.ALERTS.name
DAYS: Final = "d"
GOVERNANCE_RULES: Final = (
    "ShadowAgent|UnapprovedModel|UnapprovedTool|UnpinnedVersionInProd|RetiredAgentActive|"
    "PausedAgentActive|UnregisteredReleaseInProd|UnapprovedReleaseInProd|OffReleaseCall|"
    "AccessReviewOverdue"
)
# "None" told apart from "the registry is not exported" (a stopped evaluator).
REGISTRY_UP: Final = f"count({INFO})"
RED_FROM_ONE: Final = Thresholds("green", ((1, "red"),))
YELLOW_FROM_ONE: Final = Thresholds("green", ((1, "yellow"),))

_PROD_VERSIONS: Final = (
    f'sum by (agent_id, agent_version) (increase({EVENTS}{{environment="prod"}}[{RANGE}]))'
)
UNREGISTERED: Final = f"{_PROD_VERSIONS} unless on (agent_id, agent_version) {RELEASE}"
UNAPPROVED_CALLS: Final = (
    f"sum by (agent_id, model) (increase({LLM_CALLS}[{RANGE}])) "
    f"unless on (agent_id, model) {MODEL_APPROVED}"
)
OVERDUE: Final = f"{REVIEW_AGE} > on (agent_id) {REVIEW_INTERVAL}"
RETIRED_EVENTS: Final = (
    f"sum by (agent_id) (increase({EVENTS}[{RANGE}])) "
    f'* on (agent_id) group_left () {INFO}{{status="retired"}}'
)

GOVERNANCE: Final = DashboardSpec(
    uid="agentwatch-governance",
    title="agentwatch / Governance",
    description="The agent registry against the fleet's traffic: who is catalogued and at "
    "what risk, who answers for them, whether access reviews are current, and what runs "
    "or is called without being registered or approved.",
    variables=(),
    rows=(
        Row("Now", (
            stat("Catalogued agents", "Agents in the catalog, every status.", REGISTRY_UP,
                 COUNT, width=4),
            stat("Without a business owner", "Catalogued agents with no business_owner: "
                 "nobody answers for what they are for. Yellow from 1.",
                 zero_while(f'count({INFO}{{business_owner=""}})', REGISTRY_UP), COUNT,
                 YELLOW_FROM_ONE, width=4),
            stat("Reviews overdue", "Active agents whose last access review is older than "
                 "their risk tier allows (AccessReviewOverdue). Red from 1.",
                 zero_while(f"count({OVERDUE})", REGISTRY_UP), COUNT, RED_FROM_ONE, width=4),
            stat("Unregistered prod versions", "Agent versions that sent prod events in the "
                 "range without a registered release. Yellow from 1.",
                 zero_while(f"count({UNREGISTERED})", REGISTRY_UP), COUNT, YELLOW_FROM_ONE,
                 width=4),
            stat("Calls to unapproved models", "LLM calls in the range to a model not in "
                 "the agent's approved_models. Red from 1.",
                 zero_while(f"sum({UNAPPROVED_CALLS})", REGISTRY_UP), COUNT, RED_FROM_ONE,
                 width=4),
            stat("Events from retired agents", "Events in the range from agents the registry "
                 "lists as retired: something still runs them. Red from 1.",
                 zero_while(f"sum({RETIRED_EVENTS})", REGISTRY_UP), COUNT, RED_FROM_ONE,
                 width=4),
        )),
        Row("Inventory", (
            table("By risk tier and status", "How many catalogued agents per risk tier and "
                  "lifecycle status.", ("risk_tier", "status"),
                  column("Agents", f"count by (risk_tier, status) ({INFO})"),
                  key="inventory", width=8, height=8),
            table("Access reviews", "Per active agent: days since its last access review and "
                  "the days its risk tier allows; run `agentwatch agents review --record`.",
                  ("agent_id",),
                  column("Days since review", f"max by (agent_id) ({REVIEW_AGE})", DAYS,
                         decimals=1),
                  column("Allowed", f"max by (agent_id) ({REVIEW_INTERVAL})", DAYS, decimals=0),
                  key="reviews", width=8, height=8),
            timeseries("Governance alerts firing", "Governance alerts firing, by rule.",
                       COUNT,
                       Query(zero_while(
                           f'sum by (alertname) ({ALERTS}{{state="firing", '
                           f'alertname=~"{GOVERNANCE_RULES}"}})', REGISTRY_UP,
                       ), "{{alertname}}"), stack=True, width=8),
        )),
        Row("Traffic outside the registry", (
            table("Prod versions without a registered release", "Agent versions that sent "
                  "prod events in the range and are not registered (agentwatch releases "
                  "register); agents that registered a release raise "
                  "UnregisteredReleaseInProd for these.", ("agent_id", "agent_version"),
                  column("Prod events", UNREGISTERED), key="unregistered", width=12),
            table("LLM calls to unapproved models", "Models an agent called in the range "
                  "that its catalog entry does not approve (UnapprovedModel).",
                  ("agent_id", "model"), column("Calls", UNAPPROVED_CALLS),
                  key="unapproved_models", width=12),
        )),
    ),
)  # fmt: skip
