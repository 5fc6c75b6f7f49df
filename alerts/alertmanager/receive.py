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

import argparse
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

from agentwatch.alerts.alertmanager.access import BASIC_AUTH_ENV, TOKEN_ENV, WebhookAuth
from agentwatch.alerts.alertmanager.server import (
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_WORKERS,
    MAX_BODY,
    Answer,
    GuardedServer,
)
from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.model import Alert, AlertState
from agentwatch.alerts.notify.receivers import rfc3339
from agentwatch.alerts.response.respond import add_response_options, response_from_args
from agentwatch.commands.alerts_group import (
    add_catalog_option,
    alerts_subparsers,
    catalog_from_args,
)
from agentwatch.commands.options import add_db_option
from agentwatch.settings import ConfigError, Settings

log = logging.getLogger(__name__)

AlertSink = Callable[[Sequence[Alert]], None]
SinkFactory = Callable[[argparse.Namespace], AlertSink]
_SINK_FACTORIES: list[SinkFactory] = []
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


class ReceiveServer(GuardedServer):
    """The webhook endpoint: each authenticated POST's payload goes to the sink.

    The sink is called from one thread at a time; the other arguments are
    :class:`GuardedServer`'s.
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


def add_sink_factory(factory: SinkFactory) -> None:
    """Have ``alerts receive`` hand alerts to ``factory(args)`` instead of printing them.

    Called from another command module's ``register`` (the runbooks, say); with several,
    each gets every batch, in order.
    """
    _SINK_FACTORIES.append(factory)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    p = alerts_subparsers(sub).add_parser(
        "receive",
        help="accept Alertmanager webhooks (so Prometheus alerts can trigger runbooks)",
        description=(
            "Serve an HTTP endpoint for Alertmanager's webhook_configs: each webhook v4 "
            "payload POSTed to it is checked (400 when it is not one) and its alerts are "
            "passed on as agentwatch alerts, printed as JSON lines. Alertmanager re-sends "
            "firing alerts; only changes of state are passed on unless --all. Requests "
            "need a bearer token or basic auth (as Alertmanager's http_config sends them); "
            "others get 401. See docs/security.md."
        ),
    )
    p.add_argument(
        "--host",
        default=settings.get("receive", "host", "127.0.0.1"),
        help="address to listen on (default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=settings.get("receive", "port", 9095),
        help="port to listen on (default %(default)s)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="pass on every alert of every webhook, repeats included",
    )
    p.add_argument(
        "--runbooks",
        action="store_true",
        help="also notify and run each firing alert's runbook (by its runbook_url), as "
        "`alerts run` does for its own alerts; only for agents in --catalog, and only with "
        "credentials configured (or --insecure-no-auth)",
    )
    auth = p.add_argument_group(
        "access", "who may POST (secrets come from files or the environment, never flags)"
    )
    auth.add_argument(
        "--token-file",
        metavar="PATH",
        default=settings.get("receive", "token_file", ""),
        help=f"bearer tokens, one per line (env AGENTWATCH_RECEIVE_TOKEN_FILE; or {TOKEN_ENV})",
    )
    auth.add_argument(
        "--basic-auth-file",
        metavar="PATH",
        default=settings.get("receive", "basic_auth_file", ""),
        help="'user:password' lines for basic auth (env AGENTWATCH_RECEIVE_BASIC_AUTH_FILE; "
        f"or {BASIC_AUTH_ENV}=user:password)",
    )
    auth.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="run --runbooks without credentials: anyone who reaches the port can halt agents",
    )
    auth.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=settings.get("receive", "tls_cert", ""),
        help="serve HTTPS with this certificate (chain) file (env AGENTWATCH_RECEIVE_TLS_CERT)",
    )
    auth.add_argument(
        "--tls-key",
        metavar="PEM",
        default=settings.get("receive", "tls_key", ""),
        help="the certificate's private key (env AGENTWATCH_RECEIVE_TLS_KEY)",
    )
    limits = p.add_argument_group("limits")
    limits.add_argument(
        "--workers",
        type=int,
        default=settings.get("receive", "workers", DEFAULT_WORKERS),
        help="connections served at once; more are answered 503 (default %(default)s)",
    )
    limits.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        default=settings.get("receive", "read_timeout", DEFAULT_READ_TIMEOUT_S),
        help="longest wait for the client's next bytes (default %(default)s)",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        default=settings.get("receive", "request_timeout", DEFAULT_REQUEST_TIMEOUT_S),
        help="longest a request may take to arrive in full, keep-alive wait included; "
        "then its connection is closed (default %(default)s)",
    )
    limits.add_argument(
        "--max-body",
        type=int,
        metavar="BYTES",
        default=settings.get("receive", "max_body", MAX_BODY),
        help="larger payloads are answered 413 (default %(default)s)",
    )
    add_db_option(p, settings)
    add_catalog_option(p, settings)
    add_response_options(p, settings)
    p.set_defaults(handler=_run)


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2 or newer) for ``--tls-cert``/``--tls-key``, or None."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert} and key {key}: {exc}") from None
    return context


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


def _run(args: argparse.Namespace) -> int:
    auth = WebhookAuth.load(args.token_file, args.basic_auth_file)
    if args.runbooks and not auth.required and not args.insecure_no_auth:
        raise ConfigError(
            "alerts receive --runbooks needs credentials: --token-file or --basic-auth-file "
            f"(or {TOKEN_ENV} / {BASIC_AUTH_ENV}); --insecure-no-auth to run without"
        )
    if not auth.required:
        log.warning("receiving webhooks WITHOUT authentication: anyone reaching the port may post")
    tls = tls_context(args.tls_cert, args.tls_key)
    sinks = [factory(args) for factory in _SINK_FACTORIES] or [print_sink]
    if args.runbooks:
        catalog = catalog_from_args(args, "runbooks run for no agent")
        response = response_from_args(args, catalog)
        if response is not None:
            sinks.append(response.received_sink(catalogued_only(catalog)))

    def fan_out(alerts: Sequence[Alert]) -> None:
        for each in sinks:
            each(alerts)

    sink: AlertSink = fan_out if args.all else TransitionFilter(fan_out)
    server = ReceiveServer(
        args.host,
        args.port,
        sink,
        auth=auth,
        tls=tls,
        max_body=args.max_body,
        workers=args.workers,
        read_timeout_s=args.read_timeout,
        request_timeout_s=args.request_timeout,
    )
    log.info("receiving Alertmanager webhooks", extra={"url": server.url, "auth": auth.required})
    print(f"listening on {server.url} (POST Alertmanager webhooks; Ctrl-C stops)", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0
