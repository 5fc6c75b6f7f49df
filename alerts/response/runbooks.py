"""Running runbooks: the steps a firing alert sets off, each outcome recorded for audit.

What a runbook says is read from its file by ``runbook_files.py``. Its steps run in
order: ``open_breaker``, ``disable_tool``, ``rollback``, ``throttle``, ``notify_owner``
and ``wait_for_approval``, which pauses the run, recorded as ``waiting``, until a person
runs ``agentwatch alerts approve ACTION_ID --by NAME``. Every attempt lands in the
``actions`` table (``audit.py``): what, why, which alert, when, by whom (``rule:<name>``
or ``person:<name>``) and the result.

The actions table is also the run's memory. Each step of a run has a fixed action id
(derived from the alert's fingerprint, its start and the runbook), so calling
:func:`run_runbook` again for the same firing alert (every evaluation cycle, or after a
restart) skips what is done and goes on where the run stopped; a breaker already open
is left alone rather than reopened. Two processes running the same run at the same
moment may both execute a step; the evaluator is the one caller meant to run them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import polars as pl
from prometheus_client import Counter

from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.model import Alert, AlertState
from agentwatch.alerts.response.audit import action_row, record_actions
from agentwatch.alerts.response.runbook_files import Runbook, RunbookError, Step
from agentwatch.clock import Clock, utc_now
from agentwatch.processors.metrics import series
from agentwatch.processors.store.lake import LakeStore

if TYPE_CHECKING:
    from agentwatch.alerts.response.control import BreakerControl, Published

log = logging.getLogger(__name__)

APPROVE_ACTION: Final = "approve"
DONE: Final = frozenset({"ok", "skipped"})

StepResult = Literal["ok", "failed", "waiting", "skipped"]
NotifyOwner = Callable[[Alert, str], None]
"""Sends ``message`` about ``alert`` to the agent's owner; raises if it cannot."""
PinnedVersions = Callable[[str], Mapping[str, str] | None]
"""The catalog's pinned versions of an agent, e.g. {"prompt_version": "v3", "model": ...}."""


def catalog_pins(catalog: Catalog) -> PinnedVersions:
    """``pinned_versions`` for a context: the versions the catalog pins for an agent."""

    def pins(agent_id: str) -> Mapping[str, str] | None:
        entry = catalog.get(agent_id)
        if entry is None:
            return None
        pinned = entry.pinned
        found = {
            "agent_version": pinned.agent_version,
            "prompt_version": pinned.prompt_version,
            "model": pinned.model,
        }
        return {k: v for k, v in found.items() if v is not None}

    return pins


# --------------------------------------------------------------------------- the alert a run is for


def alert_to_json(alert: Alert) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": alert.state,
        "starts_at": alert.starts_at.isoformat(),
        "ends_at": alert.ends_at.isoformat() if alert.ends_at else None,
        "value": alert.value,
        "samples": alert.samples,
    }


def alert_from_json(doc: Mapping[str, Any]) -> Alert:
    state: AlertState = doc["state"]
    return Alert(
        rule=doc["rule"],
        labels=dict(doc["labels"]),
        annotations=dict(doc["annotations"]),
        state=state,
        starts_at=dt.datetime.fromisoformat(doc["starts_at"]),
        ends_at=dt.datetime.fromisoformat(doc["ends_at"]) if doc.get("ends_at") else None,
        value=doc.get("value"),
        samples=doc.get("samples"),
    )


# --------------------------------------------------------------------------- running


@dataclass
class RunbookContext:
    """What the steps act through; the integrator builds one for the evaluator's sink.

    ``control`` (or ``connect_control``, called once on first need) publishes breaker,
    rollback and throttle messages; ``notify_owner`` sends to the agent's owner (a step
    without it is ``skipped``); ``pinned_versions`` reads the catalog for rollbacks.
    """

    store: LakeStore
    control: BreakerControl | None = None
    connect_control: Callable[[], BreakerControl] | None = None
    notify_owner: NotifyOwner | None = None
    pinned_versions: PinnedVersions | None = None
    clock: Clock = utc_now
    default_cooldown_s: float = 300.0
    max_attempts: int = 3  # a failing step is retried on later calls up to this many times
    # Registered on the /metrics registry of `alerts run` (see alerts/evaluation/metrics.py).
    step_failures: Counter = field(default_factory=lambda: step_failures_counter())

    def breakers(self) -> BreakerControl:
        if self.control is None:
            if self.connect_control is None:
                raise RuntimeError("no control topic configured for breaker steps")
            self.control = self.connect_control()
        return self.control


def run_id(runbook: Runbook, alert: Alert) -> str:
    """The id of one run: the same alert instance and runbook always give the same id."""
    doc = f"{alert.fingerprint}|{runbook.id}|{alert.starts_at.isoformat()}"
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def step_action_id(rid: str, index: int) -> str:
    return f"{rid}-{index}"


