"""docker-compose.yml, the Dockerfile and .dockerignore: valid, and consistent with the CLI.

The compose file is validated by the real ``docker-compose config -q``; the commands its
services run are parsed by the real ``agentwatch`` argument parser, with the service's
environment applied, so a renamed flag or setting breaks a test rather than a deployment.
The files Prometheus and Alertmanager mount are checked by ``promtool`` and ``amtool``,
and tied to the services they name.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentwatch.alerts.rules import DEFAULT_RULES_DIR, load_rules
from agentwatch.cli import build_parser
from agentwatch.dashboards.boards import DASHBOARDS
from agentwatch.settings import Settings, env_name
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

PROCESSOR = "agentwatch-processor"
SIMULATOR = "simulator"
EVALUATOR = "agentwatch-alerts"
RECEIVER = "agentwatch-receiver"
DRIFT = "agentwatch-drift"
# The services that talk to Kafka; the drift evaluator reads the catalog only.
KAFKA_CLIENTS = (PROCESSOR, SIMULATOR, EVALUATOR, RECEIVER)
AGENTWATCH_SERVICES = (*KAFKA_CLIENTS, DRIFT)
# The services that read (and append to) the processor's catalog.
CATALOG_READERS = (EVALUATOR, RECEIVER, DRIFT)

# ${NAME}, ${NAME:-default} or ${NAME-default}: Compose variable substitution.
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def resolve(value: object) -> str:
    """A compose value as deployed with no overrides: each variable becomes its default."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: resolve(value) for key, value in env.items()}


