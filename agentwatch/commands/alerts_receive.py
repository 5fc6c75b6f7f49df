"""``agentwatch alerts receive``: accept Alertmanager webhooks and hand the alerts on."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agentwatch.commands.alerts_group import add_catalog_option, add_response_options
from agentwatch.commands.options import add_db_option
from agentwatch.settings import Settings

log = logging.getLogger("agentwatch.alerts.alertmanager.receive")


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Serve an HTTP endpoint for Alertmanager's webhook_configs: each webhook v4 "
        "payload POSTed to it is checked (400 when it is not one) and its alerts are "
        "passed on as agentwatch alerts, printed as JSON lines. Alertmanager re-sends "
        "firing alerts; only changes of state are passed on unless --all."
    )
    p = parser
    p.add_argument(
        "--host",
        default=settings.value("receive", "host"),
        help="address to listen on (default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=settings.value("receive", "port"),
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
        "`alerts run` does for its own alerts",
    )
    add_db_option(p, settings)
    add_catalog_option(p, settings)
    add_response_options(p, settings)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from agentwatch.alerts.alertmanager.receive import (
        AlertSink,
        ReceiveServer,
        TransitionFilter,
        print_sink,
    )
    from agentwatch.alerts.model import Alert
    from agentwatch.alerts.response.respond import response_from_args

    sinks: list[AlertSink] = [print_sink]
    response = response_from_args(args) if args.runbooks else None
    if response is not None:
        sinks.append(response.received_sink())

    def fan_out(alerts: Sequence[Alert]) -> None:
        for each in sinks:
            each(alerts)

    sink: AlertSink = fan_out if args.all else TransitionFilter(fan_out)
    server = ReceiveServer(args.host, args.port, sink)
    log.info("receiving Alertmanager webhooks", extra={"url": server.url})
    print(f"listening on {server.url} (POST Alertmanager webhooks; Ctrl-C stops)", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0
