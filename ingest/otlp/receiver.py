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
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from agentwatch.ingest.otlp.mapping import Mapped, MappingConfig, map_spans
from agentwatch.ingest.otlp.metrics import OtlpMetrics
from agentwatch.ingest.otlp.spans import flatten

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
