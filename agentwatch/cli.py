"""The ``agentwatch`` command: one entry point, a subcommand per job.

Each command module exposes ``register(subparsers, settings)``, which adds its parser
and sets ``handler`` to a function of the parsed arguments returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from agentwatch import __version__
from agentwatch.logs import setup_logging
from agentwatch.settings import ConfigError, Settings, load_settings

COMMAND_MODULES = (
    "agentwatch.broker",
    "agentwatch.ingest.sim.simulate",
    "agentwatch.processors.landing.run",
    "agentwatch.processors.query.sql",
    "agentwatch.commands.contract",
    "agentwatch.commands.cost",
    "agentwatch.commands.drift",
    "agentwatch.commands.breaker",
    "agentwatch.alerts.response.runbooks",
    "agentwatch.commands.alerts_run",
    "agentwatch.commands.alerts_backtest",
    "agentwatch.commands.alerts_silence",
    "agentwatch.alerts.alertmanager.export",
    "agentwatch.alerts.alertmanager.receive",
    "agentwatch.commands.alerts_routes",
    "agentwatch.commands.dashboards",
    "agentwatch.commands.demo",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwatch",
        description=(
            "Observability and drift monitoring for fleets of AI agents. Agents emit trace "
            "events into Kafka; processors land them in DuckDB and export metrics to "
            "Prometheus. Settings come from flags, then AGENTWATCH_* environment variables, "
            "then a TOML config file (--config, $AGENTWATCH_CONFIG or ./agentwatch.toml)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"agentwatch {__version__}")
    _add_global_options(parser, settings)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, settings)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--log-level",
        default=settings.get("log", "level", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log level (env AGENTWATCH_LOG_LEVEL; default %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        default=settings.get("log", "format", "text" if sys.stderr.isatty() else "json"),
        choices=["json", "text"],
        help="structured JSON lines or text (env AGENTWATCH_LOG_FORMAT; default %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # --config may stand anywhere: it is read before the parser is built from it.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, args_list = pre.parse_known_args(args_list)
    try:
        settings = load_settings(known.config)
        parser = build_parser(settings)
    except ConfigError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    setup_logging(args.log_level, args.log_format)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except ConfigError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
