"""``agentwatch broker``: start, stop or inspect the local single-node Kafka broker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwatch.broker.launcher import broker_status, start_broker, stop_broker
from agentwatch.broker.ports import HOST
from agentwatch.broker.runtime import BrokerError
from agentwatch.broker.tls import SECURITY_MODES, BrokerSecurity
from agentwatch.commands.options import at_least_one, duration_help, fixed_port, positive_seconds
from agentwatch.durations import format_duration
from agentwatch.settings import Settings

EXIT_NOT_RUNNING = 3


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Run a real Apache Kafka 4.x broker (KRaft, one node, 127.0.0.1) from the jars "
        "that `make install` fetched into .kafka/libs, or from $KAFKA_HOME/libs. All its "
        "state (config, data, broker.log, broker.json) lives in the data directory."
    )
    actions = parser.add_subparsers(dest="broker_action", metavar="ACTION", required=True)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir",
        type=Path,
        default=Path(settings.value("broker", "data_dir")),
        help="broker data directory (env AGENTWATCH_BROKER_DATA_DIR; default %(default)s)",
    )

    start = actions.add_parser(
        "start",
        parents=[data_dir],
        help="start the broker and wait until it accepts requests",
        description=(
            "Start the broker detached and return once it serves Kafka requests. "
            "Does nothing (and succeeds) if one already runs on the data directory."
        ),
    )
    start.add_argument(
        "--port",
        type=fixed_port,
        default=settings.value("broker", "port"),
        help="client port on 127.0.0.1 (env AGENTWATCH_BROKER_PORT; default %(default)s)",
    )
    start.add_argument(
        "--heap",
        default=settings.value("broker", "heap"),
        help="JVM max heap (env AGENTWATCH_BROKER_HEAP; default %(default)s)",
    )
    start.add_argument(
        "--timeout",
        type=positive_seconds,
        default=settings.value("broker", "start_timeout"),
        metavar="DURATION",
        help=duration_help(
            "how long to wait for the broker to be ready", settings.value("broker", "start_timeout")
        ),
    )
    start.add_argument(
        "--partitions",
        type=at_least_one,
        default=settings.value("broker", "partitions"),
        help="default partitions of a new topic (default %(default)s)",
    )
    start.add_argument(
        "--security",
        choices=SECURITY_MODES,
        default=settings.value("broker", "security"),
        help="plaintext, or sasl_ssl: TLS with a CA made under the data dir and SCRAM-SHA-512 "
        "logins; clients use DATA_DIR/client.toml (env AGENTWATCH_BROKER_SECURITY; "
        "default %(default)s)",
    )
    start.set_defaults(handler=_cmd_start)

    stop = actions.add_parser(
        "stop",
        parents=[data_dir],
        help="stop the broker (controlled shutdown)",
        description="Send SIGTERM, wait for a clean shutdown, SIGKILL after --timeout.",
    )
    stop.add_argument(
        "--timeout",
        type=positive_seconds,
        default=settings.value("broker", "stop_timeout"),
        metavar="DURATION",
        help=duration_help(
            "how long to wait before SIGKILL", settings.value("broker", "stop_timeout")
        ),
    )
    stop.set_defaults(handler=_cmd_stop)

    status = actions.add_parser(
        "status",
        parents=[data_dir],
        help="show whether the broker runs (exit 0) or not (exit 3)",
    )
    status.set_defaults(handler=_cmd_status)


def _cmd_start(args: argparse.Namespace) -> int:
    running = broker_status(args.data_dir)
    if running is not None:
        note = "" if running.port == args.port else f" (not on the requested port {args.port})"
        print(f"broker already running at {running.bootstrap}{note} (pid {running.pid})")
        return 0
    try:
        info = start_broker(
            args.data_dir,
            args.port,
            heap=args.heap,
            timeout=args.timeout,
            partitions=args.partitions,
            security=args.security,
        )
    except BrokerError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    print(f"broker running at {info.bootstrap} (pid {info.pid}, log {info.log_file})")
    if info.client_security is not None:
        config = BrokerSecurity(info.data_dir).client_config
        print(f"{info.security_protocol}: clients connect with --config {config}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    try:
        stopped = stop_broker(args.data_dir, args.timeout)
    except BrokerError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 1
    print("broker stopped" if stopped else f"no broker running on {args.data_dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agentwatch.terminal import Table

    info = broker_status(args.data_dir)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if info is None:
        table.add_row("state", "stopped")
        table.add_row("data dir", str(args.data_dir.resolve()))
    else:
        table.add_row("state", "running")
        table.add_row("pid", str(info.pid))
        table.add_row("bootstrap", info.bootstrap)
        table.add_row("controller", f"{HOST}:{info.controller_port}")
        table.add_row("security", info.security_protocol)
        table.add_row("uptime", format_duration(int(info.uptime)))
        table.add_row("data dir", str(info.data_dir))
        table.add_row("log", str(info.log_file))
    Console(highlight=False).print(table)
    return 0 if info is not None else EXIT_NOT_RUNNING
