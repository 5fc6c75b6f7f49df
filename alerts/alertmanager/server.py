"""The webhook endpoint's HTTP server: credentials first, then bounded JSON bodies.

The connection handling (a bounded worker pool, read and request timeouts, TLS
handshakes on the workers, strict ``Content-Length``) is :mod:`agentwatch.http_guard`'s.
Here requests must carry a credential ``auth`` accepts (401 before the body is read) and
bodies are bounded (413). ``alerts receive`` serves Alertmanager webhooks with it.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

from agentwatch.alerts.alertmanager.access import CHALLENGE, WebhookAuth
from agentwatch.http_guard import BadLength, GuardedHandler, GuardedServer, body_length
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


class WebhookServer(GuardedServer):
    """POST to any path goes to ``on_post`` once authenticated; GET /-/healthy answers 200.

    Only requests whose ``Authorization`` header ``auth`` allows are read (401 before the
    body otherwise); bodies over ``max_body`` are refused (413). The other arguments are
    :class:`~agentwatch.http_guard.GuardedServer`'s.
    """

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
        self.max_body = max_body
        self.unauthorized = 0
        super().__init__(
            host,
            port,
            _Handler,
            tls=tls,
            workers=workers,
            read_timeout_s=read_timeout_s,
            request_timeout_s=request_timeout_s,
            name="agentwatch-receive",
        )


class _Handler(GuardedHandler):
    server: WebhookServer

    def do_GET(self) -> None:
        if self.path in ("/-/healthy", "/-/ready"):
            self._answer(HTTPStatus.OK, {"status": "ok"})
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "POST webhooks; GET /-/healthy"})

    def do_POST(self) -> None:
        if not self.server.auth.allows(self.headers.get("Authorization")):
            self.server.unauthorized += 1
            if self.server.refused_log.ready():
                log.warning(
                    "refused a webhook without valid credentials",
                    extra={"peer": self.peer(), "refused": self.server.unauthorized},
                )
            self._answer(HTTPStatus.UNAUTHORIZED, {"error": "authentication required"})
            return
        try:
            length = body_length(self.headers)
        except BadLength as exc:
            self._answer(exc.status, {"error": exc.message})
            return
        if length > self.server.max_body:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "payload too large"})
            return
        body = self.read_body(length)
        status, doc = self.server.on_post(body, self.peer())
        self._answer(status, doc)

    def _answer(self, status: HTTPStatus, doc: Mapping[str, Any]) -> None:
        headers = {"WWW-Authenticate": CHALLENGE} if status == HTTPStatus.UNAUTHORIZED else {}
        self.answer(status, "application/json", json.dumps(doc).encode() + b"\n", headers)


__all__ = [
    "DEFAULT_READ_TIMEOUT_S",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEFAULT_WORKERS",
    "MAX_BODY",
    "Answer",
    "GuardedServer",
    "WebhookServer",
]
