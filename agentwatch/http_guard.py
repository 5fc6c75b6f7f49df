"""An HTTP server that is safe to expose: bounded threads, timeouts, TLS, strict lengths.

Why not ``ThreadingHTTPServer``: it starts a thread per connection and waits forever on
each read, and wrapping its listening socket for TLS runs every handshake inside
``accept()`` on the one serving thread, so one idle client stops all intake. Here
connections are served by a fixed pool (one more is answered 503 at once); the TLS
handshake runs on the worker; each read waits at most ``read_timeout_s`` and each request
must have arrived in full, keep-alive wait and handshake included, within
``request_timeout_s`` or its connection is shut. A body is read only when its
``Content-Length`` is one plain decimal number (:func:`body_length`), and every error
answer closes the connection, so an unread body is never taken for the next request.

``alerts receive`` (:mod:`~agentwatch.alerts.alertmanager.server`) and ``agentwatch otlp``
(:mod:`~agentwatch.ingest.otlp.http`) serve with it. The secrets they accept are checked
by :func:`require_secret`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Final

from agentwatch.errors import ConfigError
from agentwatch.ingest.sdk.emitter import RateLimiter

log = logging.getLogger(__name__)

MIN_SECRET_CHARS: Final = 16
"""The shortest bearer token or password a server accepts as its configured secret."""

LINGER_S: Final = 1.0
LINGER_BYTES: Final = 1 << 20
"""After an error answer sent before the body was read, the rest of the request is read
and dropped for at most this long and this much, so the client sees the answer rather
than a reset connection; then the connection is closed."""

_DIGITS: Final = re.compile(r"[0-9]+")
_MAX_DIGITS: Final = 18  # more than any body limit; int() of longer strings costs time


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only (a host name other
    than ``localhost`` may resolve to anything, so it is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secret(text: str, where: str) -> bytes:
    """``text`` as a configured secret; ConfigError naming ``where`` if it is too short."""
    if len(text) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{where}: the secret has {len(text)} characters; use at least {MIN_SECRET_CHARS} "
            "(e.g. `openssl rand -hex 32`)"
        )
    return text.encode()


def server_tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or newer); ConfigError if the pair cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except OSError as exc:  # ssl.SSLError included
        reason = exc.strerror or str(exc)
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            reason = "the key is not the certificate's"
        raise ConfigError(
            f"cannot load the TLS certificate {cert} and key {key}: {reason}"
        ) from None
    return context


class BadLength(Exception):
    """A request whose body length cannot be trusted: answer ``status``, read nothing."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def body_length(headers: Message) -> int:
    """The declared body length: one ``Content-Length`` of decimal digits only, and no
    ``Transfer-Encoding``. BadLength otherwise: 411 when it is missing, 400 when it is
    malformed (``-1``, ``+5``, ``0x10``, two different values)."""
    if headers.get("Transfer-Encoding") is not None:
        raise BadLength(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required, not chunks")
    values = headers.get_all("Content-Length") or []
    if not values:
        raise BadLength(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
    value = values[0].strip()
    if any(v.strip() != value for v in values) or not _DIGITS.fullmatch(value):
        raise BadLength(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
    digits = value.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_DIGITS else sys.maxsize


class GuardedServer(HTTPServer):
    """Serves ``handler`` (a :class:`GuardedHandler`) on ``host:port``.

    Connections are served by at most ``workers`` threads; one more is answered 503 at
    once. Each read waits at most ``read_timeout_s``, and each request (TLS handshake and
    keep-alive wait included) must arrive in full within ``request_timeout_s`` or its
    connection is closed, so slow clients cannot hold threads. ``tls`` serves HTTPS.
    """

    request_queue_size = 128  # accept quickly; the workers decide who is served

    def __init__(
        self,
        host: str,
        port: int,
        handler: type[GuardedHandler],
        *,
        tls: ssl.SSLContext | None = None,
        workers: int = 8,
        read_timeout_s: float = 10.0,
        request_timeout_s: float = 30.0,
        name: str = "agentwatch-http",
    ):
        self.tls = tls
        self.read_timeout_s = read_timeout_s
        self.request_timeout_s = request_timeout_s
        self.accepted = 0
        self.busy = 0
        self.timed_out = 0
        self._slots = threading.BoundedSemaphore(workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        self._closing = threading.Event()
        self.refused_log = RateLimiter(10.0)
        self._timeout_log = RateLimiter(10.0)
        super().__init__((host, port), handler)
        if tls is not None:  # handshakes happen in the workers, under the timeouts
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self._reaper = threading.Thread(target=self._reap, name=f"{name}-reaper", daemon=True)
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
        if self.refused_log.ready():
            log.warning("every HTTP worker is busy; answering 503", extra={"busy": self.busy})
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
            log.exception("error while serving a request", extra={"peer": str(client_address)})

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


class GuardedHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; each request on the clock until its body is read.

    Subclasses read bodies with :meth:`read_body` and answer with :meth:`answer`: an
    answer of 400 or more closes the connection, after dropping what is left unread.
    """

    server: GuardedServer
    protocol_version = "HTTP/1.1"
    _body_read = False
    _linger = False

    def handle_one_request(self) -> None:
        self.server.deadline(self.connection)  # type: ignore[arg-type]
        self._body_read = False
        super().handle_one_request()

    def read_body(self, length: int) -> bytes:
        """The body of a declared ``length`` (check it against a limit first)."""
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionResetError("the client closed before sending its whole body")
        self._body_read = True
        self.server.read_done(self.connection)  # type: ignore[arg-type]
        return body

    def answer(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
            self._linger = self.command != "GET" and not self._body_read
        self.end_headers()
        self.wfile.write(body)

    def finish(self) -> None:
        super().finish()
        if self._linger:
            self._drop_unread()

    def _drop_unread(self) -> None:
        """Half-close, then read and drop what the client still sends, within bounds."""
        sock = self.connection
        with contextlib.suppress(OSError, ValueError):
            sock.shutdown(socket.SHUT_WR)
            left, deadline = LINGER_BYTES, time.monotonic() + LINGER_S
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                chunk = sock.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)

    def peer(self) -> str:
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format % args)


__all__ = [
    "MIN_SECRET_CHARS",
    "BadLength",
    "GuardedHandler",
    "GuardedServer",
    "body_length",
    "require_secret",
    "server_tls_context",
]
