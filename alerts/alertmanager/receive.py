"""``agentwatch alerts receive``: accept Alertmanager webhooks and hand the alerts on.

Why: alerts that an existing Prometheus and Alertmanager raise (on agentwatch's exported
metrics or on anything else) can then trigger agentwatch runbooks. Point an Alertmanager
``webhook_configs`` url at this server; each POSTed webhook v4 payload is checked, turned
into :class:`~agentwatch.alerts.model.Alert` objects and given to a sink callable.

Answers follow what Alertmanager expects: 200 once the sink took the alerts; 400 for a
payload that is not a webhook v4 document (retrying cannot help); 500 when the sink
failed, so Alertmanager retries; 401 without a valid credential, before anything is
read (see :mod:`~agentwatch.alerts.alertmanager.server`). The sink is called from one
thread at a time. With ``--runbooks``, runbooks act only on agents the catalog names.

Alertmanager re-sends firing alerts (every ``repeat_interval``, and with every change in
their group); :class:`TransitionFilter` passes on only the changes of state, for sinks
such as runbooks that must act once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import ssl
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from agentwatch.alerts.alertmanager.server import (
    Answer,
    WebhookServer,
)
from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.model import Alert, AlertState
from agentwatch.alerts.notify.receivers import rfc3339
from agentwatch.http_guard import server_tls_context
from agentwatch.settings import ConfigError

log = logging.getLogger(__name__)

AlertSink = Callable[[Sequence[Alert]], None]
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


class ReceiveServer(WebhookServer):
    """The webhook endpoint: each authenticated POST's payload goes to the sink.

    The sink is called from one thread at a time; the other arguments are
    :class:`WebhookServer`'s.
    """

    def __init__(self, host: str, port: int, sink: AlertSink, **options: Any) -> None:
        self.sink = sink
        self.sink_lock = threading.Lock()
        self.received = 0
        super().__init__(host, port, self._take, **options)

    def _take(self, body: bytes, peer: str) -> Answer:
        try:
            alerts = parse_webhook(json.loads(body))
        except (ValueError, RecursionError) as exc:  # JSON errors and PayloadError
            log.warning("rejected a webhook", extra={"error": str(exc), "peer": peer})
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        try:
            with self.sink_lock:
                self.sink(alerts)
                self.received += len(alerts)
        except Exception as exc:
            log.exception("the alert sink failed; answering 500 so the sender retries")
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"sink failed: {exc}"}
        return HTTPStatus.OK, {"status": "ok", "alerts": len(alerts)}


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


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """A server TLS context for ``--tls-cert``/``--tls-key``, or None without them."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("--tls-cert and --tls-key go together")
    return server_tls_context(cert, key)


def catalogued_only(catalog: Catalog) -> Callable[[Alert], bool]:
    """Runbooks act only on agents the catalog names: a webhook cannot invent a victim."""

    def known(alert: Alert) -> bool:
        if alert.agent_id in catalog:
            return True
        log.warning(
            "no runbook for an alert about an agent not in the catalog",
            extra={"rule": alert.rule, "agent_id": alert.agent_id, "catalog": catalog.source},
        )
        return False

    return known
