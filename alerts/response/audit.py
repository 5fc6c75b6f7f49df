"""The audit trail: rows of the ``actions`` table.

Every action on an agent lands there, whoever takes it: runbook steps, the ``breaker``
command, breaker supervision, halt confirmations and retirements. A row says what, why,
which alert, when, by whom (``rule:<name>``, ``person:<name>`` or ``system:<name>``) and
the result.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.tables import ACTIONS_SCHEMA


def action_row(
    *,
    ts: dt.datetime,
    action_id: str,
    action: str,
    actor: str,
    result: str,
    alert_fingerprint: str | None = None,
    rule: str | None = None,
    runbook: str | None = None,
    step: int | None = None,
    agent_id: str | None = None,
    tool_name: str | None = None,
    reason: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the ``actions`` table."""
    return {
        "ts": ts,
        "action_id": action_id,
        "alert_fingerprint": alert_fingerprint,
        "rule": rule,
        "runbook": runbook,
        "step": step,
        "action": action,
        "agent_id": agent_id,
        "tool_name": tool_name,
        "actor": actor,
        "reason": reason,
        "result": result,
        "detail": json.dumps(dict(detail or {}), sort_keys=True, default=str),
    }


def record_actions(store: LakeStore, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to the ``actions`` table as one segment."""
    rows = list(rows)
    if rows:
        store.append_log("actions", pl.DataFrame(rows, schema=dict(ACTIONS_SCHEMA)))


__all__ = ["action_row", "record_actions"]
