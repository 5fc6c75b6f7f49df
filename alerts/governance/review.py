"""Access reviews: what each agent may use against what it used, for least privilege.

For a window of event time, per agent: approved models and tools it never used
(candidates to revoke), models and tools it used without approval, its calls of write
and destructive tools and how many carried a human approval, and the escalation paths
it took. A tool call counts as approved by a human when its ``attributes`` carry
``approved_by`` (the person who approved that call), the convention SDKs follow.

The numbers come from one DuckDB query per question over the ``events`` view; the
catalog side (what is approved, each tool's tier) from the registry. Recording a
review (``--record``) appends one ``access_reviews`` row per agent, which the
``AccessReviewOverdue`` rule reads.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import polars as pl

from agentwatch.alerts.governance.catalog import TOOL_TIERS, AgentEntry
from agentwatch.alerts.governance.registry import Registry
from agentwatch.frames import query
from agentwatch.processors.store.attach import connect as connect_lake

TABLE: Final = "access_reviews"
APPROVED_CALL: Final = "json_extract_string(attributes, '$.approved_by') IS NOT NULL"


@dataclass(frozen=True)
class TierUse:
    calls: int = 0
    human_approved: int = 0


@dataclass(frozen=True)
class Escalation:
    target: str
    reason: str
    count: int


@dataclass(frozen=True)
class AgentReview:
    agent_id: str
    risk_tier: str
    owner: str
    status: str
    models_used: dict[str, int]
    tools_used: dict[str, int]
    unused_models: list[str]
    unused_tools: list[str]
    unapproved_models: list[str]
    unapproved_tools: list[str]
    tiers: dict[str, TierUse]
    escalations: list[Escalation] = field(default_factory=list)
    last_review: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Review:
    start: dt.datetime
    end: dt.datetime
    agents: list[AgentReview]

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "agents": [a.to_json() for a in self.agents],
        }


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pl.DataFrame:
    return query(con, sql, params)


def usage(db: Path, start: dt.datetime, end: dt.datetime) -> dict[str, pl.DataFrame]:
    """The window's model calls, tool calls (with human approvals) and escalations."""
    params = {"start": start, "end": end}
    window = "ts >= $start AND ts < $end AND agent_id IS NOT NULL"
    con = connect_lake(db)
    try:
        return {
            "models": _query(
                con,
                f"SELECT agent_id, model AS name, count(*) AS calls FROM events WHERE {window} "
                "AND kind = 'llm_call' AND model IS NOT NULL GROUP BY ALL",
                params,
            ),
            "tools": _query(
                con,
                "SELECT agent_id, tool_name AS name, count(*) AS calls, "
                f"count(*) FILTER (WHERE {APPROVED_CALL}) AS human_approved FROM events "
                f"WHERE {window} AND kind = 'tool_call' AND tool_name IS NOT NULL GROUP BY ALL",
                params,
            ),
            "escalations": _query(
                con,
                "SELECT agent_id, coalesce(target, '(none)') AS target, "
                "coalesce(reason, '(none)') AS reason, count(*) AS count FROM events "
                f"WHERE {window} AND kind = 'escalation' GROUP BY ALL ORDER BY count DESC",
                params,
            ),
            "reviews": _query(
                con, "SELECT agent_id, max(ts) AS last FROM access_reviews GROUP BY ALL", {}
            ),
        }
    finally:
        con.close()


def review_agent(entry: AgentEntry, found: dict[str, pl.DataFrame]) -> AgentReview:
    """One agent's review from the window's usage frames (pure: frames in, findings out)."""

    def mine(name: str) -> pl.DataFrame:
        return found[name].filter(pl.col("agent_id") == entry.agent_id)

    models = {r["name"]: int(r["calls"]) for r in mine("models").iter_rows(named=True)}
    tool_rows = list(mine("tools").iter_rows(named=True))
    tools = {r["name"]: int(r["calls"]) for r in tool_rows}
    tiers: dict[str, TierUse] = {t: TierUse() for t in TOOL_TIERS}
    for r in tool_rows:
        tier = entry.tool_tier(r["name"])
        old = tiers[tier]
        tiers[tier] = TierUse(
            old.calls + int(r["calls"]), old.human_approved + int(r["human_approved"])
        )
    escalations = [
        Escalation(r["target"], r["reason"], int(r["count"]))
        for r in mine("escalations").iter_rows(named=True)
    ]
    last = mine("reviews")
    return AgentReview(
        agent_id=entry.agent_id,
        risk_tier=entry.risk_tier,
        owner=entry.owner,
        status=entry.status,
        models_used=models,
        tools_used=tools,
        unused_models=sorted(entry.approved_models - set(models))
        if entry.approved_models is not None
        else [],
        unused_tools=sorted(entry.approved_tools - set(tools))
        if entry.approved_tools is not None
        else [],
        unapproved_models=sorted(set(models) - entry.approved_models)
        if entry.approved_models is not None
        else [],
        unapproved_tools=sorted(set(tools) - entry.approved_tools)
        if entry.approved_tools is not None
        else [],
        tiers=tiers,
        escalations=escalations,
        last_review=None if last.height == 0 else last["last"][0].isoformat(),
    )


def run_review(
    registry: Registry, db: Path, start: dt.datetime, end: dt.datetime, agents: Sequence[str] = ()
) -> Review:
    """Review ``agents`` (default: every agent not retired) over ``[start, end)``."""
    entries = (
        [registry.entry(a) for a in agents]
        if agents
        else [e for e in registry.catalog if e.status != "retired"]
    )
    found = usage(db, start, end)
    return Review(
        start, end, [review_agent(e, found) for e in sorted(entries, key=lambda e: e.agent_id)]
    )


def record_review(registry: Registry, review: Review, reviewer: str, now: dt.datetime) -> None:
    rows = [
        {
            "ts": now,
            "agent_id": a.agent_id,
            "reviewer": reviewer,
            "window_start": review.start,
            "window_end": review.end,
            "findings": json.dumps(a.to_json(), sort_keys=True),
        }
        for a in review.agents
    ]
    if rows:
        registry.store.append_log(TABLE, pl.DataFrame(rows))
