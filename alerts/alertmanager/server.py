"""A small HTTP server that is safe to expose: credentials, TLS, bounded threads, timeouts.

Why not ``ThreadingHTTPServer``: it starts a thread per connection and waits forever on
each read, so a few dozen slow clients pin as many threads. Here connections are served
by a fixed pool (one more is answered 503 at once), each read waits at most
``read_timeout_s`` and each request must have arrived in full, keep-alive wait included,
within ``request_timeout_s`` or its connection is shut. Requests must carry a credential
``auth`` accepts (401 before the body is read) and bodies are bounded (413).
``alerts receive`` serves Alertmanager webhooks with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Final

from agentwatch.alerts.alertmanager.access import CHALLENGE, WebhookAuth
from agentwatch.ingest.sdk.emitter import RateLimiter
from agentwatch.settings import DEFAULTS

log = logging.getLogger(__name__)

# The defaults are the settings' ([receive]), written once in agentwatch/settings.py.
MAX_BODY: Final = DEFAULTS.receive.max_body
DEFAULT_WORKERS: Final = DEFAULTS.receive.workers
DEFAULT_READ_TIMEOUT_S: Final = DEFAULTS.receive.read_timeout
DEFAULT_REQUEST_TIMEOUT_S: Final = DEFAULTS.receive.request_timeout

Answer = tuple[HTTPStatus, Mapping[str, Any]]
PostHandler = Callable[[bytes, str], Answer]
"""Handles an authenticated POST's body (and the peer's address); returns the answer."""


class GuardedServer(HTTPServer):
    """POST to any path goes to ``on_post`` once authenticated; GET /-/healthy answers 200.

    Only requests whose ``Authorization`` header ``auth`` allows are read (401 before the
    body otherwise). Connections are served by at most ``workers`` threads; one more is
    answered 503 at once. Each read waits at most ``read_timeout_s`` and each request
    (keep-alive wait included) must arrive in full within ``request_timeout_s`` or its
    connection is closed, so slow clients cannot hold threads. ``tls`` serves HTTPS.
    """

    request_queue_size = 128  # accept quickly; the workers decide who is served

    def __init__(
        self,
        host: str,
        port: int,
        on_post: PostHandler,
        *,
        auth: WebhookAuth,
        tls: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
        workers: int = DEFAULT_WORKERS,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ):
        self.on_post = on_post
        self.auth = auth
        self.tls = tls
        self.max_body = max_body
        self.read_timeout_s = read_timeout_s
        self.request_timeout_s = request_timeout_s
        self.accepted = 0
        self.unauthorized = 0
        self.busy = 0
        self.timed_out = 0
        self._slots = threading.BoundedSemaphore(workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="agentwatch-receive")
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        self._closing = threading.Event()
        self._refused_log = RateLimiter(10.0)
        self._timeout_log = RateLimiter(10.0)
        super().__init__((host, port), _Handler)
        if tls is not None:  # handshakes happen in the workers, under the timeouts
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self._reaper = threading.Thread(target=self._reap, name="receive-reaper", daemon=True)
        self._reaper.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        if not self._slots.acquire(blocking=False):
            self.busy += 1
            self._refuse_busy(request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.read_timeout_s)
            self.deadline(request)
            if isinstance(request, ssl.SSLSocket):
                request.do_handshake()
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._deadlines_lock:
                self._deadlines.pop(request, None)
            self.shutdown_request(request)
            self._slots.release()

    def deadline(self, request: socket.socket) -> None:
        """Start the clock of one request on this connection."""
        with self._deadlines_lock:
            self._deadlines[request] = time.monotonic() + self.request_timeout_s

    def read_done(self, request: socket.socket) -> None:
        """Stop the clock: the client sent its request; handling it may take its time."""
        with self._deadlines_lock:
            self._deadlines.pop(request, None)

    def _reap(self) -> None:
        while not self._closing.wait(0.25):
            now = time.monotonic()
            with self._deadlines_lock:
                late = [s for s, at in self._deadlines.items() if at <= now]
                for sock in late:
                    del self._deadlines[sock]
            for sock in late:
                self.timed_out += 1
                if self._timeout_log.ready():
                    log.info(
                        "closed a connection that outran the request timeout",
                        extra={"timed_out": self.timed_out},
                    )
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _refuse_busy(self, request: Any) -> None:
        if self._refused_log.ready():
            log.warning("every receive worker is busy; answering 503", extra={"busy": self.busy})
        try:
            if not isinstance(request, ssl.SSLSocket):
                request.settimeout(1.0)
                request.sendall(BUSY_RESPONSE)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that hung up or stalled is its own business; anything else is logged."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError | ssl.SSLError):
            log.debug("client disconnected", extra={"peer": str(client_address)})
        else:
            log.exception("error while serving a webhook", extra={"peer": str(client_address)})

    def start(self) -> threading.Thread:
        """Serve in a background thread (stop with ``shutdown()`` and ``server_close()``)."""
        thread = threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True)
        thread.start()
        return thread

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()
        with self._deadlines_lock:
            open_now = list(self._deadlines)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True)


BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 30\r\n\r\n"
    b'{"error": "busy; retry later"}'
)


class _Handler(BaseHTTPRequestHandler):
    server: GuardedServer
    protocol_version = "HTTP/1.1"

    def handle_one_request(self) -> None:
        self.server.deadline(self.connection)  # type: ignore[arg-type]
        super().handle_one_request()

    def do_GET(self) -> None:
        if self.path in ("/-/healthy", "/-/ready"):
            self._answer(HTTPStatus.OK, {"status": "ok"})
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "POST webhooks; GET /-/healthy"})

    def do_POST(self) -> None:
        if not self.server.auth.allows(self.headers.get("Authorization")):
            self.server.unauthorized += 1
            if self.server._refused_log.ready():
                log.warning(
                    "refused a webhook without valid credentials",
                    extra={"peer": self._peer(), "refused": self.server.unauthorized},
                )
            self._answer(HTTPStatus.UNAUTHORIZED, {"error": "authentication required"})
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        length = int(length_header)
        if length > self.server.max_body:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "payload too large"})
            return
        body = self.rfile.read(length)
        self.server.read_done(self.connection)  # type: ignore[arg-type]
        status, doc = self.server.on_post(body, self._peer())
        self._answer(status, doc)

    def _answer(self, status: HTTPStatus, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", CHALLENGE)
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _peer(self) -> str:
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format % args)


__all__ = [
    "DEFAULT_READ_TIMEOUT_S",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEFAULT_WORKERS",
    "MAX_BODY",
    "Answer",
    "GuardedServer",
]
