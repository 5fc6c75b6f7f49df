"""``agentwatch alerts receive``: accept Alertmanager webhooks and hand the alerts on.

Why: alerts that an existing Prometheus and Alertmanager raise (on agentwatch's exported
metrics or on anything else) can then trigger agentwatch runbooks. Point an Alertmanager
``webhook_configs`` url at this server; each POSTed webhook v4 payload is checked, turned
into :class:`~agentwatch.alerts.model.Alert` objects and given to a sink callable.

Answers follow what Alertmanager expects: 200 once the sink took the alerts; 400 for a
payload that is not a webhook v4 document (retrying cannot help); 500 when the sink
failed, so Alertmanager retries. The sink is called from one thread at a time.

Alertmanager re-sends firing alerts (every ``repeat_interval``, and with every change in
their group); :class:`TransitionFilter` passes on only the changes of state, for sinks
such as runbooks that must act once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentwatch.alerts.model import Alert, AlertState
from agentwatch.alerts.notify.receivers import rfc3339

log = logging.getLogger(__name__)

AlertSink = Callable[[Sequence[Alert]], None]
MAX_BODY = 4 * 1024 * 1024
_ZERO_YEAR = 1  # Go's zero time, 0001-01-01: no end known
_FRACTION = re.compile(r"(\.\d{6})\d+")


class PayloadError(ValueError):
    """A body that is not an Alertmanager webhook v4 payload."""


def parse_webhook(doc: Any) -> list[Alert]:
    """The alerts of a webhook v4 payload; raises ``PayloadError`` naming what is wrong."""
    if not isinstance(doc, Mapping):
        raise PayloadError("the payload must be a JSON object")
    if doc.get("version") != "4":
        raise PayloadError(f"unsupported webhook version {doc.get('version')!r} (expected '4')")
    if doc.get("status") not in ("firing", "resolved"):
        raise PayloadError("status must be firing or resolved")
    for key in ("receiver", "groupKey"):
        if not isinstance(doc.get(key), str):
            raise PayloadError(f"{key} must be a string")
    raw_alerts = doc.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("alerts must be a list")
    return [_alert(raw, i) for i, raw in enumerate(raw_alerts)]


def _alert(raw: Any, i: int) -> Alert:
    where = f"alerts[{i}]"
    if not isinstance(raw, Mapping):
        raise PayloadError(f"{where} must be an object")
    state = raw.get("status")
    if state not in ("firing", "resolved"):
        raise PayloadError(f"{where}.status must be firing or resolved")
    labels = _string_map(raw.get("labels"), f"{where}.labels")
    annotations = _string_map(raw.get("annotations", {}), f"{where}.annotations")
    if not labels.get("alertname"):
        raise PayloadError(f"{where}.labels.alertname is required")
    starts_at = _time(raw.get("startsAt"), f"{where}.startsAt")
    if starts_at is None:
        raise PayloadError(f"{where}.startsAt is required")
    ends_at = _time(raw.get("endsAt", ""), f"{where}.endsAt")
    alert_state: AlertState = "firing" if state == "firing" else "resolved"
    return Alert(
        rule=labels["alertname"],
        labels=labels,
        annotations=annotations,
        state=alert_state,
        starts_at=starts_at,
        # A firing alert's endsAt is only when Alertmanager would time it out.
        ends_at=ends_at if alert_state == "resolved" else None,
    )


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PayloadError(f"{where} must be an object of strings")
    return dict(value)


def _time(value: Any, where: str) -> dt.datetime | None:
    if value in ("", None):
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be an RFC 3339 time")
    try:
        parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        raise PayloadError(f"{where} is not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{where} needs a time zone: {value!r}")
    return None if parsed.year == _ZERO_YEAR else parsed.astimezone(dt.UTC)


class TransitionFilter:
    """A sink wrapper that passes each alert on only when its state changed."""

    def __init__(self, sink: AlertSink) -> None:
        self.sink = sink
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, alerts: Sequence[Alert]) -> None:
        with self._lock:
            changed = [a for a in alerts if self._last.get(a.fingerprint) != a.state]
            if changed:
                self.sink(changed)  # only remembered once the sink took them
            for a in changed:
                self._last[a.fingerprint] = a.state


class ReceiveServer(ThreadingHTTPServer):
    """The webhook endpoint: POST a payload to any path; GET /-/healthy answers 200."""

    daemon_threads = True

    def __init__(self, host: str, port: int, sink: AlertSink, max_body: int = MAX_BODY):
        self.sink = sink
        self.max_body = max_body
        self.sink_lock = threading.Lock()
        self.received = 0
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that hung up is its own business; anything else is logged with a trace."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client disconnected", extra={"peer": str(client_address)})
        else:
            log.exception("error while serving a webhook", extra={"peer": str(client_address)})

    def start(self) -> threading.Thread:
        """Serve in a background thread (stop with ``shutdown()`` and ``server_close()``)."""
        thread = threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ReceiveServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path in ("/-/healthy", "/-/ready"):
            self._answer(HTTPStatus.OK, {"status": "ok"})
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "POST webhooks; GET /-/healthy"})

    def do_POST(self) -> None:
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        length = int(length_header)
        if length > self.server.max_body:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "payload too large"})
            return
        body = self.rfile.read(length)
        try:
            alerts = parse_webhook(json.loads(body))
        except (ValueError, RecursionError) as exc:  # JSON errors and PayloadError
            log.warning("rejected a webhook", extra={"error": str(exc), "peer": self._peer()})
            self._answer(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        try:
            with self.server.sink_lock:
                self.server.sink(alerts)
                self.server.received += len(alerts)
        except Exception as exc:
            log.exception("the alert sink failed; answering 500 so the sender retries")
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"sink failed: {exc}"})
            return
        self._answer(HTTPStatus.OK, {"status": "ok", "alerts": len(alerts)})

    def _answer(self, status: HTTPStatus, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _peer(self) -> str:
        return str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format % args)


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "state": alert.state,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "starts_at": rfc3339(alert.starts_at),
        "ends_at": rfc3339(alert.ends_at) if alert.ends_at else None,
        "fingerprint": alert.fingerprint,
    }


def print_sink(alerts: Sequence[Alert]) -> None:
    """The standalone sink: one JSON line per alert on standard output."""
    for alert in alerts:
        sys.stdout.write(json.dumps(alert_json(alert), sort_keys=True) + "\n")
    sys.stdout.flush()
