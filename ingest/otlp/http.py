"""OTLP/HTTP: ``POST /v1/traces``, protobuf or JSON, gzip or none.

Answers as the OTLP specification asks: 200 with an ``ExportTraceServiceResponse``
(its ``partial_success`` naming rejected spans), 400 for a body that is not an export
(or a ``Content-Length`` that is not a plain number), 401 without the configured bearer
token, 411 without a ``Content-Length``, 413 over the body limit (also once inflated),
415 for another content type, and 503 with Retry-After when Kafka cannot take the
events. The answer has the request's content type. Every error answer closes the
connection: a body left unread is never taken for the next request.

Connections are served as :class:`~agentwatch.http_guard.GuardedServer` serves them: a
bounded pool of workers, read and request timeouts, TLS handshakes on the workers.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from pathlib import Path
from typing import Any, Final

from agentwatch.http_guard import (
    BadLength,
    GuardedHandler,
    GuardedServer,
    body_length,
    server_tls_context,
)
from agentwatch.ingest.otlp.receiver import RETRY_AFTER_S, Receiver, Unavailable
from agentwatch.ingest.otlp.spans import (
    RequestError,
    TooLarge,
    decompress,
    parse_json,
    parse_protobuf,
)
from agentwatch.settings import DEFAULTS

log = logging.getLogger(__name__)

PATH: Final = "/v1/traces"
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"

DEFAULT_WORKERS: Final = DEFAULTS.otlp.http_workers
"""Connections served at once: an exporter keeps its connection open between exports."""
READ_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 30.0


class OtlpHttpServer(GuardedServer):
    """``POST /v1/traces`` to ``receiver``; ``tls`` is a context or a certificate and key."""

    def __init__(
        self,
        address: tuple[str, int],
        receiver: Receiver,
        max_body_bytes: int,
        token: str | None = None,
        tls: ssl.SSLContext | tuple[Path, Path] | None = None,
        *,
        workers: int = DEFAULT_WORKERS,
        read_timeout_s: float = READ_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.receiver = receiver
        self.max_body_bytes = max_body_bytes
        self.token = token
        if isinstance(tls, tuple):
            tls = server_tls_context(*tls)
        super().__init__(
            address[0],
            address[1],
            _Handler,
            tls=tls,
            workers=workers,
            read_timeout_s=read_timeout_s,
            request_timeout_s=request_timeout_s,
            name="otlp-http",
        )

    def serve_in_thread(self) -> threading.Thread:
        return self.start()


class _Handler(GuardedHandler):
    server: OtlpHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("otlp http " + format, *args)

    def do_GET(self) -> None:
        self._plain(405 if self.path == PATH else 404, "use POST /v1/traces")

    def do_POST(self) -> None:
        self._post()

    def _post(self) -> int:
        if self.path.split("?", 1)[0] != PATH:
            return self._plain(404, f"unknown path {self.path}; traces go to {PATH}")
        token = self.server.token
        if token is not None and not hmac.compare_digest(
            self.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
        ):
            return self._plain(401, "a valid bearer token is required", auth=True)
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype not in (PROTOBUF, JSON):
            return self._plain(415, f"Content-Type must be {PROTOBUF} or {JSON}")
        limit = self.server.max_body_bytes
        try:
            length = body_length(self.headers)
        except BadLength as exc:
            return self._status(int(exc.status), exc.message, ctype)
        if length > limit:
            return self._status(413, f"the body is over the {limit}-byte limit", ctype)
        body = self.read_body(length)
        try:
            raw = decompress(body, self.headers.get("Content-Encoding"), limit)
            request = parse_protobuf(raw) if ctype == PROTOBUF else parse_json(raw)
        except TooLarge as exc:
            return self._status(413, str(exc), ctype)
        except RequestError as exc:
            return self._status(400, str(exc), ctype)
        try:
            answer = self.server.receiver.export(request)
        except Unavailable as exc:
            return self._status(503, f"Kafka cannot take the spans now: {exc}", ctype)
        response = answer.response()
        if ctype == PROTOBUF:
            return self._send(200, PROTOBUF, response.SerializeToString())
        from google.protobuf.json_format import MessageToDict

        return self._send(200, JSON, json.dumps(MessageToDict(response)).encode())

    def _status(self, code: int, message: str, ctype: str) -> int:
        """An error answer as a google.rpc.Status in the request's encoding."""
        if ctype == PROTOBUF:
            from google.rpc.status_pb2 import Status

            body = Status(code=_GRPC_CODES.get(code, 2), message=message).SerializeToString()
        else:
            body = json.dumps({"code": _GRPC_CODES.get(code, 2), "message": message}).encode()
        return self._send(code, ctype, body)

    def _plain(self, code: int, message: str, auth: bool = False) -> int:
        return self._send(code, "text/plain; charset=utf-8", message.encode(), auth=auth)

    def _send(self, code: int, ctype: str, body: bytes, auth: bool = False) -> int:
        """The answer; one of 400 or more also closes the connection."""
        self.server.receiver.metrics.requests.labels("http", str(code)).inc()
        headers = {}
        if code == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        if auth:
            headers["WWW-Authenticate"] = "Bearer"
        self.answer(code, ctype, body, headers)
        return code


# HTTP answers and the gRPC status codes their Status bodies carry.
_GRPC_CODES: Final = {400: 3, 401: 16, 411: 3, 413: 8, 503: 14}
