"""Releases: what a version of an agent is made of, who approved it, how far it rolled out.

A release is registered once per agent and ``agent_version`` (the version its events
carry) and records the prompt versions, models and tools (with their tiers) it runs
with, and an evaluation result file with its SHA-256 digest and score. Approvals and
rollout stages are appended as they happen. Everything lands in the ``releases`` log
table, which the governance metrics read (``unregistered_release_events``,
``unapproved_release_events``, ``off_release_calls``) to hold the traffic to what was
registered: an agent with registered releases must run one of them in prod, a release
of a high-risk agent needs an approval first, and a release may only use the models and
tools it was registered with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import polars as pl

from agentwatch.alerts.governance.catalog import CatalogError
from agentwatch.alerts.governance.registry import Registry
from agentwatch.clock import Clock, utc_now
from agentwatch.processors.store.tables import RELEASES_SCHEMA

TABLE: Final = "releases"
Stage = Literal["canary", "full"]
STAGES: Final[tuple[str, ...]] = get_args(Stage)


class ReleaseError(CatalogError):
    """A release that cannot be registered, approved or staged; the message says why."""


@dataclass(frozen=True)
class Approval:
    by: str
    ts: dt.datetime
    note: str


@dataclass(frozen=True)
class Release:
    """A registered release and what happened to it since."""

    agent_id: str
    version: str
    registered_at: dt.datetime
    registered_by: str
    prompt_versions: tuple[str, ...]
    models: tuple[str, ...]
    tool_tiers: dict[str, str]
    eval_file: str | None
    eval_sha256: str | None
    eval_score: float | None
    note: str
    approvals: tuple[Approval, ...] = ()
    stage: str | None = None
    canary_share: float | None = None
    needs_approval: bool = False

    @property
    def approved(self) -> bool:
        return bool(self.approvals)

    @property
    def may_run_in_prod(self) -> bool:
        return self.approved or not self.needs_approval

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "version": self.version,
            "registered_at": self.registered_at.isoformat(),
            "registered_by": self.registered_by,
            "prompt_versions": list(self.prompt_versions),
            "models": list(self.models),
            "tools": self.tool_tiers,
            "evaluation": {
                "file": self.eval_file,
                "sha256": self.eval_sha256,
                "score": self.eval_score,
            },
            "note": self.note,
            "approvals": [
                {"by": a.by, "at": a.ts.isoformat(), "note": a.note} for a in self.approvals
            ],
            "needs_approval": self.needs_approval,
            "may_run_in_prod": self.may_run_in_prod,
            "stage": self.stage,
            "canary_share": self.canary_share,
        }


@dataclass(frozen=True)
class Evaluation:
    file: str
    sha256: str
    score: float


def read_evaluation(path: Path, score: float | None) -> Evaluation:
    """An evaluation result file, its digest, and its score (``score`` or the file's own)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read evaluation file {path}: {exc.strerror}") from None
    if score is None:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        found = doc.get("score") if isinstance(doc, dict) else None
        if isinstance(found, bool) or not isinstance(found, int | float):
            raise ReleaseError(
                f"{path}: no numeric top-level `score` in the evaluation file; pass --score"
            )
        score = float(found)
    if not math.isfinite(score):
        raise ReleaseError(f"{path}: the evaluation score must be a finite number, got {score}")
    return Evaluation(str(path), hashlib.sha256(data).hexdigest(), score)


def _row(
    at: dt.datetime, agent_id: str, version: str, event: str, actor: str, **more: Any
) -> dict[str, Any]:
    return {
        "ts": at,
        "agent_id": agent_id,
        "version": version,
        "event": event,
        "actor": actor,
        **more,
    }


class Releases:
    """The releases of every agent, read from and appended to the ``releases`` table."""

    def __init__(self, registry: Registry, clock: Clock = utc_now) -> None:
        self.registry = registry
        self.clock = clock

    def _rows(self) -> pl.DataFrame:
        return self.registry.store.read_log(TABLE).sort("ts")

    def all(self, agent_id: str | None = None) -> list[Release]:
        out: dict[tuple[str, str], Release] = {}
        for r in self._rows().iter_rows(named=True):
            key = (r["agent_id"], r["version"])
            if agent_id is not None and r["agent_id"] != agent_id:
                continue
            if r["event"] == "registered":
                entry = self.registry.catalog.get(r["agent_id"])
                out[key] = Release(
                    agent_id=r["agent_id"],
                    version=r["version"],
                    registered_at=r["ts"],
                    registered_by=r["actor"],
                    prompt_versions=tuple(r["prompt_versions"] or ()),
                    models=tuple(r["models"] or ()),
                    tool_tiers=json.loads(r["tool_tiers"] or "{}"),
                    eval_file=r["eval_file"],
                    eval_sha256=r["eval_sha256"],
                    eval_score=r["eval_score"],
                    note=r["note"] or "",
                    needs_approval=entry is not None and entry.needs_release_approval(),
                )
            elif key in out and r["event"] == "approved":
                old = out[key]
                approval = Approval(r["actor"], r["ts"], r["note"] or "")
                out[key] = _replace(old, approvals=(*old.approvals, approval))
            elif key in out and r["event"] == "staged":
                out[key] = _replace(out[key], stage=r["stage"], canary_share=r["canary_share"])
        return sorted(out.values(), key=lambda r: (r.agent_id, r.registered_at))

    def get(self, agent_id: str, version: str) -> Release:
        self.registry.entry(agent_id)  # an unknown agent is named as such
        found = [r for r in self.all(agent_id) if r.version == version]
        if not found:
            known = ", ".join(r.version for r in self.all(agent_id)) or "none"
            raise ReleaseError(
                f"no release {version!r} of agent {agent_id} is registered (registered: {known})"
            )
        return found[0]

    def register(
        self,
        agent_id: str,
        version: str,
        *,
        actor: str,
        prompt_versions: Sequence[str],
        models: Sequence[str],
        tools: Sequence[str],
        evaluation: Evaluation,
        note: str = "",
    ) -> Release:
        """Record a release; its models and tools must be approved for the agent."""
        entry = self.registry.entry(agent_id)
        if entry.status == "retired":
            raise ReleaseError(f"agent {agent_id} is retired: it takes no new releases")
        if any(r.version == version for r in self.all(agent_id)):
            raise ReleaseError(f"release {version} of agent {agent_id} is already registered")
        if not version.strip():
            raise ReleaseError("a release needs a non-empty version")
        if not models:
            raise ReleaseError("a release names the models it runs with (--model, repeatable)")
        for what, names, approved in (
            ("model", models, entry.approved_models),
            ("tool", tools, entry.approved_tools),
        ):
            stray = sorted(set(names) - approved) if approved is not None else []
            if stray:
                raise ReleaseError(
                    f"{what}(s) {', '.join(stray)} not approved for agent {agent_id} in "
                    f"{self.registry.catalog.source}; approve them in the catalog first"
                )
        tiers = {t: entry.tool_tier(t) for t in sorted(set(tools))}
        row = _row(
            self.clock(),
            agent_id,
            version,
            "registered",
            actor,
            note=note,
            prompt_versions=sorted(set(prompt_versions)),
            models=sorted(set(models)),
            tools=sorted(tiers),
            tool_tiers=json.dumps(tiers, sort_keys=True),
            eval_file=evaluation.file,
            eval_sha256=evaluation.sha256,
            eval_score=evaluation.score,
        )
        self._append(row)
        return self.get(agent_id, version)

    def approve(self, agent_id: str, version: str, *, actor: str, note: str = "") -> Release:
        release = self.get(agent_id, version)
        if any(a.by == actor for a in release.approvals):
            raise ReleaseError(f"{actor} already approved release {version} of {agent_id}")
        self._append(_row(self.clock(), agent_id, version, "approved", actor, note=note))
        return self.get(agent_id, version)

    def stage(
        self, agent_id: str, version: str, stage: str, *, actor: str, share: float | None = None
    ) -> Release:
        """Record how far a release rolled out: a canary share (0-1], or full."""
        release = self.get(agent_id, version)
        if stage not in STAGES:
            raise ReleaseError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if stage == "canary" and (share is None or not 0.0 < share < 1.0):
            raise ReleaseError("a canary stage needs --share between 0 and 1 (exclusive)")
        if not release.may_run_in_prod:
            raise ReleaseError(
                f"release {version} of {agent_id} ({self.registry.entry(agent_id).risk_tier} "
                "risk) needs an approval before it may roll out: agentwatch releases approve"
            )
        self._append(
            _row(
                self.clock(),
                agent_id,
                version,
                "staged",
                actor,
                stage=stage,
                canary_share=1.0 if stage == "full" else share,
            )
        )
        return self.get(agent_id, version)

    def _append(self, row: dict[str, Any]) -> None:
        frame = pl.DataFrame([{k: row.get(k) for k in RELEASES_SCHEMA}], schema=RELEASES_SCHEMA)
        self.registry.store.append_log(TABLE, frame)


def _replace(release: Release, **changes: Any) -> Release:
    return dataclasses.replace(release, **changes)
