"""``agentwatch alerts receive``: accept Alertmanager webhooks and hand the alerts on."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agentwatch.commands.alerts_group import (
    add_catalog_option,
    add_response_options,
    catalog_from_args,
    response_from_args,
)
from agentwatch.commands.options import (
    add_db_option,
    at_least_one,
    duration_help,
    port,
    positive_seconds,
)
from agentwatch.settings import ConfigError, Settings

log = logging.getLogger("agentwatch.alerts.alertmanager.receive")


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    from agentwatch.alerts.alertmanager.access import BASIC_AUTH_ENV, TOKEN_ENV

    parser.description = (
        "Serve an HTTP endpoint for Alertmanager's webhook_configs: each webhook v4 "
        "payload POSTed to it is checked (400 when it is not one) and its alerts are "
        "passed on as agentwatch alerts, printed as JSON lines. Alertmanager re-sends "
        "firing alerts; only changes of state are passed on unless --all. Requests "
        "need a bearer token or basic auth (as Alertmanager's http_config sends them); "
        "others get 401. See docs/security.md."
    )
    p = parser
    p.add_argument(
        "--host",
        default=settings.value("receive", "host"),
        help="address to listen on (default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=port,
        default=settings.value("receive", "port"),
        help="port to listen on, 0 for any free one (printed at start) (default %(default)s)",
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
        default=settings.value("receive", "token_file"),
        help=f"bearer tokens, one per line (env AGENTWATCH_RECEIVE_TOKEN_FILE; or {TOKEN_ENV})",
    )
    auth.add_argument(
        "--basic-auth-file",
        metavar="PATH",
        default=settings.value("receive", "basic_auth_file"),
        help="'user:password' lines for basic auth (env AGENTWATCH_RECEIVE_BASIC_AUTH_FILE; "
        f"or {BASIC_AUTH_ENV}=user:password)",
    )
    auth.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="run without credentials beyond loopback, or with --runbooks anywhere: anyone "
        "who reaches the port can post alerts (and, with --runbooks, halt agents); default: "
        "refuse to start",
    )
    auth.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=settings.value("receive", "tls_cert"),
        help="serve HTTPS with this certificate (chain) file (env AGENTWATCH_RECEIVE_TLS_CERT)",
    )
    auth.add_argument(
        "--tls-key",
        metavar="PEM",
        default=settings.value("receive", "tls_key"),
        help="the certificate's private key (env AGENTWATCH_RECEIVE_TLS_KEY)",
    )
    limits = p.add_argument_group("limits")
    limits.add_argument(
        "--workers",
        type=at_least_one,
        default=settings.value("receive", "workers"),
        help="connections served at once; more are answered 503 (default %(default)s)",
    )
    limits.add_argument(
        "--read-timeout",
        type=positive_seconds,
        metavar="DURATION",
        default=settings.value("receive", "read_timeout"),
        help=duration_help(
            "longest wait for the client's next bytes", settings.value("receive", "read_timeout")
        ),
    )
    limits.add_argument(
        "--request-timeout",
        type=positive_seconds,
        metavar="DURATION",
        default=settings.value("receive", "request_timeout"),
        help=duration_help(
            "longest a request may take to arrive in full, keep-alive wait included; "
            "then its connection is closed",
            settings.value("receive", "request_timeout"),
        ),
    )
    limits.add_argument(
        "--max-body",
        type=at_least_one,
        metavar="BYTES",
        default=settings.value("receive", "max_body"),
        help="larger payloads are answered 413 (default %(default)s)",
    )
    add_db_option(p, settings)
    add_catalog_option(p, settings)
    add_response_options(p, settings)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from agentwatch.alerts.alertmanager.access import BASIC_AUTH_ENV, TOKEN_ENV, WebhookAuth
    from agentwatch.alerts.alertmanager.receive import (
        AlertSink,
        ReceiveServer,
        TransitionFilter,
        catalogued_only,
        print_sink,
        tls_context,
    )
    from agentwatch.alerts.model import Alert
    from agentwatch.http_guard import is_loopback

    auth = WebhookAuth.load(args.token_file, args.basic_auth_file)
    if args.runbooks and not auth.required and not args.insecure_no_auth:
        raise ConfigError(
            "alerts receive --runbooks needs credentials: --token-file or --basic-auth-file "
            f"(or {TOKEN_ENV} / {BASIC_AUTH_ENV}); --insecure-no-auth to run without"
        )
    if not auth.required and not is_loopback(args.host) and not args.insecure_no_auth:
        raise ConfigError(
            f"--host {args.host} is beyond loopback and no credentials are configured: give "
            f"--token-file or --basic-auth-file (or {TOKEN_ENV} / {BASIC_AUTH_ENV}), or "
            "--insecure-no-auth to accept alerts from anyone who reaches the port"
        )
    if not auth.required:
        log.warning("receiving webhooks WITHOUT authentication: anyone reaching the port may post")
    tls = tls_context(args.tls_cert, args.tls_key)
    sinks: list[AlertSink] = [print_sink]
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
