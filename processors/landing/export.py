"""What a stored set of batches tells the exported metrics and the debug log.

The loop thread exports a set after the next set was handed to the landing thread, so
aggregating its metric deltas overlaps that landing instead of holding it up. Only
stored batches are exported, after their lake transaction committed: a crash before
the export loses the metrics of the set, never its events.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.pipeline import LandedBatch, metric_deltas
from agentwatch.processors.metrics.exporter import FleetCollector

log = logging.getLogger(__name__)


def export_stored(
    collector: FleetCollector, stored: Sequence[tuple[RawBatch, LandedBatch]]
) -> None:
    """Apply the set's metric deltas (aggregated once for all its batches), then log each
    batch and apply its per-partition figures."""
    if not stored:
        return
    collector.apply(metric_deltas([landed for _, landed in stored]))
    for batch, landed in stored:
        log.debug(
            "batch committed",
            extra={
                "partition": batch.partition,
                "first_offset": batch.offsets[0],
                "last_offset": batch.offsets[-1],
                "events": landed.events.height,
                "dead_letters": landed.dead_letters.height,
                "duplicates": landed.duplicates,
            },
        )
        newest = landed.events["ts"].max()
        collector.batch_landed(
            batch.partition,
            records=len(batch),
            events=landed.events.height,
            duplicates=landed.duplicates,
            late=landed.late,
            newest=newest if isinstance(newest, dt.datetime) else None,
        )
