"""Drop events whose ``event_id`` was already stored within the dedup horizon.

An SDK or gateway that re-sends an event keeps its id and its session key, so the copy
lands in the same partition: one index per partition suffices. The index keeps 64-bit
hashes of ids (8 bytes each, not Python strings) in sorted numpy chunks grouped by the
minute of the Kafka timestamp, merged size-tiered so a batch probes few chunks, and
expired by that timestamp, so the same input yields the same verdicts on a replay.
With 64-bit hashes, two distinct ids collide with odds of about n^2 / 2^65 (about
3e-8 for a million ids in the horizon).

Memory: 8 bytes per id held, plus, while two chunks of one minute merge, 8 bytes per id
of that minute. A process's indexes share one budget (``[process] dedup_memory_mb``):
each assigned partition may hold ``ids_within(budget, partitions)`` ids, and past that
its oldest minutes (never the newest) are dropped before their horizon (logged and
counted in ``evicted_early``), so a re-send older than what fits is stored again. At 64
MB (the default) and one partition that is 8.4 million ids: the full hour of horizon up
to about 2,300 events/s per partition, and at 15,000 events/s the last 9 minutes (SDK
retries come within seconds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

log = logging.getLogger(__name__)

U64 = npt.NDArray[np.uint64]
HASH_SEED = 0x5EED
BYTES_PER_ID = 8


def ids_within(budget_mb: float, partitions: int) -> int:
    """How many ids each of ``partitions`` indexes may hold within ``budget_mb`` together."""
    return max(1, int(budget_mb * 2**20 / BYTES_PER_ID / max(1, partitions)))


@dataclass
class _Chunk:
    minute: int
    hashes: U64  # sorted


@dataclass
class DedupIndex:
    """Seen event ids of one partition within ``horizon_s`` of Kafka time."""

    horizon_s: float = 3600.0
    max_ids: int = 20_000_000
    chunks: list[_Chunk] = field(default_factory=list)
    evicted_early: int = 0

    @property
    def size(self) -> int:
        return sum(len(c.hashes) for c in self.chunks)

    @property
    def nbytes(self) -> int:
        return sum(c.hashes.nbytes for c in self.chunks)

    def filter(self, events: pl.DataFrame) -> pl.DataFrame:
        """Keep the first copy of each event id not already seen; remember the kept ones."""
        if events.is_empty():
            return events
        minute = _last_minute(events)
        self._expire(minute)
        hashes = event_hashes(events)
        keep = ~self._seen(hashes) & pl.Series(hashes).is_first_distinct().to_numpy()
        self.add(hashes[keep], minute)
        return events.filter(pl.Series(keep))

    def add(self, hashes: U64, minute: int) -> None:
        if len(hashes):
            self.chunks.append(_Chunk(minute, np.sort(hashes)))
            self._merge_tail()
        self._expire(minute)

    def _seen(self, hashes: U64) -> npt.NDArray[np.bool_]:
        seen = np.zeros(len(hashes), dtype=bool)
        for chunk in self.chunks:
            pos = np.searchsorted(chunk.hashes, hashes)
            pos[pos == len(chunk.hashes)] = 0
            seen |= chunk.hashes[pos] == hashes
        return seen

    def _merge_tail(self) -> None:
        # Size-tiered: merge the last two chunks of one minute while the older is not
        # much larger, so a minute holds O(log n) chunks and merging costs O(n log n).
        while len(self.chunks) >= 2:
            a, b = self.chunks[-2], self.chunks[-1]
            if a.minute != b.minute or len(a.hashes) > 2 * len(b.hashes):
                break
            merged = np.concatenate([a.hashes, b.hashes])
            merged.sort()  # in place: the merge needs no third copy
            self.chunks[-2:] = [_Chunk(a.minute, merged)]

    def _expire(self, now_minute: int) -> None:
        oldest = now_minute - int(self.horizon_s // 60) - 1
        self.chunks = [c for c in self.chunks if c.minute >= oldest]
        total = self.size
        while total > self.max_ids and len(self.chunks) > 1:
            dropped = self.chunks.pop(0)
            total -= len(dropped.hashes)
            # Once over its limit an index drops a minute every minute: said once, at
            # warning level, then counted in ``evicted_early``.
            say = log.debug if self.evicted_early else log.warning
            self.evicted_early += len(dropped.hashes)
            say(
                "dedup index over its id limit; it drops its oldest ids before their "
                "horizon from now on",
                extra={"dropped_ids": len(dropped.hashes), "max_ids": self.max_ids},
            )


def event_hashes(events: pl.DataFrame) -> U64:
    return events["event_id"].hash(seed=HASH_SEED).to_numpy().astype(np.uint64, copy=False)


def _last_minute(events: pl.DataFrame) -> int:
    last = events["_kafka_ts"].max()
    assert last is not None
    return int(last.timestamp() // 60)  # type: ignore[union-attr]
