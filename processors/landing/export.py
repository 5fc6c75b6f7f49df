"""What a stored set of batches tells the exported metrics and the debug log.

The loop thread exports a set after the next set was handed to the landing thread, so
aggregating its metric deltas overlaps that landing instead of holding it up. Only
stored batches are exported, after their lake transaction committed: a crash before
the export loses the metrics of the set, never its events.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.pipeline import LandedBatch, metric_deltas
from agentwatch.processors.metrics.exporter import FleetCollector
from agentwatch.processors.store.lake import LakeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredBatch:
    """What the export needs of a stored batch: where it lies and its landed rows.

    Not its raw messages (half a set's memory), nor the rollup rows: a set waits in this
    form for its export while the next set lands."""

    partition: int
    first_offset: int
    last_offset: int
    records: int
    landed: LandedBatch

    @classmethod
    def of(cls, batch: RawBatch, landed: LandedBatch) -> StoredBatch:
        first, last = batch.offsets[0], batch.offsets[-1]
        return cls(batch.partition, first, last, len(batch), replace(landed, extra_tables={}))


def export_stored(collector: FleetCollector, stored: Sequence[StoredBatch]) -> None:
    """Apply the set's metric deltas (aggregated once for all its batches), then log each
    batch and apply its per-partition figures."""
    if not stored:
        return
    collector.apply(metric_deltas([b.landed for b in stored]))
    for batch in stored:
        landed = batch.landed
        log.debug(
            "batch committed",
            extra={
                "partition": batch.partition,
                "first_offset": batch.first_offset,
                "last_offset": batch.last_offset,
                "events": landed.events.height,
                "dead_letters": landed.dead_letters.height,
                "duplicates": landed.duplicates,
            },
        )
        newest = landed.events["ts"].max()
        collector.batch_landed(
            batch.partition,
            records=batch.records,
            events=landed.events.height,
            duplicates=landed.duplicates,
            late=landed.late,
            newest=newest if isinstance(newest, dt.datetime) else None,
        )


@dataclass
class SetTimer:
    """Where a set's time went, for the debug log: landing it, waiting for the other
    writers of the lake, and its transaction (a stalled commit shows up here)."""

    store: LakeStore
    started: float = field(default_factory=time.monotonic)
    landed_at: float = 0.0
    waited_before: float = field(init=False)  # the store's lock wait when the set began

    def __post_init__(self) -> None:
        self.waited_before = self.store.lock_waited_s

    def landed(self) -> None:
        self.landed_at = time.monotonic()

    def stored(self, raw: Sequence[RawBatch]) -> None:
        log.debug(
            "set stored",
            extra={
                "partitions": [b.partition for b in raw],
                "records": sum(len(b) for b in raw),
                "landing_s": round(self.landed_at - self.started, 4),
                "lock_wait_s": round(self.store.lock_waited_s - self.waited_before, 4),
                "commit_s": round(time.monotonic() - self.landed_at, 4),
            },
        )
