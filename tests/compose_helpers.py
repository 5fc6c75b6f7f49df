"""What the docker-compose.yml tests share: the file and its service names, each service's
command and environment as deployed with no overrides, and the files the metrics stack
mounts. The ``compose`` and ``parse_service`` fixtures are registered for the whole suite
by tests/conftest.py."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentwatch.cli import build_parser
from agentwatch.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"

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


PROMETHEUS = "prometheus"
ALERTMANAGER = "alertmanager"
GRAFANA = "grafana"


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


def flag(svc: dict[str, Any], name: str, default: str | None = None) -> str:
    """The value of ``--name=value`` in a service's command, or ``default``."""
    values = (a.split("=", 1)[1] for a in svc["command"] if a.startswith(f"--{name}="))
    value = next(values, default)
    assert value is not None, f"no --{name}= in {svc['command']}"
    return value


def listen_port(svc: dict[str, Any], default: str) -> str:
    """The port of a service's ``--web.listen-address`` (``default`` when it has none)."""
    return flag(svc, "web.listen-address", default).rsplit(":", 1)[1]


def exposed(svc: dict[str, Any]) -> list[str]:
    """The ports a service exposes to the other services."""
    return [str(p) for p in svc.get("expose", [])]


def config_file(compose: dict[str, Any], name: str) -> Path:
    """The host file a service reads as its ``--config.file``."""
    svc = service(compose, name)
    return mounted_file(svc, flag(svc, "config.file"))


def loaded_config(compose: dict[str, Any], name: str) -> dict[str, Any]:
    """The YAML a service reads as its ``--config.file``."""
    config: dict[str, Any] = yaml.safe_load(config_file(compose, name).read_text())
    return config
