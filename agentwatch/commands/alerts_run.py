"""``agentwatch alerts run``: evaluate the rules every interval, or once and print them.

The loop, its sinks and the rule files it follows are in
:mod:`agentwatch.alerts.evaluation.loop`; this module wires them: the log sink, the
registry recorder, /metrics, and the response (the runbooks per rule as soon as it is
decided, supervision and notifications per evaluation).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from rich import box
from rich.console import Console

from agentwatch.alerts.evaluation.evaluator import (
    AlertSink,
    Evaluation,
    Evaluator,
    RuleSink,
    never_urgent,
)
from agentwatch.alerts.evaluation.loop import Sources, fan_out, log_sink, run_loop
from agentwatch.alerts.evaluation.metrics import serve_metrics
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.respond import NO_CATALOG_RESPONSE
from agentwatch.alerts.response.runbook_files import Runbook
from agentwatch.alerts.rules import Rule
from agentwatch.commands.alerts_group import (
    add_catalog_option,
    add_response_options,
    add_rules_option,
    response_from_args,
)
from agentwatch.commands.options import (
    add_db_option,
    add_metrics_options,
    duration_help,
    positive_seconds,
)
from agentwatch.durations import TIME_EXAMPLES, human_duration, time_argument
from agentwatch.settings import ConfigError, Settings
from agentwatch.terminal import Table, literal

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- output


def print_evaluation(evaluation: Evaluation, out: TextIO) -> None:
    """Firing alerts as a table, then pending ones, groups held without a verdict, errors."""
    console = Console(file=out, width=max(120, Console(file=out).width))
    at = evaluation.at
    console.print(f"[bold]Alerts at {at.isoformat(timespec='seconds')}[/]")
    for title, alerts in (("Firing", evaluation.firing), ("Pending", evaluation.pending)):
        if not alerts:
            console.print(f"{title}: none")
            continue
        table = Table(title=f"{title} ({len(alerts)})", box=box.SIMPLE_HEAD, title_justify="left")
        for column in ("rule", "severity", "agent", "labels", "value", "since", "summary"):
            table.add_column(column, overflow="fold")
        for alert in sorted(alerts, key=_order):
            table.add_row(
                alert.rule,
                alert.severity,
                alert.agent_id or "",
                _other_labels(alert),
                "" if alert.value is None else f"{alert.value:.4g}",
                _ago(at, alert.starts_at),
                alert.annotations.get("summary", ""),
            )
        console.print(table)
    if evaluation.held:
        table = Table(
            title=f"No verdict ({len(evaluation.held)}): too few samples or no value",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        for column in ("rule", "labels", "samples", "reason"):
            table.add_column(column, overflow="fold")
        for v in sorted(evaluation.held, key=lambda v: (v.rule, sorted(v.labels.items()))):
            labels = {k: x for k, x in v.labels.items() if k not in ("alertname", "severity")}
            table.add_row(v.rule, _labels_text(labels), str(v.samples or 0), v.reason)
        console.print(table)
    for rule, error in sorted(evaluation.errors.items()):
        console.print(f"[red]{literal(rule)}: not evaluated: {literal(error)}[/]")


def _order(alert: Alert) -> tuple[int, str, str]:
    rank = {"critical": 0, "error": 1, "warning": 2, "info": 3}.get(alert.severity, 4)
    return rank, alert.rule, alert.agent_id or ""


def _other_labels(alert: Alert) -> str:
    skip = {"alertname", "severity", "agent_id"}
    return _labels_text({k: v for k, v in alert.labels.items() if k not in skip})


def _labels_text(labels: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _ago(now: dt.datetime, then: dt.datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    return f"{then.strftime('%H:%M:%S')} ({human_duration(seconds)} ago)"


# --------------------------------------------------------------------------- command


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Evaluate the alert rules (--rules) over the landed events and the agent "
        "catalog (--catalog): each alert moves through pending, firing and resolved, "
        "every transition is appended to the alert_events table next to --db, and the "
        "state survives restarts. --once evaluates a single time and prints the firing "
        "alerts. Firing alerts are notified (--notify-config) and their runbooks run, "
        "which may open circuit breakers on the control topic (--bootstrap); "
        "--no-response only records. --metrics-port serves the alert and breaker "
        "states for Prometheus. The catalog is opened read-only; safe while "
        "`agentwatch process` runs."
    )
    p = parser
    add_db_option(p, settings)
    add_catalog_option(p, settings)
    add_rules_option(p, settings)
    add_response_options(p, settings)
    add_metrics_options(p, settings, "alerts", "the alert and breaker states")
    p.add_argument(
        "--interval",
        type=positive_seconds,
        default=settings.value("alerts", "interval"),
        metavar="DURATION",
        help=duration_help("time between evaluations", settings.value("alerts", "interval")),
    )
    p.add_argument("--once", action="store_true", help="evaluate once, print the alerts, exit")
    p.add_argument(
        "--at",
        type=time_argument,
        metavar="TIME",
        help=f"with --once: evaluate as of this time instead of now, to look back at past "
        f"traffic: {TIME_EXAMPLES} (UTC without a zone)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.at is not None and not args.once:
        print("agentwatch alerts run: --at needs --once", file=sys.stderr)
        return 2
    if args.catalog is None:
        print(
            "agentwatch: no agent catalog (--catalog): catalog thresholds and governance "
            f"apply to no agent; {NO_CATALOG_RESPONSE}",
            file=sys.stderr,
        )
    sources = Sources(args.catalog, args.rules)  # ConfigError: exit 2 with the message
    response = response_from_args(args, sources.catalog)
    if response is not None:
        _check_runbooks(sources.rules, response.runbooks, args.runbook_dir)
    if args.once:  # a live evaluator waits for the processor to create the lake
        from agentwatch.processors.store.attach import require_lake
        from agentwatch.processors.store.location import locate

        require_lake(locate(args.db))
    # Rules whose runbook opens a breaker are decided first, and their runbooks run at once.
    urgent = response.urgent if response is not None else never_urgent
    evaluator = Evaluator(args.db, sources.rules, sources.catalog, urgent=urgent)
    sinks: list[AlertSink] = [log_sink]
    if args.catalog is not None:  # the registry's history follows edits of the catalog file
        from agentwatch.alerts.governance.registry import recorder

        record = recorder(args.db, args.catalog, f"catalog:{args.catalog.name}")
        sinks.append(lambda evaluation: record())
    metrics = serve_metrics(args, lambda: sources.rules, response)
    if metrics is not None:
        sinks.append(metrics.collector.observe)
    on_rule: RuleSink | None = None
    if response is not None:
        on_rule = response.rule_sink()
        sinks.append(response.evaluation_sink(run_runbooks=False))
    sink = fan_out(sinks)
    try:
        return _evaluate(args, sources, evaluator, sink, on_rule)
    finally:
        if metrics is not None:
            metrics.close()


def _check_runbooks(
    rules: Sequence[Rule], runbooks: Mapping[str, Runbook], directory: Path
) -> None:
    """Refuse to start when a rule's ``runbook_url`` names a runbook that is not there: its
    alerts would contain nothing, with only a warning in the log when they fire."""
    from agentwatch.alerts.response.runbook_files import dangling

    missing = [r for r in rules if dangling(r.annotations.get("runbook_url", ""), runbooks)]
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more rules)" if len(missing) > 1 else ""
        raise ConfigError(
            f"{first.source}: rule {first.name}: runbook_url "
            f"{first.annotations['runbook_url']} names no runbook in {directory}{more}"
        )


def _evaluate(
    args: argparse.Namespace,
    sources: Sources,
    evaluator: Evaluator,
    sink: AlertSink,
    on_rule: RuleSink | None,
) -> int:
    if args.once:
        evaluation = evaluator.evaluate(args.at, on_rule=on_rule)
        sink(evaluation)
        print_evaluation(evaluation, sys.stdout)
        return 1 if evaluation.errors else 0
    stop = threading.Event()
    restore = _stop_on_sigterm(stop)
    log.info(
        "alert evaluation started",
        extra={
            "db": str(args.db),
            "rules": len(sources.rules),
            "agents": len(sources.catalog),
            "interval_s": args.interval,
        },
    )
    try:
        run_loop(
            evaluator,
            sink,
            interval=args.interval,
            stop=stop,
            on_rule=on_rule,
            before_each=lambda: sources.reload(evaluator),
        )
    finally:
        restore()
    return 0


def _stop_on_sigterm(stop: threading.Event) -> Callable[[], None]:
    """Let SIGTERM end the loop after the current evaluation; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handle)

    def undo() -> None:
        signal.signal(signal.SIGTERM, previous)

    return undo
