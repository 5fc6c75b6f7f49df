"""The transport-free core of the OTLP receiver: one export request in, one answer out.

A request's spans are mapped and the events produced to the events topic (keyed by
session id, acks=all, like the SDK) before the answer: the exporter's success means the
events are in Kafka. When Kafka cannot take them the answer is ``Unavailable`` (HTTP 503
with Retry-After, gRPC UNAVAILABLE) so the exporter retries; event ids derive from span
ids, so what a retry sends again lands once. Unmapped-span samples go to their own topic,
which ``agentwatch process`` lands as the ``otlp_unmapped`` table. The receiver keeps no
state that matters: run as many as needed behind a load balancer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from agentwatch.ingest.otlp.mapping import Mapped, MappingConfig, map_spans
from agentwatch.ingest.otlp.metrics import OtlpMetrics
from agentwatch.ingest.otlp.spans import flatten
from agentwatch.kafka import client_options

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

log = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 5
UNMAPPED_SUFFIX: Final = ".otlp-unmapped"


class Unavailable(RuntimeError):
    """Kafka did not take the events: the exporter must retry later."""


class Sink(Protocol):
    def send(self, events: Sequence[tuple[bytes, bytes]], unmapped: Sequence[bytes]) -> None:
        """Deliver everything durably, or raise ``Unavailable``."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    rejected: int
    message: str

    def response(self) -> ExportTraceServiceResponse:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        response = ExportTraceServiceResponse()
        if self.rejected or self.message:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = self.message
        return response


class Receiver:
    def __init__(self, sink: Sink, config: MappingConfig, metrics: OtlpMetrics) -> None:
        self.sink = sink
        self.config = config
        self.metrics = metrics

    def export(self, request: ExportTraceServiceRequest) -> Answer:
        mapped = map_spans(flatten(request), self.config)
        samples = [msgspec.json.encode(u) for u in mapped.unmapped]
        self.sink.send(mapped.encoded(), samples)  # raises Unavailable: nothing counted
        self.metrics.record(mapped)
        return _answer(mapped)


def _answer(mapped: Mapped) -> Answer:
    if not mapped.rejected:
        return Answer(0, "")
    detail = "; ".join(mapped.errors)
    return Answer(mapped.rejected, f"{mapped.rejected} spans rejected: {detail}")


class KafkaSink:
    """Produces with acks=all and waits for every record before the receiver answers."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        unmapped_topic: str,
        timeout_s: float = 10.0,
        producer: Any = None,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.unmapped_topic = unmapped_topic
        self.timeout_s = timeout_s
        self._producer = producer or KafkaProducer(
            **client_options(bootstrap),
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
            max_block_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
            retries=3,
            compression_type=None,
        )

    def send(self, events: Sequence[tuple[bytes, bytes]], unmapped: Sequence[bytes]) -> None:
        from kafka.errors import KafkaError

        producer = self._producer
        try:
            # The partition is the default partitioner's (murmur2 of the key, as the SDK's
            # records get), computed once per session of the request, not once per event.
            partition = _Partitions(producer.partitions_for(self.topic))
            send = producer.send
            topic = self.topic
            futures = [send(topic, key=k, value=v, partition=partition[k]) for k, v in events]
            futures += [send(self.unmapped_topic, value=v) for v in unmapped]
            if futures:
                producer.flush(timeout=self.timeout_s)
            for future in futures:
                if not future.is_done or future.failed():
                    future.get(timeout=self.timeout_s)  # raises the record's error
        except KafkaError as exc:
            log.warning("kafka did not take the events", extra={"error": str(exc)})
            raise Unavailable(str(exc)) from exc

    def close(self) -> None:
        self._producer.close(timeout=self.timeout_s)


class _Partitions(dict[bytes, int]):
    """Key -> partition as Kafka's default partitioner picks it, memoised."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__()
        self._partitions = sorted(partitions)

    def __missing__(self, key: bytes) -> int:
        from kafka.partitioner.default import murmur2

        index = int(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)
        partition: int = self._partitions[index]
        self[key] = partition
        return partition
