"""docker-compose.yml's services and Kafka, checked by the real ``docker-compose config -q``.

The commands the services run are parsed by the real ``agentwatch`` argument parser, with
the service's environment applied, so a renamed flag or setting breaks a test rather
than a deployment.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentwatch.cli import build_parser
from agentwatch.settings import Settings, env_name
from tests.compose_helpers import (
    AGENTWATCH_SERVICES,
    COMPOSE_FILE,
    KAFKA_CLIENTS,
    PROCESSOR,
    ROOT,
    SIMULATOR,
    ParseService,
    agentwatch_argv,
    environment,
    named_volume_at,
    resolve,
    service,
)
from tests.conftest import require_tool


def test_docker_compose_accepts_the_compose_file() -> None:
    docker_compose = require_tool("docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--profile", "demo", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_processor_runs_agentwatch_process_against_the_kafka_service(
    parse_service: ParseService,
) -> None:
    args = parse_service(PROCESSOR)
    assert args.command == "process"
    assert args.bootstrap == "kafka:9092"


def test_the_processor_keeps_its_catalog_on_a_named_volume(
    compose: dict[str, Any], parse_service: ParseService
) -> None:
    args = parse_service(PROCESSOR)
    assert args.db == Path("/data/agentwatch.sqlite")
    assert named_volume_at(compose, service(compose, PROCESSOR), "/data") is not None


def test_the_processor_restarts_unless_stopped(compose: dict[str, Any]) -> None:
    assert service(compose, PROCESSOR)["restart"] == "unless-stopped"


def test_the_simulator_runs_agentwatch_simulate_against_the_kafka_service(
    parse_service: ParseService,
) -> None:
    args = parse_service(SIMULATOR)
    assert args.command == "simulate"
    assert args.bootstrap == "kafka:9092"


def test_the_simulator_runs_only_in_the_demo_profile(compose: dict[str, Any]) -> None:
    assert service(compose, SIMULATOR)["profiles"] == ["demo"]
    assert "profiles" not in service(compose, PROCESSOR)
    assert "profiles" not in service(compose, "kafka")


@pytest.mark.parametrize("name", AGENTWATCH_SERVICES)
def test_service_flags_are_spelled_in_full(compose: dict[str, Any], name: str) -> None:
    # argparse also accepts unambiguous prefixes (--agent for --agents), which a new flag
    # sharing the prefix would silently break: a compose file spells every flag out.
    argv = agentwatch_argv(service(compose, name))
    options = set(_subcommand_parser(argv)._option_string_actions)
    flags = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    assert flags, f"{name} passes no flags"
    assert [f for f in flags if f not in options] == []


def _subcommand_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the innermost subcommand ``argv`` names (``alerts run``: run's)."""
    parser = build_parser(Settings())
    for word in (a for a in argv if not a.startswith("-")):
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            break
        parser = subparsers[0].choices[word]
    assert parser.prog != build_parser(Settings()).prog, f"no subcommand in {argv}"
    return parser


@pytest.mark.parametrize("name", KAFKA_CLIENTS)
def test_agentwatch_services_start_once_kafka_is_healthy(
    compose: dict[str, Any], name: str
) -> None:
    depends_on = service(compose, name)["depends_on"]
    assert depends_on["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", AGENTWATCH_SERVICES)
def test_every_agentwatch_variable_of_a_service_is_a_setting_the_cli_reads(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    read = _settings_read_by_the_cli()
    variables = [
        key for key in environment(service(compose, name)) if key.startswith("AGENTWATCH_")
    ]
    assert variables, f"{name} sets no AGENTWATCH_* variable"
    for variable in variables:
        assert any(env_name(section, key) == variable for section, key in read), (
            f"{name}: {variable} is not a setting any agentwatch command reads"
        )


@dataclass(frozen=True)
class _RecordingSettings(Settings):
    read: set[tuple[str, str]] = field(default_factory=set)

    def get(self, section: str, key: str, default: Any) -> Any:
        self.read.add((section, key))
        return super().get(section, key, default)


def _settings_read_by_the_cli() -> set[tuple[str, str]]:
    settings = _RecordingSettings()
    build_parser(settings)
    return settings.read


def test_the_kafka_image_is_an_apache_kafka_4_release(compose: dict[str, Any]) -> None:
    image = service(compose, "kafka")["image"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", image), image


def test_kafka_has_a_healthcheck(compose: dict[str, Any]) -> None:
    healthcheck = service(compose, "kafka")["healthcheck"]
    test = healthcheck["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert "kafka-broker-api-versions.sh" in " ".join(test)


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    env = environment(service(compose, "kafka"))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")


def test_kafka_internal_topics_have_one_replica(compose: dict[str, Any]) -> None:
    env = environment(service(compose, "kafka"))
    factors = {k: v for k, v in env.items() if k.endswith("_REPLICATION_FACTOR")}
    assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in factors
    assert "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR" in factors
    assert set(factors.values()) == {"1"}


@pytest.mark.parametrize("name", KAFKA_CLIENTS)
def test_kafka_advertises_the_address_agentwatch_services_bootstrap_from(
    compose: dict[str, Any], parse_service: ParseService, name: str
) -> None:
    env = environment(service(compose, "kafka"))
    advertised = {url.split("://", 1)[1] for url in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert parse_service(name).bootstrap in advertised


def test_kafka_advertises_the_published_port_to_host_clients(compose: dict[str, Any]) -> None:
    kafka = service(compose, "kafka")
    env = environment(kafka)
    listeners = dict(url.split("://", 1) for url in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(url.split("://", 1) for url in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    host_address, host_port = advertised["PLAINTEXT_HOST"].rsplit(":", 1)
    container_port = listeners["PLAINTEXT_HOST"].rsplit(":", 1)[1]
    assert f"{host_address}:{host_port}:{container_port}" in [resolve(p) for p in kafka["ports"]]


def test_kafka_keeps_its_data_on_a_named_volume(compose: dict[str, Any]) -> None:
    kafka = service(compose, "kafka")
    log_dirs = environment(kafka)["KAFKA_LOG_DIRS"]
    assert named_volume_at(compose, kafka, log_dirs) is not None
