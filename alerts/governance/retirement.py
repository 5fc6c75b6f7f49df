"""Retiring an agent: the runbook that switches it off for good and keeps the evidence.

Steps, in order, each recorded in the ``actions`` table (runbook ``retire-agent``,
``person:<name>``) so the audit trail shows who retired what, when and why:

1. ``open_breaker``: the agent's breaker is opened and held (the retired hold of the
   breaker control): its SDK halts before the next call and no person can close it.
2. ``revoke_credential``, one per credential or service account the catalog lists:
   a POST to the revoke webhook, the endpoint a deployment points at its IAM or secret
   manager (``{"agent_id", "credential", "reason", "actor"}``, bearer token optional).
3. ``notify``: a retirement notice through the notifier's routes, to the owner and,
   labelled ``audience="users"``, to the agent's users.
4. ``archive``: the evidence archive (alerts/governance/archive.py).
5. ``mark_retired``: the registry entry becomes ``retired`` with the date.

A failed step stops the run with its error; the steps before it stay recorded, so a
rerun after the fix repeats only harmless work (an open breaker stays open).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from agentwatch.alerts.governance.archive import Written, write_archive
from agentwatch.alerts.governance.catalog import CatalogError
from agentwatch.alerts.governance.registry import Registry
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import NotifyConfig
from agentwatch.alerts.notify.notifier import Notifier
from agentwatch.alerts.notify.routing import Route
from agentwatch.alerts.response.audit import action_row, record_actions
from agentwatch.clock import Clock, utc_now

RUNBOOK: Final = "retire-agent"
NOTICE_RULE: Final = "AgentRetired"


class RetirementError(CatalogError):
    """A retirement that cannot start or a step that failed; the message says which."""


@dataclass(frozen=True)
class StepResult:
    action: str
    result: str  # 'ok' | 'skipped'
    detail: dict[str, Any]


@dataclass(frozen=True)
class Retirement:
    agent_id: str
    steps: tuple[StepResult, ...]
    archive: Written


OpenBreaker = Callable[[str, str, str], dict[str, Any]]
"""Opens and holds the agent's breaker: (agent_id, reason, actor) -> detail to record."""


