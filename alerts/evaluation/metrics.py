"""Prometheus view of the alert evaluator and the breaker supervisor, rendered on scrape.

Why: the alert states live in the evaluator's memory (and in ``alert_events``) and the
breaker states on the control topic, while Grafana reads Prometheus. ``alerts run
--metrics-port P`` serves them, following Prometheus's own ``ALERTS`` convention:

- ``agentwatch_alerts{alertname,severity,agent_id,state}``: 1 per pending or firing alert
  (``agent_id`` empty for rules that are not per agent); alerts of one rule and agent that
  differ in other labels (a tool, a model) share a series, whose value is their number;
- ``agentwatch_alerts_started_timestamp_seconds{...}``: when the earliest of them started;
- ``agentwatch_alert_rule_info{alertname,severity,runbook_url}``: 1 per rule in force, so a
  dashboard can join each alert to its runbook (``runbook_url`` as the rule writes it);
- ``agentwatch_alerts_last_evaluation_timestamp_seconds``: when the last evaluation ran,
  so a stopped evaluator shows as stale rather than as "no alerts";
- ``agentwatch_breaker_open{agent_id,tool}``: 1 while a breaker halts calls (open or
  half-open, which lets only a probe through), 0 once closed; ``tool`` is empty for the
  agent's own breaker. Known only while the supervisor reaches the control topic.

The collector is fed by the evaluation sink and the supervisor and never does I/O itself,
so a scrape cannot slow down or fail an evaluation.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.governance.metrics import LifecycleCollector
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.breaker import Breaker
from agentwatch.alerts.response.respond import Response
from agentwatch.alerts.rules import Rule
from agentwatch.processors.metrics import series

log = logging.getLogger(__name__)


class AlertsCollector(Collector):
    """Holds the latest evaluation's active alerts and the breakers; renders on scrape.

    ``rules`` is read at each scrape, so rules reloaded from disk show without a restart.
    Updates replace whole immutable snapshots: a scrape from the server's thread sees
    one evaluation or the next, never half of each.
    """

    def __init__(self, rules: Callable[[], Sequence[Rule]] = lambda: ()) -> None:
        self.rules = rules
        self.alerts: tuple[Alert, ...] = ()
        self.evaluated_at: float | None = None
        self.breakers: tuple[Breaker, ...] = ()

    def observe(self, evaluation: Evaluation) -> None:
        """An evaluation sink: the pending and firing alerts after ``evaluation``."""
        self.alerts = tuple(evaluation.alerts)
        self.evaluated_at = evaluation.at.timestamp()

    def set_breakers(self, breakers: Iterable[Breaker]) -> None:
        """Every breaker the control topic knows, as the supervisor last read it."""
        self.breakers = tuple(breakers)

    def collect(self) -> Iterator[Metric]:
        alerts, evaluated_at, breakers = self.alerts, self.evaluated_at, self.breakers
        active = series.ALERTS.gauge()
        started = series.ALERT_STARTED.gauge()
        counts: dict[tuple[str, ...], int] = {}
        since: dict[tuple[str, ...], float] = {}
        for alert in alerts:
            labels = (alert.rule, alert.severity, alert.agent_id or "", alert.state)
            counts[labels] = counts.get(labels, 0) + 1
            since[labels] = min(since.get(labels, float("inf")), alert.starts_at.timestamp())
        for key in sorted(counts):
            active.add_metric(list(key), float(counts[key]))
            started.add_metric(list(key), since[key])
        info = series.RULE_INFO.gauge()
        for rule in sorted(self.rules(), key=lambda r: r.name):
            info.add_metric([rule.name, rule.severity, rule.annotations.get("runbook_url", "")], 1)
        last = series.LAST_EVALUATION.gauge()
        if evaluated_at is not None:
            last.add_metric([], evaluated_at)
        breaker_open = series.BREAKER_OPEN.gauge()
        for breaker in sorted(breakers, key=lambda b: (b.key.agent_id, b.key.tool or "")):
            halted = 0.0 if breaker.state == "closed" else 1.0
            breaker_open.add_metric([breaker.key.agent_id, breaker.key.tool or ""], halted)
        yield from (active, started, info, last, breaker_open)


# --------------------------------------------------------------------------- serving


@dataclass
class MetricsServer:
    collector: AlertsCollector
    server: WSGIServer
    thread: Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(
    args: argparse.Namespace, rules: Callable[[], Sequence[Rule]], response: Response | None
) -> MetricsServer | None:
    """Start /metrics when ``--metrics-port`` asks for it; the breakers come from the
    response's supervisor (none with ``--no-response``, which supervises nothing)."""
    if not args.metrics_port:
        return None
    collector = AlertsCollector(rules)
    registry = CollectorRegistry()
    registry.register(collector)
    registry.register(LifecycleCollector(args.db, args.catalog))  # the agent registry
    server, thread = start_http_server(args.metrics_port, args.metrics_host, registry)
    if response is not None:
        response.breaker_sink = collector.set_breakers
        registry.register(response.context.step_failures)
    log.info("serving /metrics", extra={"port": args.metrics_port})
    return MetricsServer(collector, server, thread)
