"""An exported rule end to end: agentwatch's /metrics scraped by the real Prometheus, which
evaluates the rule and sends what fires to the real Alertmanager, which delivers it to
`alerts receive`."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from agentwatch.alerts.alertmanager.access import WebhookAuth
from agentwatch.alerts.alertmanager.receive import ReceiveServer
from agentwatch.alerts.model import Alert
from agentwatch.alerts.rules import parse_rules
from agentwatch.broker.ports import free_port
from agentwatch.processors.metrics.exporter import FleetCollector, batch_deltas
from tests.conftest import require_tool
from tests.frames import events
from tests.prom_export_helpers import CATALOG, write_rules


@contextmanager
def _service(cmd: list[str], ready: str, log_path: Path) -> Iterator[None]:
    """Run a server binary until its readiness URL answers 200; stop it afterwards."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                try:
                    with urllib.request.urlopen(ready, timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"{cmd[0]} did not become ready"
                time.sleep(0.2)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_exported_rule_fires_through_prometheus_and_alertmanager_into_receive(
    tmp_path: Path,
) -> None:
    """The whole path: agentwatch metrics, scraped by the real Prometheus evaluating the
    exported rule, sent to the real Alertmanager, delivered to `alerts receive`."""
    prometheus = require_tool("prometheus")
    alertmanager = require_tool("prometheus-alertmanager")
    rule = parse_rules(
        {
            "rules": [
                {
                    "name": "AgentViolationBurst",
                    "metric": "failed_check_rate",
                    "window": "10s",
                    "op": ">",
                    "threshold": 0.2,
                    "min_samples": 5,
                    "severity": "critical",
                    "labels": {"category": "safety"},
                    "annotations": {
                        "summary": "{{ $labels.agent_id }}: {{ $value | humanizePercentage }}",
                        "runbook_url": "runbooks/contain-agent.yaml",
                    },
                }
            ]
        },
        "burst.yaml",
    )
    rules_file = write_rules(tmp_path, rule, CATALOG)

    # agentwatch's own /metrics, fed with policy checks: 60% violations for one agent.
    collector = FleetCollector("agent-events")
    registry = CollectorRegistry()
    registry.register(collector)
    batch = batch_deltas(
        {
            "events": events(
                *(
                    {"kind": "policy_check", "agent_id": "strict-bot", "policy_id": "pii",
                     "outcome": outcome}
                    for outcome in ("pass", "pass", "violation", "violation", "blocked")
                )
            )
        }
    )  # fmt: skip
    collector.apply(batch)
    metrics_port = free_port()
    metrics_server, _ = start_http_server(metrics_port, "127.0.0.1", registry)
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.25):
            collector.apply(batch)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    received: list[Alert] = []
    password = tmp_path / "receiver.password"
    password.write_text("basic-password-0123456789\n")
    auth = WebhookAuth(users={"alertmanager": b"basic-password-0123456789"})
    receiver = ReceiveServer("127.0.0.1", 0, received.extend, auth=auth)
    receiver.start()

    am_port, prom_port = free_port(), free_port()
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(
        json.dumps(
            {
                "route": {"receiver": "agentwatch", "group_by": ["alertname", "agent_id"],
                          "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
                "receivers": [{"name": "agentwatch", "webhook_configs": [
                    {"url": f"{receiver.url}/alertmanager", "send_resolved": True,
                     "http_config": {"basic_auth": {"username": "alertmanager",
                                                    "password_file": str(password)}}}]}],
            }
        )
    )  # fmt: skip
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_file)],
                "alerting": {"alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                "scrape_configs": [{"job_name": "agentwatch", "static_configs": [
                    {"targets": [f"127.0.0.1:{metrics_port}"]}]}],
            }
        )
    )  # fmt: skip

    def wait_for(state: str) -> Alert:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for alert in list(received):
                if alert.state == state and alert.rule == "AgentViolationBurst":
                    return alert
            time.sleep(0.25)
        raise AssertionError(f"no {state} alert received; got {received}")

    try:
        with (
            _service(
                [alertmanager, f"--config.file={am_config}",
                 f"--storage.path={tmp_path / 'am'}",
                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                f"http://127.0.0.1:{am_port}/-/ready",
                tmp_path / "alertmanager.log",
            ),
            _service(
                [prometheus, f"--config.file={prom_config}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                f"http://127.0.0.1:{prom_port}/-/ready",
                tmp_path / "prometheus.log",
            ),
        ):  # fmt: skip
            firing = wait_for("firing")
            assert firing.labels["agent_id"] == "strict-bot"
            assert firing.labels["severity"] == "critical"
            assert firing.labels["category"] == "safety"
            assert firing.annotations["summary"] == "strict-bot: 60%"
            assert firing.annotations["runbook_url"] == "runbooks/contain-agent.yaml"
            stop.set()  # no more checks: the rate has no data and the alert resolves
            resolved = wait_for("resolved")
            assert resolved.fingerprint == firing.fingerprint
    finally:
        stop.set()
        receiver.shutdown()
        receiver.server_close()
        metrics_server.shutdown()
        metrics_server.server_close()