def post_revoke(
    url: str, token: str | None, timeout_s: float = 10.0
) -> Callable[[dict[str, Any]], int]:
    """A revoke step's transport: POST JSON, raise unless the endpoint answers 2xx."""

    def send(payload: dict[str, Any]) -> int:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            url, json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            raise RetirementError(
                f"revoke webhook {url} answered {exc.code} {exc.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise RetirementError(f"revoke webhook {url} unreachable: {exc}") from None

    return send


def immediate(config: NotifyConfig) -> NotifyConfig:
    """The notify config with no group wait: a retirement notice is sent as it happens."""

    def walk(route: Route) -> Route:
        return dataclasses.replace(
            route,
            group_wait=dt.timedelta(0),
            routes=[walk(r) for r in route.routes],
        )

    return dataclasses.replace(config, route=walk(config.route))


def notices(registry: Registry, agent_id: str, reason: str, at: dt.datetime) -> list[Alert]:
    """The owner's and the users' retirement notices (info, firing)."""
    entry = registry.entry(agent_id)
    out = []
    for audience in ("owner", "users"):
        labels = {
            "alertname": NOTICE_RULE,
            "severity": "info",
            "agent_id": agent_id,
            "audience": audience,
            "owner_notice": "true",
        }
        summary = f"{agent_id} is retired: {reason}"
        out.append(
            Alert(
                rule=NOTICE_RULE,
                labels=labels,
                annotations={
                    "summary": summary,
                    "description": f"Owner {entry.owner}; its breaker is held open, its "
                    "credentials revoked and its records archived.",
                },
                state="firing",
                starts_at=at,
            )
        )
    return out


def retire(
    registry: Registry,
    agent_id: str,
    *,
    reason: str,
    actor: str,
    db: Path,
    archive_root: Path,
    open_breaker: OpenBreaker,
    revoke: Callable[[dict[str, Any]], int] | None,
    notifier: Notifier | None,
    clock: Clock = utc_now,
) -> Retirement:
    """Run the retirement runbook for ``agent_id``; raises RetirementError on a failed step."""
    entry = registry.entry(agent_id)
    if entry.status == "retired" and registry.catalog.get(agent_id) is not None:
        already = [r for r in registry.revisions(agent_id) if r.change == "retired"]
        if already:
            raise RetirementError(
                f"agent {agent_id} was already retired on {already[-1].ts:%Y-%m-%d}"
            )
    if not reason.strip():
        raise RetirementError("a retirement needs a reason (--reason)")
    if entry.credentials and revoke is None:
        raise RetirementError(
            f"agent {agent_id} has credentials to revoke ({', '.join(entry.credentials)}) "
            "but no revoke webhook is configured (--revoke-webhook, [lifecycle] revoke_webhook)"
        )
    run = uuid.uuid4().hex[:12]
    store = registry.store
    steps: list[StepResult] = []
    who = f"person:{actor}"

    def record(
        index: int, action: str, result: str, detail: dict[str, Any], tool: str | None = None
    ) -> None:
        record_actions(
            store,
            [
                action_row(
                    ts=clock(),
                    action_id=f"{RUNBOOK}-{run}-{index}",
                    action=action,
                    agent_id=agent_id,
                    tool_name=tool,
                    actor=who,
                    reason=reason,
                    result=result,
                    detail=detail,
                    runbook=RUNBOOK,
                    step=index,
                )
            ],
        )
        if result != "failed":
            steps.append(StepResult(action, result, detail))

    def step(
        index: int, action: str, work: Callable[[], dict[str, Any]], tool: str | None = None
    ) -> None:
        try:
            detail = work()
        except Exception as exc:
            record(index, action, "failed", {"error": str(exc)}, tool)
            raise RetirementError(f"retirement of {agent_id} stopped at {action}: {exc}") from None
        record(index, action, "ok", detail, tool)

    index = 0
    step(index, "open_breaker", lambda: open_breaker(agent_id, reason, who))
    for credential in entry.credentials:
        index += 1
        payload = {"agent_id": agent_id, "credential": credential, "reason": reason, "actor": actor}
        assert revoke is not None
        step(index, "revoke_credential", lambda p=payload: {"status": revoke(p), **p}, credential)  # type: ignore[misc]
    index += 1
    if notifier is None:
        record(index, "notify", "skipped", {"why": "no notifier configured"})
    else:

        def notify() -> dict[str, Any]:
            now = clock()
            sent = notifier.process(notices(registry, agent_id, reason, now), now)
            failed = [r for r in sent if r.status == "failed"]
            if failed:
                raise RetirementError(f"notice to {failed[0].receiver} failed: {failed[0].error}")
            return {"receivers": sorted({r.receiver for r in sent})}

        step(index, "notify", notify)
    index += 1
    folder = archive_root / agent_id / clock().strftime("%Y%m%dT%H%M%SZ")
    holder: list[Written] = []

    def archive() -> dict[str, Any]:
        written = write_archive(db, agent_id, folder, reason=reason, actor=actor, now=clock())
        holder.append(written)
        return {
            "path": str(written.path),
            "manifest_sha256": written.manifest_sha256,
            "files": {f.table: f.rows for f in written.manifest.files},
        }

    step(index, "archive", archive)
    index += 1

    def mark() -> dict[str, Any]:
        retired = msgspec.structs.replace(entry, status="retired", retired_on=clock().date())
        registry.record(agent_id, "retired", actor=who, reason=reason, entry=retired, clock=clock)
        return {"retired_on": clock().date().isoformat()}

    step(index, "mark_retired", mark)
    return Retirement(agent_id, tuple(steps), holder[0])
