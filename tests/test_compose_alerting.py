"""Alerting in docker-compose.yml: the evaluators beside the processor, Prometheus
evaluating the exported rules (``promtool``), and Alertmanager (``amtool``) handing what
fires to the agentwatch receiver, which runs the runbooks."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.rules import DEFAULT_RULES_DIR, load_rules
from tests.compose_helpers import (
    ALERTMANAGER,
    CATALOG_READERS,
    DRIFT,
    EVALUATOR,
    GRAFANA,
    PROCESSOR,
    PROMETHEUS,
    RECEIVER,
    ROOT,
    ParseService,
    config_file,
    environment,
    exposed,
    listen_port,
    loaded_config,
    mounted_file,
    named_volume_at,
    service,
)
from tests.conftest import require_tool

ALERTS_DIR = ROOT / "alerts"
GRAFANA_STATIC = "/usr/share/grafana"  # Grafana serves its public/ folder under /public


def test_the_evaluator_runs_the_alert_rules_with_their_response(
    parse_service: ParseService,
) -> None:
    args = parse_service(EVALUATOR)
    assert (args.command, args.alerts_command) == ("alerts", "run")
    assert not args.once and not args.no_response
    assert args.bootstrap == "kafka:9092"


def test_the_receiver_runs_runbooks_for_what_alertmanager_sends(
    parse_service: ParseService,
) -> None:
    args = parse_service(RECEIVER)
    assert (args.command, args.alerts_command) == ("alerts", "receive")
    assert args.runbooks
    assert args.host == "0.0.0.0"


def test_the_drift_evaluator_runs_continuously(parse_service: ParseService) -> None:
    args = parse_service(DRIFT)
    assert (args.command, args.drift_action) == ("drift", "run")
    assert not args.once


@pytest.mark.parametrize("name", CATALOG_READERS)
def test_the_evaluators_read_the_processors_catalog(
    compose: dict[str, Any], parse_service: ParseService, name: str
) -> None:
    assert parse_service(name).db == parse_service(PROCESSOR).db
    volume = named_volume_at(compose, service(compose, PROCESSOR), "/data")
    assert named_volume_at(compose, service(compose, name), "/data") == volume


@pytest.mark.parametrize("name", CATALOG_READERS)
def test_the_evaluators_restart_unless_stopped(compose: dict[str, Any], name: str) -> None:
    assert service(compose, name)["restart"] == "unless-stopped"
    assert "profiles" not in service(compose, name)


def scrape_targets(compose: dict[str, Any]) -> set[str]:
    jobs = loaded_config(compose, PROMETHEUS)["scrape_configs"]
    return {t for job in jobs for sc in job.get("static_configs", []) for t in sc["targets"]}


@pytest.mark.parametrize("name", [EVALUATOR, DRIFT])
def test_prometheus_scrapes_each_evaluator_on_its_metrics_port(
    compose: dict[str, Any], parse_service: ParseService, name: str
) -> None:
    args = parse_service(name)
    assert args.metrics_port is not None
    assert args.metrics_host == "0.0.0.0"
    assert f"{name}:{args.metrics_port}" in scrape_targets(compose)
    assert str(args.metrics_port) in exposed(service(compose, name))


def prometheus_rule_files(compose: dict[str, Any]) -> list[Path]:
    """The rule files Prometheus loads: its rule_files globs, relative to its config."""
    folder = config_file(compose, PROMETHEUS).parent
    patterns = loaded_config(compose, PROMETHEUS).get("rule_files") or []
    return sorted(p for pattern in patterns for p in folder.glob(pattern))


def test_prometheus_loads_the_exported_alert_rules(compose: dict[str, Any]) -> None:
    files = prometheus_rule_files(compose)
    assert [f.name for f in files] == ["agentwatch.rules.yml"]
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_mounted_rules_are_what_the_export_writes_now(tmp_path: Path) -> None:
    # Prometheus must alert on the rules and catalog as they are, not as they were.
    out = tmp_path / "agentwatch.rules.yml"
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "alerts", "export-prometheus",
         "--rules", "alerts/rules", "--catalog", "alerts/governance/catalog.yaml",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checked_in = ROOT / "deploy" / "prometheus" / "rules" / "agentwatch.rules.yml"
    assert checked_in.read_text() == out.read_text(), (
        "stale: run `agentwatch alerts export-prometheus --rules alerts/rules --catalog "
        "alerts/governance/catalog.yaml --out deploy/prometheus/rules/agentwatch.rules.yml`"
    )


def test_prometheus_sends_its_alerts_to_the_alertmanager_service(compose: dict[str, Any]) -> None:
    targets = [
        t for am in loaded_config(compose, PROMETHEUS)["alerting"]["alertmanagers"]
        for sc in am["static_configs"] for t in sc["targets"]
    ]  # fmt: skip
    assert targets == [f"{ALERTMANAGER}:{listen_port(service(compose, ALERTMANAGER), ':9093')}"]


def test_amtool_accepts_the_alertmanager_config(compose: dict[str, Any]) -> None:
    amtool = require_tool("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(config_file(compose, ALERTMANAGER))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_hands_every_alert_to_the_agentwatch_receiver(
    compose: dict[str, Any], parse_service: ParseService
) -> None:
    config = loaded_config(compose, ALERTMANAGER)
    receivers = {r["name"]: r for r in config["receivers"]}
    root = receivers[config["route"]["receiver"]]
    assert not config["route"].get("routes"), "every alert takes the root route"
    (webhook,) = root["webhook_configs"]
    url = urllib.parse.urlsplit(webhook["url"])
    assert (url.hostname, url.port) == (RECEIVER, parse_service(RECEIVER).port)
    assert webhook["send_resolved"] is True
    assert str(url.port) in exposed(service(compose, RECEIVER))


def test_grafana_serves_every_runbook_where_the_alert_links_point(
    compose: dict[str, Any],
) -> None:
    dashboard = json.loads((ROOT / "dashboards" / "json" / "agentwatch-alerts.json").read_text())
    base = next(v for v in dashboard["templating"]["list"] if v["name"] == "runbooks_url")
    assert base["query"].startswith("/public/")
    grafana = service(compose, GRAFANA)
    urls = {r.annotations["runbook_url"] for r in load_rules(DEFAULT_RULES_DIR)}
    for url in sorted(urls):
        served = mounted_file(grafana, f"{GRAFANA_STATIC}{base['query']}/{url}")
        assert served.is_file(), url
        assert served.read_text() == (ALERTS_DIR / url).read_text()


SECRETS = "agentwatch-secrets"


def test_alertmanager_and_the_receiver_share_a_bearer_token_the_deployment_makes(
    compose: dict[str, Any],
) -> None:
    config = loaded_config(compose, ALERTMANAGER)
    [webhook] = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    token_file = Path(authorization["credentials_file"])
    assert environment(service(compose, RECEIVER))["AGENTWATCH_RECEIVE_TOKEN_FILE"] == str(
        token_file
    )
    for name in (ALERTMANAGER, RECEIVER, SECRETS):
        svc = service(compose, name)
        assert named_volume_at(compose, svc, str(token_file.parent)) == SECRETS, name
    assert token_file.name in str(service(compose, SECRETS)["command"])


@pytest.mark.parametrize("name", [EVALUATOR, RECEIVER])
def test_services_that_publish_control_records_have_the_control_key(
    compose: dict[str, Any], name: str
) -> None:
    svc = service(compose, name)
    keys = Path(environment(svc)["AGENTWATCH_CONTROL_KEYS_FILE"])
    assert named_volume_at(compose, svc, str(keys.parent)) == SECRETS
    assert keys.name in str(service(compose, SECRETS)["command"])
    assert svc["depends_on"][SECRETS]["condition"] == "service_completed_successfully"
