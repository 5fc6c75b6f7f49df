"""The registry for Prometheus: inventory, approvals, review age and releases per agent.

Served by ``alerts run --metrics-port`` beside the alert states, for the governance
dashboard. Read from the catalog file (with the registry's retirements) and the
registry's log tables at scrape time, at most once per ``refresh_s``; a registry that
cannot be read leaves the last good values and is logged, never failing the scrape.

- ``agentwatch_agent_info{agent_id,risk_tier,status,owner,business_owner,technical_owner,
  autonomy}``: 1 per catalogued agent (empty label: not declared);
- ``agentwatch_agent_model_approved{agent_id,model}``: 1 per approved model;
- ``agentwatch_agent_review_age_days{agent_id}`` and
  ``agentwatch_agent_review_interval_days{agent_id}``: days since the last access review
  (or since the registry first recorded the agent) and the days its risk tier allows;
- ``agentwatch_release_registered{agent_id,agent_version,approved,stage}``: 1 per
  registered release.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from agentwatch.alerts.governance.catalog import load_catalog
from agentwatch.alerts.governance.registry import TABLE as CHANGES
from agentwatch.alerts.governance.registry import Registry
from agentwatch.alerts.governance.releases import Releases
from agentwatch.alerts.governance.review import TABLE as REVIEWS
from agentwatch.clock import utc_now
from agentwatch.processors.metrics import series
from agentwatch.processors.store.lake import LakeStore

log = logging.getLogger(__name__)


class LifecycleCollector(Collector):
    def __init__(self, db: Path, catalog_path: Path | None, refresh_s: float = 10.0) -> None:
        self.db = db
        self.catalog_path = catalog_path
        self.refresh_s = refresh_s
        self._read_at = float("-inf")
        self._families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        if time.monotonic() - self._read_at >= self.refresh_s:
            try:
                self._families = self._read(utc_now())
                self._read_at = time.monotonic()
            except Exception as exc:
                log.warning("registry metrics not refreshed", extra={"error": str(exc)})
        yield from self._families

    def _read(self, now: dt.datetime) -> list[Metric]:
        store = LakeStore(self.db)
        history = store.read_log(CHANGES)
        registry = Registry(store, load_catalog(self.catalog_path), history)
        info = series.AGENT_INFO.gauge()
        models = series.MODEL_APPROVED.gauge()
        age = series.REVIEW_AGE.gauge()
        allowed = series.REVIEW_INTERVAL.gauge()
        releases = series.RELEASE_REGISTERED.gauge()
        first = dict(history.group_by("agent_id").agg(pl.col("ts").min()).iter_rows())
        reviews = store.read_log(REVIEWS)
        last = dict(reviews.group_by("agent_id").agg(pl.col("ts").max()).iter_rows())
        for e in registry.catalog:
            values = [e.agent_id, e.risk_tier, e.status, e.owner, e.business_owner or "",
                      e.technical_owner or "", e.autonomy or ""]  # fmt: skip
            info.add_metric(values, 1.0)
            for model in sorted(e.approved_models or ()):
                models.add_metric([e.agent_id, model], 1.0)
            since = last.get(e.agent_id) or first.get(e.agent_id)
            if e.status == "active" and since is not None:
                age.add_metric([e.agent_id], (now - since).total_seconds() / 86400)
            allowed.add_metric([e.agent_id], e.review_interval())
        for r in Releases(registry).all():
            approved = "true" if r.approved else "false"
            releases.add_metric([r.agent_id, r.version, approved, r.stage or ""], 1.0)
        return [info, models, age, allowed, releases]
