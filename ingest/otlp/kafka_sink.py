"""The receiver's Kafka writes: one request's records, acks=all, acknowledged before it answers.

kafka-python's ``KafkaProducer`` pays for every record on its own (type checks, a future,
a lock and a batch append, then a sender thread that drains the batches): at the
receiver's rates that cost more than mapping the spans. A request's records are all known
at once, so the sink writes them as Kafka's own producer would but per request: one v2
record batch per partition (``records``), one ``ProduceRequest`` per
leader broker with acks=-1, sent through kafka-python's connection manager (its IO
thread, TLS and SASL), and it waits for exactly those responses. A session lands on the
partition Kafka's default partitioner picks for its key, as the SDK's records do.

Partitions a broker refuses with a retriable error are sent again after a metadata
refresh, until the timeout; what is still refused raises ``Unavailable``.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from agentwatch.ingest.otlp.receiver import Unavailable
from agentwatch.ingest.otlp.records import record_batches
from agentwatch.kafka import client_options

log = logging.getLogger(__name__)

ACKS_ALL: Final = -1
BATCH_BYTES: Final = 512 * 1024  # under the broker's 1 MiB message.max.bytes default
RETRY_BACKOFF_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """The records of one request for one partition, encoded as Kafka record batches."""

    topic: str
    partition: int
    records: bytes
    count: int


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """Kafka's default partitioner: murmur2 of the key over all the topic's partitions."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``), a word at a time: the same
    hash as kafka-python's, which reads it a byte at a time."""
    length = len(data)
    h = 0x9747B28C ^ length
    whole = length & ~3
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[whole + 2] << 16
        if rest >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def batches(
    topic: str,
    records: Sequence[tuple[bytes | None, bytes]],
    partitions: Sequence[int],
    spread: int = 0,
    now_ms: int | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> list[PartitionBatch]:
    """Group records by partition (keyless ones round robin from ``spread``) and encode
    each group, in order, as record batches of at most ``batch_bytes``."""
    groups: dict[int, list[tuple[bytes | None, bytes]]] = {}
    chosen: dict[bytes, int] = {}
    for i, (key, value) in enumerate(records):
        if key is None:
            partition = partitions[(spread + i) % len(partitions)]
        else:
            found = chosen.get(key)
            partition = chosen[key] = partition_for(key, partitions) if found is None else found
        groups.setdefault(partition, []).append((key, value))
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    return [
        PartitionBatch(topic, p, record_batches(group, ts, batch_bytes), len(group))
        for p, group in groups.items()
    ]


class KafkaSink:
    """Produces each request's records with acks=all and returns once Kafka has them all."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        unmapped_topic: str,
        timeout_s: float = 10.0,
        max_in_flight: int = 16,
        client: Any = None,
    ) -> None:
        self.topic = topic
        self.unmapped_topic = unmapped_topic
        self.timeout_s = timeout_s
        self._spread = itertools.count()
        # a connection refuses requests past its in-flight limit: wait for a slot instead
        self._slots = threading.BoundedSemaphore(max_in_flight)
        if client is None:
            from kafka.net.compat import KafkaNetClient

            client = KafkaNetClient(
                **client_options(bootstrap),
                request_timeout_ms=int(timeout_s * 1000),
                max_in_flight_requests_per_connection=max_in_flight,
            )
            client._manager._net.start()  # the IO thread; callers block on its results
            client._manager.bootstrap(int(timeout_s * 1000))
        self._client = client
        self._manager = client._manager
        self._manager.cluster.set_topics([topic, unmapped_topic])

    def send(self, events: Sequence[tuple[bytes, bytes]], unmapped: Sequence[bytes]) -> None:
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.timeout_s
        try:
            pending = self._batches(events, unmapped, deadline)
            while pending:
                refused = self._produce(pending, deadline)
                if not refused:
                    return
                retriable = [b for b, exc in refused if exc.retriable]
                if len(retriable) < len(refused) or time.monotonic() + RETRY_BACKOFF_S >= deadline:
                    raise refused[0][1]
                time.sleep(RETRY_BACKOFF_S)  # a leader election takes a moment: do not spin
                self._refresh(deadline)
                pending = retriable
        except KafkaError as exc:
            log.warning("kafka did not take the events", extra={"error": str(exc)})
            raise Unavailable(str(exc)) from exc

    def _batches(
        self, events: Sequence[tuple[bytes, bytes]], unmapped: Sequence[bytes], deadline: float
    ) -> list[PartitionBatch]:
        out: list[PartitionBatch] = []
        spread = next(self._spread)
        records: list[tuple[str, Sequence[tuple[bytes | None, bytes]]]] = [
            (self.topic, events),
            (self.unmapped_topic, [(None, v) for v in unmapped]),
        ]
        for topic, chosen in records:
            if chosen:
                out += batches(topic, chosen, self._partitions(topic, deadline), spread)
        return out

    def _partitions(self, topic: str, deadline: float) -> list[int]:
        from kafka.errors import UnknownTopicOrPartitionError

        partitions = self._manager.cluster.partitions_for_topic(topic)
        if not partitions:
            self._refresh(deadline)
            partitions = self._manager.cluster.partitions_for_topic(topic)
        if not partitions:
            raise UnknownTopicOrPartitionError(topic)
        return sorted(partitions)

    def _refresh(self, deadline: float) -> None:
        """Fetch the topics' partitions and leaders again, waiting at most until ``deadline``."""
        manager = self._manager
        timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))

        async def refresh() -> None:
            await manager.wait_for(manager.call_soon(manager.cluster.refresh_metadata), timeout_ms)

        manager.run(refresh)

    def _produce(
        self, pending: list[PartitionBatch], deadline: float
    ) -> list[tuple[PartitionBatch, Any]]:
        """Send every batch to its leader; the batches refused, with their errors."""
        from kafka import errors
        from kafka.protocol.producer import ProduceRequest
        from kafka.structs import TopicPartition

        cluster = self._manager.cluster
        by_leader: dict[int, list[PartitionBatch]] = {}
        refused: list[tuple[PartitionBatch, Any]] = []
        for b in pending:
            leader = cluster.leader_for_partition(TopicPartition(b.topic, b.partition))
            if leader is None or leader < 0:
                refused.append((b, errors.LeaderNotAvailableError(f"{b.topic}-{b.partition}")))
            else:
                by_leader.setdefault(leader, []).append(b)
        timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
        requests = [
            (node, _request(ProduceRequest, group, timeout_ms)) for node, group in by_leader.items()
        ]
        with self._slots:
            answers = self._manager.run(self._exchange, requests, timeout_ms)
        for (_, group), answer in zip(by_leader.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                refused += [(b, answer) for b in group]
                continue
            codes = {
                (t.name, p.index): p.error_code
                for t in answer.responses
                for p in t.partition_responses
            }
            for b in group:
                code = codes.get((b.topic, b.partition), errors.UnknownError.errno)
                if code:
                    refused.append((b, errors.for_code(code)(f"{b.topic}-{b.partition}")))
        return refused

    async def _exchange(self, requests: list[tuple[int, Any]], timeout_ms: int) -> list[Any]:
        """On the IO thread: send all requests, then await each answer (or its error)."""
        from kafka.errors import KafkaError

        manager = self._manager
        sent = [manager.send(request, node_id=node) for node, request in requests]
        answers: list[Any] = []
        for future in sent:
            try:
                answers.append(await manager.wait_for(future, timeout_ms))
            except KafkaError as exc:
                answers.append(exc)
        return answers

    def close(self) -> None:
        self._client.close()
        self._manager._net.stop(int(self.timeout_s * 1000))


def _request(cls: Any, group: list[PartitionBatch], timeout_ms: int) -> Any:
    topics: dict[str, list[Any]] = {}
    for b in group:
        partition = cls.TopicProduceData.PartitionProduceData(index=b.partition, records=b.records)
        topics.setdefault(b.topic, []).append(partition)
    return cls(
        transactional_id=None,
        acks=ACKS_ALL,
        timeout_ms=timeout_ms,
        topic_data=[cls.TopicProduceData(name=t, partition_data=ps) for t, ps in topics.items()],
        max_version=9,
    )
