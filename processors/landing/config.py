"""The processor's configuration and run statistics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentwatch.processors.landing.pipeline import LandedBatch, LandingSettings
from agentwatch.processors.landing.redact import load_redaction
from agentwatch.processors.store.maintain import MaintenancePolicy
from agentwatch.processors.store.maintenance_loop import MaintenanceLoop
from agentwatch.settings import DEFAULTS

_PROCESS = DEFAULTS.process
_STORAGE = DEFAULTS.storage


@dataclass(frozen=True)
class ProcessorConfig:
    """What ``agentwatch process`` runs with; the defaults are the settings' (``[process]``)."""

    bootstrap: str
    db: Path
    topic: str = DEFAULTS.kafka.topic
    group: str = _PROCESS.group
    dlq_topic: str | None = _PROCESS.dlq_topic
    idle_timeout_s: float | None = _PROCESS.idle_timeout
    max_batch: int = _PROCESS.max_batch
    flush_interval_s: float = _PROCESS.flush_interval
    max_message_bytes: int = _PROCESS.max_message_bytes
    dedup_horizon_s: float = _PROCESS.dedup_horizon
    dedup_max_ids: int = _PROCESS.dedup_max_ids
    dedup_memory_mb: float = _PROCESS.dedup_memory_mb
    duckdb_memory_mb: float | None = _PROCESS.duckdb_memory_mb  # None: DuckDB's default
    session_timeout_s: float = _PROCESS.session_timeout
    allowed_lateness_s: float = _PROCESS.allowed_lateness
    metrics_port: int | None = _PROCESS.metrics_port
    metrics_host: str = _PROCESS.metrics_host
    max_label_values: int = _PROCESS.max_label_values
    pricing_file: Path | None = None
    connect_timeout_s: float = _PROCESS.connect_timeout
    otlp_topic: str | None = None  # OpenTelemetry Collector spans, also landed
    otlp_format: str = "otlp_proto"
    otlp_unmapped_topic: str | None = None
    redaction_file: Path | None = None  # None: the shipped redaction.yaml
    maintain_interval_s: float = _STORAGE.maintain_interval  # 0: no maintenance here
    retention_days: Mapping[str, int] = field(default_factory=lambda: _STORAGE.retention_days)
    legal_hold: tuple[str, ...] = tuple(_STORAGE.legal_hold)
    snapshot_grace_s: float = _STORAGE.snapshot_grace

    def landing_settings(self) -> LandingSettings:
        """What the pure landing pipeline needs of these (the redaction rules, read)."""
        return LandingSettings(
            max_message_bytes=self.max_message_bytes,
            allowed_lateness_s=self.allowed_lateness_s,
            dedup_horizon_s=self.dedup_horizon_s,
            dedup_max_ids=self.dedup_max_ids,
            redactor=load_redaction(self.redaction_file),
        )

    def maintenance_loop(self, db: str) -> MaintenanceLoop | None:
        """The lake's maintenance on this process's schedule; None when it runs elsewhere."""
        if self.maintain_interval_s <= 0:
            return None
        policy = MaintenancePolicy(self.retention_days, self.legal_hold, self.snapshot_grace_s)
        return MaintenanceLoop(
            db, policy, self.maintain_interval_s, memory_mb=self.duckdb_memory_mb
        )

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


@dataclass
class RunStats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    batches: int = 0  # partitions' batches stored
    commits: int = 0  # lake transactions: one holds the batches of every partition due
    started: float = field(default_factory=time.monotonic)
    first_record_at: float | None = None
    last_commit_at: float | None = None

    def count(self, landed: LandedBatch) -> None:
        """Count a stored batch."""
        self.events += landed.events.height
        self.dead_letters += landed.dead_letters.height
        self.duplicates += landed.duplicates
        self.batches += 1

    @property
    def records_per_s(self) -> float:
        """Records landed per second, from the first record polled to the last commit."""
        if self.first_record_at is None or self.last_commit_at is None:
            return 0.0
        return self.records / max(self.last_commit_at - self.first_record_at, 1e-9)
