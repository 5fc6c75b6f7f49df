"""OTLP/HTTP: ``POST /v1/traces``, protobuf or JSON, gzip or none.

Answers as the OTLP specification asks: 200 with an ``ExportTraceServiceResponse``
(its ``partial_success`` naming rejected spans), 400 for a body that is not an export,
401 without the configured bearer token, 413 over the body limit (also once inflated),
415 for another content type, and 503 with Retry-After when Kafka cannot take the
events. The answer has the request's content type.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from agentwatch.ingest.otlp.receiver import RETRY_AFTER_S, Receiver, Unavailable
from agentwatch.ingest.otlp.spans import (
    RequestError,
    TooLarge,
    decompress,
    parse_json,
    parse_protobuf,
)

log = logging.getLogger(__name__)

PATH: Final = "/v1/traces"
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"


class OtlpHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        receiver: Receiver,
        max_body_bytes: int,
        token: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.receiver = receiver
        self.max_body_bytes = max_body_bytes
        self.token = token
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.socket = context.wrap_socket(self.socket, server_side=True)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="otlp-http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: OtlpHttpServer
    protocol_version = "HTTP/1.1"

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
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._plain(411, "Content-Length is required", ctype)
        if length > limit:
            self.close_connection = True
            return self._status(413, f"the body is over the {limit}-byte limit", ctype)
        body = self.rfile.read(length)
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

    def _plain(self, code: int, message: str, ctype: str = "", auth: bool = False) -> int:
        return self._send(code, "text/plain; charset=utf-8", message.encode(), auth=auth)

    def _send(self, code: int, ctype: str, body: bytes, auth: bool = False) -> int:
        self.server.receiver.metrics.requests.labels("http", str(code)).inc()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if code == 503:
            self.send_header("Retry-After", str(RETRY_AFTER_S))
        if auth:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        return code


# HTTP answers and the gRPC status codes their Status bodies carry.
_GRPC_CODES: Final = {400: 3, 401: 16, 411: 3, 413: 8, 503: 14}
