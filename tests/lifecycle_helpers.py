"""A small catalog, a store and a registry over them, for the lifecycle tests."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import polars as pl

from agentwatch.alerts.governance.registry import Registry, load_registry
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.frames import store_batch

CATALOG_YAML = textwrap.dedent(
    """
    version: 1
    agents:
      - agent_id: claims-1
        owner: claims-ops
        oncall: claims-pager
        business_owner: head-of-claims
        technical_owner: claims-platform
        purpose: First notice of loss for insurance claims.
        autonomy: act_with_approval
        data_sources: [policy-db, claims-db]
        risk_tier: high
        status: active
        approved_models: [claude-3-5-sonnet, gpt-4o-mini]
        approved_tools: [claims.create, claims.delete, policy.search]
        tool_tiers: {policy.search: read, claims.create: write, claims.delete: destructive}
        credentials: [svc-claims-1, vault:claims/api-key]
        slo: {containment_floor: 0.5, p95_latency_ms: 9000, cost_per_session_usd: 0.4}
      - agent_id: faq-1
        owner: web-team
        oncall: web-pager
        risk_tier: low
        status: active
        approved_models: [gpt-4o-mini]
        approved_tools: [kb.search]
        tool_tiers: {kb.search: read}
    """
)


def write_catalog(folder: Path, text: str = CATALOG_YAML) -> Path:
    path = folder / "catalog.yaml"
    path.write_text(text)
    return path


def make_registry(tmp_path: Path, *frames: pl.DataFrame, by: str = "person:ana") -> Registry:
    """A store with ``frames`` as events, and the registry after its first catalog load."""
    store = LakeStore(tmp_path / "data" / METADATA_FILE)
    for frame in frames:
        store_batch(store, frame)
    store.prepare()
    catalog = tmp_path / "catalog.yaml"
    if not catalog.exists():
        write_catalog(tmp_path)
    return load_registry(Path(store.db), catalog, actor=by)


def db_of(registry: Registry) -> Path:
    return Path(registry.store.db)


def eval_file(folder: Path, score: float = 0.91) -> Path:
    path = folder / "eval.json"
    path.write_text(json.dumps({"suite": "claims-regression", "score": score}))
    return path


def registry_with_a_release(folder: Path) -> Registry:
    """A registry with one release of claims-1 registered and approved, one review done."""
    from agentwatch.alerts.governance.releases import Releases, read_evaluation
    from agentwatch.alerts.governance.review import record_review, run_review

    registry = make_registry(folder)
    releases = Releases(registry)
    releases.register(
        "claims-1", "1.4.0", actor="person:ana", prompt_versions=["v5"],
        models=["claude-3-5-sonnet"], tools=["claims.create"],
        evaluation=read_evaluation(eval_file(folder), None),
    )  # fmt: skip
    releases.approve("claims-1", "1.4.0", actor="person:bo")
    now = dt.datetime.now(dt.UTC)
    review = run_review(registry, db_of(registry), now - dt.timedelta(days=30), now)
    record_review(registry, review, "person:dana", now)
    return registry
