"""``agentwatch alerts run``: evaluate the rules every interval, or once and print them.

Each evaluation goes to a *sink*, a function of the :class:`Evaluation` (transitions,
active alerts, verdicts). The command's own sink logs, and the response (notifier,
runbooks, breaker supervision) is a second one; a caller of :func:`run_loop` passes its
own, so the evaluator never needs to know who listens. A sink that raises is logged
and the loop goes on: the transitions are already in ``alert_events``.

The catalog and the rules are re-read when their files change, so a governance edit
(retiring an agent, approving a model) takes effect at the next evaluation; a file
that no longer validates is reported and the previous version stays in force.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from agentwatch.alerts.evaluation.evaluator import AlertSink, Evaluation, Evaluator
from agentwatch.alerts.evaluation.metrics import add_metrics_options, serve_metrics
from agentwatch.alerts.governance.catalog import Catalog, load_catalog
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.respond import NO_CATALOG_RESPONSE
from agentwatch.alerts.rules import Rule, load_rules
from agentwatch.commands.alerts_group import (
    add_catalog_option,
    add_response_options,
    add_rules_option,
    response_from_args,
)
from agentwatch.commands.options import add_db_option
from agentwatch.settings import ConfigError, Settings

log = logging.getLogger(__name__)


def fan_out(sinks: Sequence[AlertSink]) -> AlertSink:
    """One sink that feeds several in order; one that fails does not starve the others."""

    def sink(evaluation: Evaluation) -> None:
        for each in sinks:
            try:
                each(evaluation)
            except Exception:
                log.exception("alert sink failed", extra={"sink": repr(each)})

    return sink


def log_sink(evaluation: Evaluation) -> None:
    """The default sink: one summary line per evaluation that changed something."""
    if evaluation.transitions or evaluation.errors:
        log.info(
            "alerts evaluated",
            extra={
                "at": evaluation.at.isoformat(),
                "transitions": len(evaluation.transitions),
                "firing": len(evaluation.firing),
                "pending": len(evaluation.pending),
                "held": len(evaluation.held),
                "rule_errors": dict(evaluation.errors),
            },
        )


class Sources:
    """The catalog file and the rules directory, re-read when they change on disk."""

    def __init__(self, catalog_path: Path | None, rules_dir: Path) -> None:
        self.catalog_path = catalog_path
        self.rules_dir = rules_dir
        self._stamp = self._stamps()
        self.catalog: Catalog = load_catalog(catalog_path)
        self.rules: list[Rule] = load_rules(rules_dir)

    def _stamps(self) -> tuple[tuple[str, float], ...]:
        paths = [self.catalog_path, *sorted(self.rules_dir.glob("*.yaml"))]
        return tuple((str(p), p.stat().st_mtime) for p in paths if p is not None and p.exists())

    def reload(self, evaluator: Evaluator, *, force: bool = False) -> None:
        """Give the evaluator the files' current versions if they changed and validate.

        ``force`` re-reads even when no modification time moved (a coarse file system
        clock can hide an edit made within the same tick).
        """
        stamp = self._stamps()
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        try:
            catalog = load_catalog(self.catalog_path)
            rules = load_rules(self.rules_dir)
            evaluator.update(rules=rules, catalog=catalog)
        except (ConfigError, ValueError) as exc:
            log.error(
                "catalog or rules not reloaded; the previous ones stay", extra={"error": str(exc)}
            )
            return
        self.catalog, self.rules = catalog, rules
        log.info("catalog and rules reloaded", extra={"agents": len(catalog), "rules": len(rules)})


def run_loop(
    evaluator: Evaluator,
    sink: AlertSink,
    *,
    interval: float,
    stop: threading.Event,
    before_each: Callable[[], None] | None = None,
    max_evaluations: int | None = None,
) -> int:
    """Evaluate every ``interval`` seconds until ``stop`` is set; return how many ran.

    An evaluation that fails (a full disk, say) is logged and retried at the next tick,
    with the alert states as they were before it.
    """
    done = 0
    while not stop.is_set() and (max_evaluations is None or done < max_evaluations):
        started = time.monotonic()
        if before_each is not None:
            before_each()
        try:
            evaluation = evaluator.evaluate()
        except Exception:
            log.exception("evaluation failed; retrying at the next interval")
        else:
            sink(evaluation)
        done += 1
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return done


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
        console.print(f"[red]{rule}: not evaluated: {error}[/]")


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
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
    return f"{then.strftime('%H:%M:%S')} ({text} ago)"


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
    add_metrics_options(p, settings)
    p.add_argument(
        "--interval",
        type=float,
        default=settings.value("alerts", "interval"),
        help="seconds between evaluations (default %(default)s)",
    )
    p.add_argument("--once", action="store_true", help="evaluate once, print the alerts, exit")
    p.add_argument(
        "--at",
        type=_timestamp,
        metavar="TIME",
        help="with --once: evaluate as of this ISO 8601 time (e.g. 2026-11-20T09:30:00Z) "
        "instead of now, to look back at past traffic",
    )
    p.set_defaults(handler=_run)


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _run(args: argparse.Namespace) -> int:
    if args.at is not None and not args.once:
        print("agentwatch alerts run: --at needs --once", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("agentwatch alerts run: --interval must be positive", file=sys.stderr)
        return 2
    if args.catalog is None:
        print(
            "agentwatch: no agent catalog (--catalog): catalog thresholds and governance "
            f"apply to no agent; {NO_CATALOG_RESPONSE}",
            file=sys.stderr,
        )
    sources = Sources(args.catalog, args.rules)  # ConfigError: exit 2 with the message
    evaluator = Evaluator(args.db, sources.rules, sources.catalog)
    response = response_from_args(args, sources.catalog)
    sinks: list[AlertSink] = [log_sink]
    if args.catalog is not None:  # the registry's history follows edits of the catalog file
        from agentwatch.alerts.governance.registry import recorder

        record = recorder(args.db, args.catalog, f"catalog:{args.catalog.name}")
        sinks.append(lambda evaluation: record())
    metrics = serve_metrics(args, lambda: sources.rules, response)
    if metrics is not None:
        sinks.append(metrics.collector.observe)
    if response is not None:
        sinks.append(response.evaluation_sink())
    sink = fan_out(sinks)
    try:
        return _evaluate(args, sources, evaluator, sink)
    finally:
        if metrics is not None:
            metrics.close()


def _evaluate(
    args: argparse.Namespace, sources: Sources, evaluator: Evaluator, sink: AlertSink
) -> int:
    if args.once:
        evaluation = evaluator.evaluate(args.at)
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
