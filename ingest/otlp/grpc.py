"""OTLP/gRPC: the ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` method.

Same core and answers as OTLP/HTTP: UNAVAILABLE when Kafka cannot take the events
(the exporter retries), UNAUTHENTICATED without the configured bearer token,
INVALID_ARGUMENT for an unreadable message, and ``partial_success`` for rejected spans.
"""

from __future__ import annotations

import hmac
from concurrent import futures
from pathlib import Path
from typing import Any

from agentwatch.ingest.otlp.receiver import Receiver, Unavailable


def serve(
    host: str,
    port: int,
    receiver: Receiver,
    max_body_bytes: int,
    token: str | None = None,
    tls: tuple[Path, Path] | None = None,
    workers: int = 8,
) -> tuple[Any, int]:
    """Start the gRPC server on ``host:port`` (0 picks a port); the server and its port."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            code = "OK"
            try:
                if token is not None and not _authorized(context, token):
                    code = "UNAUTHENTICATED"
                    context.abort(
                        grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required"
                    )
                try:
                    return receiver.export(request).response()
                except Unavailable as exc:
                    code = "UNAVAILABLE"
                    context.abort(
                        grpc.StatusCode.UNAVAILABLE, f"Kafka cannot take the spans now: {exc}"
                    )
            finally:
                receiver.metrics.requests.labels("grpc", code).inc()
            raise AssertionError("unreachable")

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[
            ("grpc.max_receive_message_length", max_body_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)  # type: ignore[no-untyped-call]
    address = f"{host}:{port}"
    if tls is not None:
        credentials = grpc.ssl_server_credentials([(tls[1].read_bytes(), tls[0].read_bytes())])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    server.start()
    return server, bound


def _authorized(context: Any, token: str) -> bool:
    metadata = dict(context.invocation_metadata())
    given = str(metadata.get("authorization", ""))
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
