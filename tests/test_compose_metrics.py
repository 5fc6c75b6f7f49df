"""The metrics stack of docker-compose.yml: Prometheus scrapes the processors and Grafana
shows the provisioned dashboards; the files they mount must exist, agree with each other
(``promtool check config``) and with the processor's flags."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from agentwatch.dashboards.boards import DASHBOARDS
from tests.compose_helpers import (
    ALERTMANAGER,
    GRAFANA,
    PROCESSOR,
    PROMETHEUS,
    ROOT,
    ParseService,
    config_file,
    environment,
    exposed,
    listen_port,
    loaded_config,
    mounted_file,
    named_volume_at,
    resolve,
    service,
)
from tests.conftest import require_tool

METRICS_STACK = (PROMETHEUS, ALERTMANAGER, GRAFANA)


def grafana_provisioning(compose: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The provisioning entries Grafana loads from /etc/grafana/provisioning/<kind>."""
    folder = mounted_file(service(compose, GRAFANA), f"/etc/grafana/provisioning/{kind}")
    key = {"datasources": "datasources", "dashboards": "providers"}[kind]
    return [e for f in sorted(folder.glob("*.yaml")) for e in yaml.safe_load(f.read_text())[key]]


def test_the_processor_serves_metrics_on_all_interfaces_of_its_container(
    parse_service: ParseService,
) -> None:
    args = parse_service(PROCESSOR)
    assert args.metrics_port is not None
    assert args.metrics_host == "0.0.0.0"


def test_prometheus_scrapes_every_processor_on_its_metrics_port(
    compose: dict[str, Any], parse_service: ParseService
) -> None:
    port = parse_service(PROCESSOR).metrics_port
    jobs = loaded_config(compose, PROMETHEUS)["scrape_configs"]
    # DNS discovery: the service name resolves to every replica after --scale.
    found = [
        sd for job in jobs for sd in job.get("dns_sd_configs", [])
        if PROCESSOR in sd["names"] and sd["type"] == "A"
    ]  # fmt: skip
    assert found, "no scrape job discovers the processor containers"
    assert all(sd["port"] == port for sd in found)
    assert str(port) in exposed(service(compose, PROCESSOR))


def test_promtool_accepts_the_prometheus_config(compose: dict[str, Any]) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(config_file(compose, PROMETHEUS))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_rate_windows_follow_the_prometheus_scrape_interval(
    compose: dict[str, Any],
) -> None:
    (datasource,) = grafana_provisioning(compose, "datasources")
    interval = loaded_config(compose, PROMETHEUS)["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == interval


def test_grafanas_datasource_is_the_prometheus_service(compose: dict[str, Any]) -> None:
    (datasource,) = grafana_provisioning(compose, "datasources")
    assert datasource["type"] == "prometheus"
    port = listen_port(service(compose, PROMETHEUS), ":9090")
    assert datasource["url"] == f"http://{PROMETHEUS}:{port}"


def test_grafana_provisions_every_built_dashboard(compose: dict[str, Any]) -> None:
    (provider,) = grafana_provisioning(compose, "dashboards")
    folder = mounted_file(service(compose, GRAFANA), provider["options"]["path"])
    assert {p.stem for p in folder.glob("*.json")} == {spec.uid for spec in DASHBOARDS}


def test_grafana_opens_on_the_fleet_overview(compose: dict[str, Any]) -> None:
    grafana = service(compose, GRAFANA)
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert json.loads(mounted_file(grafana, home).read_text())["uid"] == "agentwatch-fleet"


@pytest.mark.parametrize("name", METRICS_STACK)
def test_the_metrics_stack_runs_by_default_from_pinned_images(
    compose: dict[str, Any], name: str
) -> None:
    svc = service(compose, name)
    assert "profiles" not in svc
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", svc["image"]), svc["image"]
    assert svc["restart"] == "unless-stopped"
    assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


@pytest.mark.parametrize(("name", "target"), [(PROMETHEUS, "/prometheus"),
                                              (ALERTMANAGER, "/alertmanager"),
                                              (GRAFANA, "/var/lib/grafana")])  # fmt: skip
def test_the_metrics_stack_keeps_its_data_on_named_volumes(
    compose: dict[str, Any], name: str, target: str
) -> None:
    assert named_volume_at(compose, service(compose, name), target) is not None


@pytest.mark.parametrize("name", METRICS_STACK)
def test_the_metrics_stack_is_published_on_loopback_only(
    compose: dict[str, Any], name: str
) -> None:
    ports = [resolve(p) for p in service(compose, name)["ports"]]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)


@pytest.mark.parametrize("name", METRICS_STACK)
def test_every_bind_mount_of_the_metrics_stack_exists_and_is_read_only(
    compose: dict[str, Any], name: str
) -> None:
    svc = service(compose, name)
    for mount in svc.get("volumes") or []:
        if mount.startswith("./"):
            source, _, mode = mount.split(":")
            assert (ROOT / source).is_dir(), source
            assert mode == "ro", mount