def _history(store: LakeStore, rid: str) -> dict[str, list[dict[str, Any]]]:
    rows = store.read_log("actions").filter(pl.col("action_id").str.starts_with(f"{rid}-"))
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows.sort("ts").iter_rows(named=True):
        found.setdefault(row["action_id"], []).append(row)
    return found


def run_runbook(runbook: Runbook, alert: Alert, context: RunbookContext) -> list[dict[str, Any]]:
    """Run (or go on with) ``runbook`` for a firing alert; returns the rows it appended.

    Idempotent per alert instance: steps already done are not repeated, a run waiting
    for approval stays waiting, and a failed step is tried again on a later call, up to
    ``context.max_attempts`` times. A resolved alert starts nothing.
    """
    if alert.state == "resolved":
        return []
    rid = run_id(runbook, alert)
    history = _history(context.store, rid)
    rows: list[dict[str, Any]] = []
    try:
        for index, step in enumerate(runbook.steps, 1):
            aid = step_action_id(rid, index)
            past = history.get(aid, [])
            if any(r["result"] in DONE for r in past):
                continue
            if step.action == "wait_for_approval":
                if past:
                    return rows  # still waiting
                rows.append(_waiting_row(runbook, alert, step, index, aid, context))
                return rows
            if sum(r["result"] == "failed" for r in past) >= context.max_attempts:
                return rows  # gave up on this step; the failures are on record
            row = _execute(runbook, alert, step, index, aid, context)
            rows.append(row)
            if row["result"] == "failed" and step.on_failure == "stop":
                return rows
        return rows
    finally:
        record_actions(context.store, rows)
        for row in rows:
            log.info(
                "runbook step",
                extra={
                    "runbook": runbook.id,
                    "step": row["step"],
                    "action": row["action"],
                    "result": row["result"],
                    "agent_id": row["agent_id"],
                    "action_id": row["action_id"],
                },
            )


def _base(
    runbook: Runbook, alert: Alert, step: Step, index: int, aid: str, context: RunbookContext
) -> dict[str, Any]:
    summary = alert.annotations.get("summary") or alert.rule
    return {
        "ts": context.clock(),
        "action_id": aid,
        "alert_fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "runbook": runbook.id,
        "step": index,
        "action": step.action,
        "agent_id": alert.agent_id,
        "actor": f"rule:{alert.rule}",
        "reason": f"{summary}" + (f" ({step.why})" if step.why else ""),
    }


def _waiting_row(
    runbook: Runbook, alert: Alert, step: Step, index: int, aid: str, context: RunbookContext
) -> dict[str, Any]:
    prompt = str(step.params.get("prompt") or step.why or "approve the next steps")
    return action_row(
        **_base(runbook, alert, step, index, aid, context),
        result="waiting",
        detail={
            "prompt": prompt,
            "approve_with": f"agentwatch alerts approve {aid} --by NAME",
            "alert": alert_to_json(alert),
        },
    )


def _execute(
    runbook: Runbook, alert: Alert, step: Step, index: int, aid: str, context: RunbookContext
) -> dict[str, Any]:
    base = _base(runbook, alert, step, index, aid, context)
    tool: str | None = None
    try:
        tool = _tool(step, alert)
        result, detail = _ACTIONS[step.action](step, alert, tool, context, base["reason"])
    except Exception as exc:
        # A failed open_breaker is an agent left running: say so loudly, with the cause.
        log.error(
            "runbook step failed",
            exc_info=exc,
            extra={
                "runbook": runbook.id,
                "step": index,
                "action": step.action,
                "agent_id": alert.agent_id,
                "action_id": aid,
            },
        )
        context.step_failures.labels(runbook=runbook.id, action=step.action).inc()
        result, detail = "failed", {"error": f"{type(exc).__name__}: {exc}"}
    return action_row(**base, tool_name=tool, result=result, detail=detail)


def step_failures_counter() -> Counter:
    """``agentwatch_runbook_step_failures_total``, on no registry until one takes it."""
    return series.RUNBOOK_STEP_FAILURES.counter(None)


def _tool(step: Step, alert: Alert) -> str | None:
    if step.action not in ("open_breaker", "disable_tool"):
        return None
    explicit = step.params.get("tool")
    if explicit:
        return str(explicit)
    label = str(step.params.get("tool_label", "tool_name"))
    found = alert.labels.get(label)
    if found is None and step.action == "disable_tool":
        raise RunbookError(f"disable_tool needs a tool: the alert has no {label!r} label")
    return found


Outcome = tuple[StepResult, dict[str, Any]]


def _agent(alert: Alert) -> str:
    if alert.agent_id is None:
        raise RunbookError("the alert has no agent_id label, so there is no agent to act on")
    return alert.agent_id


