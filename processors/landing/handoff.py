"""The bounded hand-off between the fetch loop and the landing thread.

kafka-python's consumer is not thread-safe, so the loop that polls it also decides what
lands; the landing itself (decode, dedup, pricing, the lake transaction) runs on one
landing thread while the loop fetches the next records. At most one set of batches is in
flight: a partition's batches land in the order they were handed off, and memory holds
the batches in flight plus the records pending behind them (bounded by ``--max-batch``).
The loop settles the set in flight (``take``) before it touches partition state again,
so the landing thread never shares that state with it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """One piece of work in flight on a thread of its own; its result taken by the caller."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._inflight: Future[T] | None = None

    @property
    def holding(self) -> bool:
        """True while work was handed off and its result not yet taken."""
        return self._inflight is not None

    @property
    def busy(self) -> bool:
        """True while the work handed off is still running."""
        return self._inflight is not None and not self._inflight.done()

    def submit(self, work: Callable[[], T]) -> None:
        """Start ``work``; the previous result must have been taken."""
        if self._inflight is not None:
            raise RuntimeError("the previous hand-off was not taken")
        self._inflight = self._pool.submit(work)

    def take(self) -> T | None:
        """Wait for the work in flight: its result, or its exception raised; None if none."""
        inflight, self._inflight = self._inflight, None
        return None if inflight is None else inflight.result()

    def close(self) -> None:
        """Let the work in flight finish (a lake transaction is never cut), then stop."""
        self._pool.shutdown(wait=True)
