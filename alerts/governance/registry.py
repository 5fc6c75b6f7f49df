"""The agent registry: the catalog file plus the recorded history of every entry.

The YAML catalog stays the source of truth for what an agent is (it is reviewed like
code); the registry remembers how it got there. Every load through :func:`load_registry`
diffs the file with the last entries recorded and appends one ``catalog_changes`` row
per agent added, changed or removed: who loaded it, when, why, the whole entry after
the change and the field-level diff. Lifecycle steps that are not edits of the file
(``agents retire``) append their own rows, and the registry's view of the catalog
overlays them: an agent retired by the runbook stays retired whatever the file says,
since a retirement is final (its credentials are revoked).

History is an append-only log table beside the events, so ``agentwatch sql`` and the
alert rules read it like any other table.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import polars as pl

from agentwatch.alerts.governance.catalog import (
    AgentEntry,
    Catalog,
    CatalogError,
    entry_doc,
    load_catalog,
)
from agentwatch.clock import Clock, utc_now
from agentwatch.processors.store.lake import LakeStore

TABLE: Final = "catalog_changes"
DECLARED: Final = frozenset({"added", "changed", "removed"})


class UnknownAgentError(CatalogError):
    """An agent id the registry has never seen."""


@dataclass(frozen=True)
class FieldChange:
    """One field of an entry that differs: a dotted path and both values (None: absent)."""

    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Revision:
    """One recorded change of an agent's entry (``agents history``)."""

    number: int  # 1 = the first record of the agent
    ts: dt.datetime
    change: str
    actor: str
    reason: str
    source: str
    entry: Mapping[str, Any] | None
    diff: tuple[FieldChange, ...]


