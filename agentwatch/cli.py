"""The ``agentwatch`` command: one entry point, a table of subcommands.

Each row of :data:`COMMANDS` names a command, its one-line help and the thin module
under :mod:`agentwatch.commands` whose ``register(parser, settings)`` adds its options
and sets ``handler`` (a function of the parsed arguments returning an exit code).
Only the chosen command's module is imported, and those modules import the packages
that do the work when the handler runs, so ``agentwatch --version`` or ``agentwatch sql``
do not pay for scipy, matplotlib or Kafka. ``--help`` lists every command from the table.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentwatch import __version__
from agentwatch.errors import first_line
from agentwatch.kafka import configure as configure_kafka
from agentwatch.kafka import security_from_settings
from agentwatch.native import return_freed_memory
from agentwatch.processors.store.location import configure as configure_store
from agentwatch.settings import ConfigError, Settings, load_settings

Handler = Callable[[argparse.Namespace], int]
Register = Callable[[argparse.ArgumentParser, Settings], None]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``target`` is ``module`` or ``module:function`` (default ``register``);
    a group has ``subcommands`` instead and only a description of its own."""

    name: str
    help: str
    target: str = ""
    description: str = ""
    subcommands: tuple[Command, ...] = ()

    def register(self) -> Register:
        module, _, function = self.target.partition(":")
        found: Register = getattr(importlib.import_module(module), function or "register")
        return found


_C = "agentwatch.commands."

ALERTS = (
    Command("run", "evaluate the alert rules every interval (or once, and print the alerts)",
            _C + "alerts_run"),
    Command("backtest",
            "replay the rules over stored history: what would have fired, when, how often",
            _C + "alerts_backtest"),
    Command("silence", "mute notifications of matching alerts for a while",
            _C + "alerts_silence:register_silence"),
    Command("silences", "list silences", _C + "alerts_silence:register_silences"),
    Command("expire", "end a silence now", _C + "alerts_silence:register_expire"),
    Command("export-prometheus",
            "write the alert rules as Prometheus alerting rules over the exported metrics",
            _C + "alerts_export"),
    Command("receive", "accept Alertmanager webhooks (so Prometheus alerts can trigger runbooks)",
            _C + "alerts_receive"),
    Command("routes", "check the notification config; show which receivers an alert would reach",
            _C + "alerts_routes"),
    Command("approve",
            "approve a runbook step that waits for a person, and go on with the run",
            _C + "alerts_approve"),
)  # fmt: skip

COMMANDS = (
    Command("broker", "start, stop or inspect the local single-node Kafka broker",
            _C + "broker"),
    Command("simulate", "run a simulated fleet of AI agents that writes trace events into Kafka",
            _C + "simulate"),
    Command("process",
            "consume trace events from Kafka and land them in DuckDB-queryable storage",
            _C + "process"),
    Command("sql", "run read-only SQL over the events, dead letters and metrics", _C + "sql"),
    Command("store", "maintain the lake, migrate an old data dir, attach from plain DuckDB",
            _C + "store"),
    Command("contract", "the trace-event contract: its JSON Schema, or check events against it",
            _C + "contract"),
    Command("cost", "show the LLM pricing table, or reprice stored events after it changes",
            _C + "cost"),
    Command("drift", "detect drift and regressions per agent, prompt version and model",
            _C + "drift"),
    Command("breaker", "show, open or close the circuit breakers that halt agents",
            _C + "breaker"),
    Command("alerts", "alert rules, notifications and the agent catalog",
            description="Evaluate alert rules over the landed events and the agent catalog, "
            "and manage what happens to the alerts. See docs/alerts.md.",
            subcommands=ALERTS),
    Command("dashboards",
            "write the Grafana dashboards, or render the fleet overview as PNG and HTML",
            _C + "dashboards"),
    Command("agents", "the agent registry: list, show, history, diff, review access, retire",
            _C + "agents"),
    Command("releases", "register, approve, stage and list agent releases", _C + "releases"),
    Command("archive", "verify an evidence archive written when an agent was retired",
            _C + "archive"),
    Command("otlp",
            "receive OpenTelemetry traces (OTLP/HTTP and gRPC) and turn them into events",
            _C + "otlp"),
    Command("demo", "run broker, processor and a simulated fleet for a while, then print a summary",
            _C + "demo"),
)  # fmt: skip

_GLOBAL_WITH_VALUE = frozenset({"--config", "--log-level", "--log-format"})


def build_parser(
    settings: Settings, chosen: Sequence[str] | None = None
) -> argparse.ArgumentParser:
    """The whole parser, or (``chosen``: the command words, e.g. ``["alerts", "run"]``) one
    where only the chosen commands are filled in and the others are names with their help."""
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
    _add_commands(sub, COMMANDS, settings, chosen)
    return parser


def _add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    table: Sequence[Command],
    settings: Settings,
    chosen: Sequence[str] | None,
) -> None:
    word = chosen[0] if chosen else None
    for command in table:
        parser = sub.add_parser(
            command.name, help=command.help, description=command.description or None
        )
        if chosen is not None and command.name != word:
            continue  # named in --help only; an unknown word is argparse's error to report
        if command.subcommands:
            group = parser.add_subparsers(
                dest=f"{command.name}_command", metavar="SUBCOMMAND", required=True
            )
            rest = None if chosen is None else chosen[1:]
            _add_commands(group, command.subcommands, settings, rest)
        else:
            command.register()(parser, settings)


def command_words(argv: Sequence[str]) -> list[str]:
    """The command words of ``argv`` (``alerts run --once`` -> ``["alerts", "run"]``)."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_WITH_VALUE and not words:
            skip = True
        elif arg.startswith("-"):
            if words:
                break
        else:
            words.append(arg)
            if len(words) == 2:
                break
    return words


def _add_global_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--log-level",
        default=settings.value("log", "level"),
        choices=["debug", "info", "warning", "error"],
        help="log level (env AGENTWATCH_LOG_LEVEL; default %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        default=settings.value("log", "format") or ("text" if sys.stderr.isatty() else "json"),
        choices=["json", "text"],
        help="structured JSON lines or text (env AGENTWATCH_LOG_FORMAT; default %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return_freed_memory()  # before any command module imports polars
    args_list = list(sys.argv[1:] if argv is None else argv)
    # --config may stand anywhere: it is read before the parser is built from it.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, args_list = pre.parse_known_args(args_list)
    try:
        settings = load_settings(known.config)
        configure_kafka(security_from_settings(settings))
        configure_store(settings.value("storage", "data_path"))
        parser = build_parser(settings, command_words(args_list))
    except ConfigError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    from agentwatch.logs import setup_logging

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
    except (OSError, OverflowError) as exc:
        return _stopped(exc, args.log_level)
    except Exception as exc:
        if not _from_duckdb(exc):
            raise
        return _stopped(exc, args.log_level)


def _stopped(exc: BaseException, log_level: str) -> int:
    """A command stopped by what it was given (a path that is a directory, a port out of
    range, a file that is not a lake): one line, exit 1; the traceback at debug level."""
    if log_level.upper() == "DEBUG":
        raise exc
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, OverflowError):
        message = f"a number or duration is out of range ({first_line(exc)})"
    else:
        message = first_line(exc)
    print(f"agentwatch: {message}", file=sys.stderr)
    return 1


def _from_duckdb(exc: BaseException) -> bool:
    """True for DuckDB's errors, told by their module so that a command needing no DuckDB
    does not import it to find out."""
    return type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb")


if __name__ == "__main__":
    raise SystemExit(main())