def agentwatch_argv(svc: dict[str, Any]) -> list[str]:
    command = svc["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


ParseService = Callable[[str], argparse.Namespace]


@pytest.fixture
def parse_service(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> ParseService:
    """Parse a service's command with the real CLI parser, under the service's environment."""

    def parse(name: str) -> argparse.Namespace:
        svc = service(compose, name)
        for key, value in environment(svc).items():
            monkeypatch.setenv(key, value)
        argv = agentwatch_argv(svc)
        try:
            return build_parser(Settings()).parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{name}: `agentwatch {shlex.join(argv)}` does not parse (exit {exc.code})")

    return parse


def named_volume_at(compose: dict[str, Any], svc: dict[str, Any], target: str) -> str | None:
    """The named volume mounted at ``target`` in ``svc``, if it is declared at top level."""
    for mount in svc.get("volumes") or []:
        if isinstance(mount, str):
            source, _, rest = mount.partition(":")
            mount_target = rest.split(":")[0]
        else:
            source, mount_target = mount.get("source", ""), mount.get("target", "")
        if mount_target == target and source in (compose.get("volumes") or {}):
            return source
    return None


# --------------------------------------------------------------------------- the compose file


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


# --------------------------------------------------------------------------- several machines

LAKE_PROCESSOR = "lake-processor"
LAKE_ANALYST = "lake-analyst"
LAKE_SERVICES = ("lake-catalog", "lake-s3", "lake-bucket", LAKE_PROCESSOR, LAKE_ANALYST)


def test_docker_compose_accepts_the_lake_profile() -> None:
    docker_compose = require_tool("docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--profile", "lake", "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("name", LAKE_SERVICES)
def test_the_shared_lake_runs_only_in_the_lake_profile(compose: dict[str, Any], name: str) -> None:
    assert service(compose, name)["profiles"] == ["lake"]


@pytest.mark.parametrize("name", (LAKE_PROCESSOR, LAKE_ANALYST))
def test_lake_services_use_the_postgresql_catalog_and_the_s3_data_path(
    parse_service: ParseService, name: str
) -> None:
    from agentwatch.processors.store.location import locate

    args = parse_service(name)
    catalog = locate(str(args.db))
    assert catalog.catalog == "postgres:dbname=agentwatch host=lake-catalog user=agentwatch"
    assert catalog.data_path == "s3://agentwatch-lake/lake/"
    assert "password" not in str(args.db)  # libpq reads PGPASSWORD


def test_lake_processors_land_from_the_kafka_service_in_one_group(
    compose: dict[str, Any], parse_service: ParseService
) -> None:
    args = parse_service(LAKE_PROCESSOR)
    assert (args.command, args.bootstrap, args.group) == (
        "process",
        "kafka:9092",
        "agentwatch-lake",
    )
    depends_on = service(compose, LAKE_PROCESSOR)["depends_on"]
    assert depends_on["lake-catalog"]["condition"] == "service_healthy"
    assert depends_on["lake-bucket"]["condition"] == "service_completed_successfully"


def test_the_lake_endpoint_credentials_agree_with_what_the_processors_use(
    compose: dict[str, Any],
) -> None:
    lake = environment(service(compose, LAKE_PROCESSOR))
    catalog = environment(service(compose, "lake-catalog"))
    s3 = environment(service(compose, "lake-s3"))
    assert lake["PGPASSWORD"] == catalog["POSTGRES_PASSWORD"]
    assert (lake["AWS_ACCESS_KEY_ID"], lake["AWS_SECRET_ACCESS_KEY"]) == (
        s3["MINIO_ROOT_USER"], s3["MINIO_ROOT_PASSWORD"],
    )  # fmt: skip
    assert lake["AWS_ENDPOINT_URL"] == "http://lake-s3:9000"


def test_the_lake_has_no_default_passwords(compose: dict[str, Any]) -> None:
    # Unset, both servers refuse to start: nothing is open by default.
    assert environment(service(compose, "lake-catalog"))["POSTGRES_PASSWORD"] == ""
    assert environment(service(compose, "lake-s3"))["MINIO_ROOT_PASSWORD"] == ""


def test_every_agentwatch_variable_of_a_lake_service_is_a_setting(compose: dict[str, Any]) -> None:
    import msgspec

    from agentwatch.settings import Config

    known = {
        env_name(section.name, key.name)
        for section in msgspec.structs.fields(Config)
        for key in msgspec.structs.fields(section.type)
    }
    for name in (LAKE_PROCESSOR, LAKE_ANALYST):
        variables = [k for k in environment(service(compose, name)) if k.startswith("AGENTWATCH_")]
        assert [v for v in variables if v not in known] == [], name


# --------------------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def last(instruction: str) -> str:
    values = [rest for keyword, rest in dockerfile_instructions() if keyword == instruction]
    assert values, f"the Dockerfile has no {instruction}"
    return values[-1]


def test_the_image_entrypoint_is_the_agentwatch_console_script() -> None:
    entrypoint = json.loads(last("ENTRYPOINT"))  # exec form, so signals reach agentwatch
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert entrypoint == ["agentwatch"]
    assert scripts[entrypoint[0]] == "agentwatch.cli:main"


def test_the_image_runs_as_a_non_root_user() -> None:
    user = last("USER").split(":")[0]
    assert user not in ("root", "0")


def test_the_image_declares_the_data_volume_compose_mounts(compose: dict[str, Any]) -> None:
    volume = json.loads(last("VOLUME"))
    assert "/data" in volume
    assert named_volume_at(compose, service(compose, PROCESSOR), "/data") is not None


def test_the_build_context_leaves_out_local_state() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".git", ".venv", ".kafka", "data", "build"} <= patterns


# --------------------------------------------------------------------------- metrics stack
# Prometheus scrapes the processors and Grafana shows the provisioned dashboards: the
# files they mount must exist, agree with each other and with the processor's flags.

PROMETHEUS = "prometheus"
ALERTMANAGER = "alertmanager"
GRAFANA = "grafana"
METRICS_STACK = (PROMETHEUS, ALERTMANAGER, GRAFANA)


def bind_mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative to the repo)."""
    mounts = {}
    for mount in svc.get("volumes") or []:
        source, _, rest = mount.partition(":")
        if source.startswith(("./", "/")):
            mounts[rest.split(":")[0]] = (ROOT / source).resolve()
    return mounts


def mounted_file(svc: dict[str, Any], container_path: str) -> Path:
    """The host file a service sees at ``container_path`` through one of its bind mounts."""
    for target, source in bind_mounts(svc).items():
        if container_path == target or container_path.startswith(target + "/"):
            return source / Path(container_path).relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted")


def prometheus_config_file(compose: dict[str, Any]) -> Path:
    svc = service(compose, PROMETHEUS)
    flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    return mounted_file(svc, flag.split("=", 1)[1])


def prometheus_config(compose: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(prometheus_config_file(compose).read_text())
    return config


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
    jobs = prometheus_config(compose)["scrape_configs"]
    # DNS discovery: the service name resolves to every replica after --scale.
    found = [
        sd for job in jobs for sd in job.get("dns_sd_configs", [])
        if PROCESSOR in sd["names"] and sd["type"] == "A"
    ]  # fmt: skip
    assert found, "no scrape job discovers the processor containers"
    assert all(sd["port"] == port for sd in found)
    assert str(port) in [str(p) for p in service(compose, PROCESSOR).get("expose", [])]


def test_promtool_accepts_the_prometheus_config(compose: dict[str, Any]) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(prometheus_config_file(compose))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_rate_windows_follow_the_prometheus_scrape_interval(
    compose: dict[str, Any],
) -> None:
    (datasource,) = grafana_provisioning(compose, "datasources")
    interval = prometheus_config(compose)["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == interval


def test_grafanas_datasource_is_the_prometheus_service(compose: dict[str, Any]) -> None:
    (datasource,) = grafana_provisioning(compose, "datasources")
    assert datasource["type"] == "prometheus"
    listen = next(
        (a.split("=", 1)[1] for a in service(compose, PROMETHEUS)["command"]
         if a.startswith("--web.listen-address=")), ":9090",
    )  # fmt: skip
    assert datasource["url"] == f"http://{PROMETHEUS}:{listen.rsplit(':', 1)[1]}"


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


# --------------------------------------------------------------------------- alerting
# The evaluators beside the processor, Prometheus evaluating the exported rules, and
# Alertmanager handing what fires to the agentwatch receiver, which runs the runbooks.

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
    jobs = prometheus_config(compose)["scrape_configs"]
    return {t for job in jobs for sc in job.get("static_configs", []) for t in sc["targets"]}


@pytest.mark.parametrize("name", [EVALUATOR, DRIFT])
def test_prometheus_scrapes_each_evaluator_on_its_metrics_port(
    compose: dict[str, Any], parse_service: ParseService, name: str
) -> None:
    args = parse_service(name)
    assert args.metrics_port is not None
    assert args.metrics_host == "0.0.0.0"
    assert f"{name}:{args.metrics_port}" in scrape_targets(compose)
    assert str(args.metrics_port) in [str(p) for p in service(compose, name).get("expose", [])]


def prometheus_rule_files(compose: dict[str, Any]) -> list[Path]:
    """The rule files Prometheus loads: its rule_files globs, relative to its config."""
    folder = prometheus_config_file(compose).parent
    patterns = prometheus_config(compose).get("rule_files") or []
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


def alertmanager_config_file(compose: dict[str, Any]) -> Path:
    svc = service(compose, ALERTMANAGER)
    flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    return mounted_file(svc, flag.split("=", 1)[1])


def test_prometheus_sends_its_alerts_to_the_alertmanager_service(compose: dict[str, Any]) -> None:
    targets = [
        t for am in prometheus_config(compose)["alerting"]["alertmanagers"]
        for sc in am["static_configs"] for t in sc["targets"]
    ]  # fmt: skip
    listen = next(
        (a.split("=", 1)[1] for a in service(compose, ALERTMANAGER)["command"]
         if a.startswith("--web.listen-address=")), ":9093",
    )  # fmt: skip
    assert targets == [f"{ALERTMANAGER}:{listen.rsplit(':', 1)[1]}"]


def test_amtool_accepts_the_alertmanager_config(compose: dict[str, Any]) -> None:
    amtool = require_tool("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(alertmanager_config_file(compose))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_hands_every_alert_to_the_agentwatch_receiver(
    compose: dict[str, Any], parse_service: ParseService
) -> None:
    config = yaml.safe_load(alertmanager_config_file(compose).read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    root = receivers[config["route"]["receiver"]]
    assert not config["route"].get("routes"), "every alert takes the root route"
    (webhook,) = root["webhook_configs"]
    url = urllib.parse.urlsplit(webhook["url"])
    assert (url.hostname, url.port) == (RECEIVER, parse_service(RECEIVER).port)
    assert webhook["send_resolved"] is True
    assert str(url.port) in [str(p) for p in service(compose, RECEIVER).get("expose", [])]


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
    config = yaml.safe_load(alertmanager_config_file(compose).read_text())
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
