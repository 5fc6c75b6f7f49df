"""Fixtures shared by the whole suite.

- ``kafka_broker``: one real Kafka broker per test session (started with
  ``agentwatch.broker.launcher.start_broker`` on a free port in a temporary directory).
- ``topic``: a factory making a fresh, uniquely named topic on that broker, so tests
  sharing the broker never see each other's records.
- ``require_tool(name)``: the rule for missing tools. Outside CI a test skips when a
  tool is missing; with ``CI=true`` it fails instead, so CI can never go green by
  skipping. Import it (``from tests.conftest import require_tool``) or request the
  ``require_tool`` fixture.

Tests that use ``kafka_broker`` (directly or via ``topic``), PostgreSQL or the S3 server
(``tests/services.py``) are marked ``integration`` automatically, so ``pytest -m 'not
integration'`` never starts a JVM or a server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import pytest

from agentwatch.broker.launcher import BrokerInfo, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.broker.runtime import BrokerError, java_executable, kafka_libs_dir
from agentwatch.ingest.contract.control import Keyring
from agentwatch.topics import TopicSpec, ensure_topics

# Control records are signed: the suite (and every command it starts) shares this key.
TEST_CONTROL_KEYS = "test-key:" + "5" * 64
os.environ.setdefault("AGENTWATCH_CONTROL_KEYS", TEST_CONTROL_KEYS)
TEST_KEYRING = Keyring.parse(TEST_CONTROL_KEYS, "tests")

# Tool names with a check richer than "is it on PATH".
_SPECIAL_TOOLS: dict[str, Callable[[], str]] = {
    "java": java_executable,  # Java 17+
    "kafka": lambda: str(kafka_libs_dir()),  # the Kafka jars
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tool(name: str) -> str:
    """Return the path of tool ``name``; skip the test if it is missing, fail under CI=true.

    ``java`` means a Java 17+ runtime and ``kafka`` the Kafka jars; any other name is an
    executable looked up on PATH (prometheus, promtool, docker-compose, ...).
    """
    check = _SPECIAL_TOOLS.get(name)
    problem: str
    if check is not None:
        try:
            return check()
        except BrokerError as exc:
            problem = str(exc)
    else:
        path = shutil.which(name)
        if path is not None:
            return path
        problem = f"{name} is not installed (not found on PATH)"
    if in_ci():
        pytest.fail(f"CI=true, so a missing tool fails the test: {problem}", pytrace=False)
    pytest.skip(f"missing tool: {problem}")


@pytest.fixture(autouse=True)
def _duckdb_default_memory_limit() -> Iterator[None]:
    """A test that ran a processor in this process leaves no DuckDB memory limit behind
    for the tests after it, which attach many lakes to the same instance."""
    yield
    attach = sys.modules.get("agentwatch.processors.store.attach")
    if attach is not None:
        attach.limit_memory(None)


@pytest.fixture(name="require_tool")
def _require_tool_fixture() -> Callable[[str], str]:
    """The ``require_tool`` function, for tests that prefer a fixture to an import."""
    return require_tool


# PostgreSQL and S3 (moto) for the lake on several machines: tests/services.py; the
# compose file and its services parsed by the real CLI: tests/compose_helpers.py.
pytest_plugins = ["tests.services", "tests.compose_helpers"]
_SERVICES = frozenset({"kafka_broker", "postgres_server", "s3_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVICES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """A real single-node Kafka broker for the whole session, stopped at the end."""
    require_tool("kafka")
    require_tool("java")
    data_dir = tmp_path_factory.mktemp("kafka-broker")
    info = start_broker(data_dir, free_port(), heap="512m")
    try:
        yield info
    finally:
        stop_broker(data_dir)


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 3, config: Mapping[str, str] | None = None) -> str: ...


@pytest.fixture
def topic(kafka_broker: BrokerInfo, request: pytest.FixtureRequest) -> TopicFactory:
    """Make fresh topics on the session broker: ``name = topic(partitions=3, config={...})``.

    Names derive from the test name plus a random suffix; the topics are ready to
    produce to (every partition has a leader) when the call returns.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80]

    def make(partitions: int = 3, config: Mapping[str, str] | None = None) -> str:
        name = f"test-{stem}-{uuid.uuid4().hex[:8]}"
        ensure_topics(kafka_broker.bootstrap, [TopicSpec(name, partitions, dict(config or {}))])
        return name

    return make


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses a test starts: killed if still running when it ends."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