def _sent(published: Published, **details: Any) -> Outcome:
    """A step done by a control record: its details, and the record's id and offset."""
    return "ok", {
        **details,
        "control_id": published.message.id,
        "control_offset": published.offset,
    }


def _open_breaker(
    step: Step, alert: Alert, tool: str | None, context: RunbookContext, reason: str
) -> Outcome:
    cooldown = float(step.params.get("cooldown", context.default_cooldown_s))
    transition = context.breakers().open(
        _agent(alert),
        tool,
        reason=reason,
        actor=f"rule:{alert.rule}",
        cooldown_s=cooldown,
        alert=alert.fingerprint,
    )
    published = transition.published
    if published is None:
        return "skipped", {"breaker": str(transition.breaker.key), "already": "open"}
    return _sent(published, breaker=published.message.key, state="open", cooldown_s=cooldown)


def _rollback(
    step: Step, alert: Alert, tool: str | None, context: RunbookContext, reason: str
) -> Outcome:
    agent = _agent(alert)
    if context.pinned_versions is None:
        raise RunbookError("no catalog connected: pinned versions unknown")
    pinned = dict(context.pinned_versions(agent) or {})
    only = step.params.get("only")
    if only:
        wanted = {only} if isinstance(only, str) else set(only)
        pinned = {k: v for k, v in pinned.items() if k in wanted}
    if not pinned:
        raise RunbookError(f"the catalog pins no versions for agent {agent!r}")
    published = context.breakers().rollback(
        agent, pinned, reason=reason, actor=f"rule:{alert.rule}", alert=alert.fingerprint
    )
    return _sent(published, versions=pinned)


def _throttle(
    step: Step, alert: Alert, tool: str | None, context: RunbookContext, reason: str
) -> Outcome:
    rate = step.params.get("rate")
    published = context.breakers().throttle(
        _agent(alert),
        None if rate is None else float(rate),
        reason=reason,
        actor=f"rule:{alert.rule}",
        alert=alert.fingerprint,
    )
    return _sent(published, rate_per_s=rate)


def _notify_owner(
    step: Step, alert: Alert, tool: str | None, context: RunbookContext, reason: str
) -> Outcome:
    message = str(step.params.get("message") or alert.annotations.get("summary") or alert.rule)
    if context.notify_owner is None:
        return "skipped", {"why": "no notifier connected"}
    context.notify_owner(alert, message)
    return "ok", {"message": message}


_ACTIONS: Final[Mapping[str, Callable[[Step, Alert, str | None, RunbookContext, str], Outcome]]] = {
    "open_breaker": _open_breaker,
    "disable_tool": _open_breaker,  # a tool is disabled by opening the agent+tool breaker
    "rollback": _rollback,
    "throttle": _throttle,
    "notify_owner": _notify_owner,
}


# --------------------------------------------------------------------------- approval


def approve(store: LakeStore, action_id: str, by: str, clock: Clock = utc_now) -> dict[str, Any]:
    """Record a person's approval of a waiting step; returns the waiting row it approves.

    Raises RunbookError when no step waits under ``action_id`` or it is approved already.
    """
    rows = store.read_log("actions").filter(pl.col("action_id") == action_id).sort("ts")
    waiting = [r for r in rows.iter_rows(named=True) if r["result"] == "waiting"]
    if not waiting:
        raise RunbookError(f"no runbook step waits for approval under {action_id!r}")
    if any(r["action"] == APPROVE_ACTION for r in rows.iter_rows(named=True)):
        raise RunbookError(f"{action_id} is approved already")
    step = waiting[0]
    record_actions(
        store,
        [
            action_row(
                ts=clock(),
                action_id=action_id,
                alert_fingerprint=step["alert_fingerprint"],
                rule=step["rule"],
                runbook=step["runbook"],
                step=step["step"],
                action=APPROVE_ACTION,
                agent_id=step["agent_id"],
                tool_name=step["tool_name"],
                actor=f"person:{by}",
                reason=f"approved: {step['reason']}",
                result="ok",
            )
        ],
    )
    return step


def resume(
    waiting: Mapping[str, Any], context: RunbookContext, runbooks: Mapping[str, Runbook]
) -> list[dict[str, Any]]:
    """Go on with the run a waiting row belongs to (after :func:`approve`)."""
    book = runbooks.get(str(waiting["runbook"]))
    if book is None:
        raise RunbookError(f"runbook {waiting['runbook']!r} no longer exists")
    alert = alert_from_json(json.loads(waiting["detail"])["alert"])
    return run_runbook(book, alert, context)


__all__ = [
    "NotifyOwner",
    "PinnedVersions",
    "RunbookContext",
    "approve",
    "catalog_pins",
    "resume",
    "run_id",
    "run_runbook",
]
