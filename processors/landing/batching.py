"""When records become a batch: what is pending per partition, and when it is due.

A pure policy, so that freshness and batch size are decided in one place and tested on a
fake clock: the pending records of a member's partitions fall due together when they
number ``--max-batch`` (full) or the oldest has waited ``--flush-interval``. A due set
that is not full waits for the set landing before it, while fetching goes on: under load
batches grow by themselves, at a trickle records wait no longer than the interval. A
poll adds no more than the room left below ``--max-batch``, a full set waits for nothing
and fetching waits for it, so a member holds at most twice ``--max-batch`` records (one
set landing, one pending): that bounds its memory whatever the number of partitions it
owns.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.fetch import Chunk

# How long a poll waits for records when nothing is due; while a batch lands, the tick
# after which its result is taken.
IDLE_POLL_S = 0.2
LANDING_POLL_S = 0.05


@dataclass
class Pending:
    """A partition's records polled and not yet handed to landing, as columns."""

    offsets: list[int] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    since: float = 0.0  # when its oldest record was polled (monotonic seconds)

    def batch(self, topic: str, partition: int) -> RawBatch:
        return RawBatch(topic, partition, self.offsets, self.timestamps_ms, self.keys, self.values)

    def extend(self, chunks: Sequence[Chunk], now: float) -> int:
        """Add a poll's chunks of this partition; returns the number of records added."""
        if not self.offsets:
            self.since = now
        added = 0
        for chunk in chunks:
            self.offsets.extend(chunk.offsets)
            self.timestamps_ms.extend(chunk.timestamps_ms)
            self.keys.extend(chunk.keys)
            self.values.extend(chunk.values)
            added += len(chunk)
        return added


class Due(enum.Enum):
    NOTHING = "nothing"
    WAITED = "waited"  # the oldest record waited the interval: lands once landing is free
    FULL = "full"  # --max-batch records pending: land now, fetching waits if need be


def records(pending: Iterable[Pending]) -> int:
    """How many records are pending, all partitions together (what --max-batch counts)."""
    return sum(len(p.offsets) for p in pending)


def due(pending: Iterable[Pending], now: float, max_batch: int, flush_interval_s: float) -> Due:
    held = [p for p in pending if p.offsets]
    if records(held) >= max_batch:
        return Due.FULL
    if any(now - p.since >= flush_interval_s for p in held):
        return Due.WAITED
    return Due.NOTHING


def room(pending: Iterable[Pending], max_batch: int) -> int:
    """How many records the next poll may add: a set never outgrows ``--max-batch``."""
    return max(1, max_batch - records(pending))


def poll_timeout_s(
    pending: Iterable[Pending], now: float, flush_interval_s: float, landing: bool
) -> float:
    """Wait for records no longer than until a batch falls due (or, while one lands, a
    tick): a due batch never waits on an idle poll."""
    wait = LANDING_POLL_S if landing else IDLE_POLL_S
    oldest = min((p.since for p in pending if p.offsets), default=None)
    if oldest is not None:
        wait = min(wait, oldest + flush_interval_s - now)
    return max(0.0, wait)
