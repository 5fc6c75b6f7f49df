"""How far the processor is behind the topic: lag per partition, and whether it may rest.

Both ask the broker for end offsets. Lag is measured over this member's partitions (for
``/metrics``); :func:`partitions_behind` looks at the whole topic, since ``--idle-timeout``
must not end a member while any partition still has records to land.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Final

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from agentwatch.processors.metrics.exporter import PartitionHealth
from agentwatch.processors.store.lake import LakeStore

# Offset look-ups give up this soon, so an outage is noticed (and logged) within seconds.
OFFSETS_TIMEOUT_MS: Final = 2000


def update_lag(consumer: KafkaConsumer, health: MutableMapping[int, PartitionHealth]) -> None:
    """Lag per assigned partition; asking the broker also notices a lost broker."""
    assigned = list(consumer.assignment())
    ends = consumer.end_offsets(assigned, timeout_ms=OFFSETS_TIMEOUT_MS)
    for tp in assigned:
        partition = health.get(tp.partition)
        if tp in ends and partition is not None:
            position = consumer.position(tp, timeout_ms=OFFSETS_TIMEOUT_MS)
            partition.lag = max(0, ends[tp] - position)


def partitions_behind(consumer: KafkaConsumer, store: LakeStore, topic: str) -> list[int]:
    """Partitions of ``topic`` whose records are not all landed in the lake.

    The whole topic counts, not only this member's partitions: a member that was killed
    still holds its partitions until its session expires, and resting then would leave
    their records unlanded.
    """
    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    ends = consumer.end_offsets(tps, timeout_ms=OFFSETS_TIMEOUT_MS) if tps else {}
    behind = []
    for tp in tps:
        last = store.committed_last_offset(topic, tp.partition)
        if (-1 if last is None else last) + 1 < ends.get(tp, 0):
            behind.append(tp.partition)
    return behind
