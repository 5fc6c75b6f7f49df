"""The processor's configuration, run statistics and per-partition buffer of records."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentwatch.commands.options import DEFAULT_METRICS_HOST
from agentwatch.ingest.contract.events import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPIC
from agentwatch.processors.landing.faults import DEFAULT_CONNECT_TIMEOUT_S


@dataclass(frozen=True)
class ProcessorConfig:
    bootstrap: str
    db: Path
    topic: str = DEFAULT_TOPIC
    group: str = "agentwatch"
    dlq_topic: str | None = None
    idle_timeout_s: float | None = None
    max_batch: int = 20_000
    flush_interval_s: float = 2.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    dedup_horizon_s: float = 3600.0
    dedup_max_ids: int = 20_000_000
    session_timeout_s: float = 10.0
    allowed_lateness_s: float = 300.0
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    max_label_values: int = 200
    pricing_file: Path | None = None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


@dataclass
class RunStats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    segments: int = 0
    started: float = field(default_factory=time.monotonic)
    first_record_at: float | None = None
    last_commit_at: float | None = None

    @property
    def records_per_s(self) -> float:
        """Records landed per second, from the first record polled to the last commit."""
        if self.first_record_at is None or self.last_commit_at is None:
            return 0.0
        return self.records / max(self.last_commit_at - self.first_record_at, 1e-9)


@dataclass
class Pending:
    offsets: list[int] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)

    def extend(self, records: Sequence[Any]) -> None:
        if not self.offsets:
            self.since = time.monotonic()
        self.offsets.extend(r.offset for r in records)
        self.timestamps_ms.extend(r.timestamp for r in records)
        self.keys.extend(r.key for r in records)
        self.values.extend(r.value for r in records)