def diff_entries(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> list[FieldChange]:
    """Field-level differences of two entry documents; nested mappings by dotted path."""
    out: list[FieldChange] = []

    def walk(prefix: str, a: Any, b: Any) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(f"{prefix}{key}.", a.get(key), b.get(key))
        elif a != b:
            out.append(FieldChange(prefix.rstrip("."), a, b))

    walk("", before or {}, after or {})
    return out


def _diff_json(changes: Sequence[FieldChange]) -> str:
    return json.dumps([{"field": c.field, "before": c.before, "after": c.after} for c in changes])


def _row(
    at: dt.datetime,
    agent_id: str,
    change: str,
    actor: str,
    reason: str,
    source: str,
    entry: Mapping[str, Any] | None,
    diff: Sequence[FieldChange],
) -> dict[str, Any]:
    return {
        "ts": at,
        "agent_id": agent_id,
        "change": change,
        "actor": actor,
        "reason": reason,
        "source": source,
        "entry": None if entry is None else json.dumps(entry, sort_keys=True),
        "diff": _diff_json(diff),
    }


def declared_entries(history: pl.DataFrame) -> dict[str, dict[str, Any] | None]:
    """The last entry the file declared per agent (None once removed), from the history."""
    latest: dict[str, dict[str, Any] | None] = {}
    for row in history.filter(pl.col("change").is_in(DECLARED)).sort("ts").iter_rows(named=True):
        latest[row["agent_id"]] = None if row["entry"] is None else json.loads(row["entry"])
    return latest


def retirements(history: pl.DataFrame) -> dict[str, dt.datetime]:
    """When each agent was retired through the registry (``agents retire``)."""
    rows = history.filter(pl.col("change") == "retired").sort("ts")
    return {r["agent_id"]: r["ts"] for r in rows.iter_rows(named=True)}


def catalog_diff(
    catalog: Catalog, history: pl.DataFrame
) -> list[tuple[str, str, list[FieldChange]]]:
    """``(agent_id, change, diff)`` for every entry that differs from the recorded one."""
    recorded = declared_entries(history)
    out: list[tuple[str, str, list[FieldChange]]] = []
    for entry in catalog:
        doc = entry_doc(entry)
        before = recorded.get(entry.agent_id)
        if before is None:
            out.append((entry.agent_id, "added", diff_entries(None, doc)))
        else:
            changes = diff_entries(before, doc)
            if changes:
                out.append((entry.agent_id, "changed", changes))
    for agent_id, before in recorded.items():
        if before is not None and agent_id not in catalog:
            out.append((agent_id, "removed", diff_entries(before, None)))
    return out


class Registry:
    """The catalog as governance sees it, and the store its history lives in."""

    def __init__(self, store: LakeStore, catalog: Catalog, history: pl.DataFrame) -> None:
        self.store = store
        self.file_catalog = catalog
        self._refresh(history)

    def _refresh(self, history: pl.DataFrame) -> None:
        self.history = history
        catalog = self.file_catalog
        retired = retirements(history)
        agents = {
            a.agent_id: (
                a
                if a.agent_id not in retired or a.status == "retired"
                else msgspec.structs.replace(
                    a, status="retired", retired_on=retired[a.agent_id].date()
                )
            )
            for a in catalog
        }
        self.catalog = Catalog(agents, catalog.source)

    def entry(self, agent_id: str) -> AgentEntry:
        entry = self.catalog.get(agent_id)
        if entry is None:
            known = ", ".join(sorted(self.catalog.agents)) or "none"
            raise UnknownAgentError(
                f"unknown agent {agent_id!r} in {self.catalog.source} (known: {known})"
            )
        return entry

    def revisions(self, agent_id: str) -> list[Revision]:
        rows = self.history.filter(pl.col("agent_id") == agent_id).sort("ts")
        if rows.height == 0 and agent_id not in self.catalog:
            self.entry(agent_id)  # raises with the known agents named
        out = []
        for n, r in enumerate(rows.iter_rows(named=True), start=1):
            diff = tuple(
                FieldChange(d["field"], d["before"], d["after"]) for d in json.loads(r["diff"])
            )
            entry = None if r["entry"] is None else json.loads(r["entry"])
            out.append(
                Revision(n, r["ts"], r["change"], r["actor"], r["reason"], r["source"], entry, diff)
            )
        return out

    def record(
        self,
        agent_id: str,
        change: str,
        *,
        actor: str,
        reason: str,
        entry: AgentEntry | None,
        clock: Clock = utc_now,
    ) -> None:
        """Append one lifecycle change (e.g. a retirement) with its diff to the history."""
        before = self.catalog.get(agent_id)
        before_doc = None if before is None else entry_doc(before)
        after_doc = None if entry is None else entry_doc(entry)
        row = _row(
            clock(),
            agent_id,
            change,
            actor,
            reason,
            self.catalog.source,
            after_doc,
            diff_entries(before_doc, after_doc),
        )
        self.store.append_log(TABLE, pl.DataFrame([row]))
        self._refresh(self.store.read_log(TABLE))


def sync(
    store: LakeStore, catalog: Catalog, *, actor: str, reason: str, clock: Clock = utc_now
) -> int:
    """Record how ``catalog`` differs from the history; returns how many rows were added."""
    history = store.read_log(TABLE)
    found = catalog_diff(catalog, history)
    if not found:
        return 0
    at = clock()
    rows = []
    for agent_id, change, diff in found:
        entry = catalog.get(agent_id)
        doc = None if entry is None else entry_doc(entry)
        rows.append(_row(at, agent_id, change, actor, reason, catalog.source, doc, diff))
    store.append_log(TABLE, pl.DataFrame(rows))
    return len(rows)


def load_registry(
    db: Path, catalog_path: Path, *, actor: str, reason: str = "", clock: Clock = utc_now
) -> Registry:
    """Load the catalog file, record what changed since the last load, and overlay history."""
    catalog = load_catalog(catalog_path)
    store = LakeStore(db)
    store.prepare()
    sync(store, catalog, actor=actor, reason=reason or "catalog file loaded", clock=clock)
    return Registry(store, catalog, store.read_log(TABLE))


def apply_registry(db: Path, catalog: Catalog) -> Catalog:
    """``catalog`` with the retirements the registry beside ``db`` recorded."""
    store = LakeStore(db)
    return Registry(store, catalog, store.read_log(TABLE)).catalog


def recorder(db: Path, catalog_path: Path, actor: str) -> Callable[[], None]:
    """Records the catalog file's changes whenever its modification time moves.

    ``alerts run`` calls it after every evaluation, so edits picked up by the evaluator
    are in the history even when nobody runs an ``agents`` command.
    """
    seen: list[float] = []

    def record() -> None:
        stamp = catalog_path.stat().st_mtime
        if seen and seen[0] == stamp:
            return
        store = LakeStore(db)
        sync(store, load_catalog(catalog_path), actor=actor, reason="catalog file loaded")
        seen[:] = [stamp]

    return record
