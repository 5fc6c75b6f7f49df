"""Read a compacted control topic from the beginning and keep folding what arrives.

The one reader of ``agent-control``: the SDK's follower and the control side
(``breaker status``, the supervisor, runbooks) both use it, and both fold records with
:class:`~agentwatch.ingest.contract.control.ControlFold`, so they see the same state.
Records the fold refuses (unsigned, badly signed, undecodable) go to ``on_rejected``
and change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from agentwatch.ingest.contract.control import Applied, ControlFold, Keyring, Rejected, Removed

RejectedSink = Callable[[Rejected], None]


class ControlReader:
    """One consumer over every partition of the topic, without a group or commits.

    :meth:`catch_up` reads up to the end offsets as of the call and returns the state;
    :meth:`poll` folds whatever arrived since. Not thread-safe; one per thread.
    """

    def __init__(
        self,
        topic: str,
        keyring: Keyring | None,
        consumer_options: Mapping[str, Any],
        on_rejected: RejectedSink,
    ) -> None:
        self.topic = topic
        self.fold = ControlFold(keyring)
        self.on_rejected = on_rejected
        self._options = {**consumer_options, "group_id": None, "enable_auto_commit": False}
        self._consumer: Any = None
        self._assigned: list[Any] = []

    @property
    def current(self) -> dict[str, Applied]:
        return dict(self.fold.current)

    def open(self) -> None:
        """Connect and seek to the beginning; raises LookupError when the topic is missing."""
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is not None:
            return
        consumer = KafkaConsumer(**self._options)
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise LookupError(f"topic {self.topic!r} has no partitions (does it exist?)")
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
        except BaseException:
            consumer.close()
            raise
        self._consumer, self._assigned = consumer, assigned
        self.fold.current.clear()

    def catch_up(
        self, *, timeout_s: float | None = None, stop: Callable[[], bool] = lambda: False
    ) -> dict[str, Applied] | None:
        """Fold everything up to the topic's end as of now; None if stopped first.

        Raises TimeoutError when ``timeout_s`` passes before the end is reached.
        """
        self.open()
        consumer = self._consumer
        ends = consumer.end_offsets(self._assigned)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in self._assigned):
            if stop():
                return None
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} did not catch up in {timeout_s:g} s")
            self.poll(200)
        return self.current

    def poll(self, timeout_ms: int) -> list[Applied | Removed]:
        """Fold the records that arrived; refused ones go to ``on_rejected`` only."""
        self.open()
        folded: list[Applied | Removed] = []
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                result = self.fold.fold(record)
                if isinstance(result, Rejected):
                    self.on_rejected(result)
                else:
                    folded.append(result)
        return folded

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._assigned = []
        self.fold.current.clear()
        if consumer is not None:
            consumer.close()


__all__ = ["ControlReader", "RejectedSink"]
