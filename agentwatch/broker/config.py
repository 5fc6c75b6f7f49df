"""What a broker is started from: ``server.properties``, its log4j2 file, formatted storage."""

from __future__ import annotations

import base64
import logging
import re
import subprocess
import uuid
from pathlib import Path

from agentwatch.broker.ports import HOST, free_port, port_bindable
from agentwatch.broker.runtime import BrokerError, kafka_java_command
from agentwatch.broker.tls import (
    PLAINTEXT,
    SECURITY_MODES,
    BrokerSecurity,
    TlsSetupError,
    write_private,
)

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 3
PROPERTIES_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
KAFKA_LOGS = "kafka-logs"
STORAGE_TOOL = "kafka.tools.StorageTool"
FORMAT_ARGUMENTS_FILE = "format.args"  # exists only while the storage is formatted


def server_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    partitions: int,
    secure: BrokerSecurity | None = None,
) -> str:
    # Static quorum voters (rather than a dynamic quorum) keep the controller port free to
    # change between restarts of the same data directory.
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / KAFKA_LOGS),
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
    }
    if secure is not None:
        settings.update(secure.server_properties(HOST, port, controller_port))
    body = "\n".join(f"{key}={value}" for key, value in settings.items())
    return f"# Written by `agentwatch broker start`; rewritten on every start.\n{body}\n"


LOG4J2 = """\
# Written by `agentwatch broker start`: broker logs go to stdout, i.e. broker.log.
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
"""


def _previous_controller_port(props: Path, port: int) -> int | None:
    try:
        text = props.read_text()
    except OSError:
        return None
    match = re.search(r"^controller\.quorum\.voters=1@[^:]+:(\d+)$", text, re.MULTILINE)
    if match is None:
        return None
    previous = int(match.group(1))
    return previous if previous != port and port_bindable(previous) else None


def pick_controller_port(data_dir: Path, port: int) -> int:
    previous = _previous_controller_port(data_dir / PROPERTIES_FILE, port)
    if previous is not None:
        return previous
    while True:
        candidate = free_port()
        if candidate != port:
            return candidate


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding nor leading '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def format_storage(
    data_dir: Path, props: Path, heap: str, secure: BrokerSecurity | None = None
) -> None:
    if (data_dir / KAFKA_LOGS / "meta.properties").exists():
        return
    args = ["format", "-t", _cluster_id(), "-c", str(props)]
    cmd = kafka_java_command(STORAGE_TOOL, args, heap)
    arguments = data_dir / FORMAT_ARGUMENTS_FILE
    if secure is not None:
        # The SCRAM password must not show in the process list: the tool and its
        # arguments go in a file only this user reads, which the java launcher expands.
        tool = cmd.index(STORAGE_TOOL)
        lines = [*cmd[tool:], *secure.format_arguments()]
        write_private(arguments, "".join(f'"{_java_quoted(a)}"\n' for a in lines))
        cmd = [*cmd[:tool], f"@{arguments}"]
    log.info("formatting Kafka storage", extra={"data_dir": str(data_dir)})
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerError("formatting the Kafka storage took over 120 s") from None
    finally:
        arguments.unlink(missing_ok=True)
    if result.returncode != 0:
        raise BrokerError(
            f"formatting the Kafka storage in {data_dir} failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()}"
        )


def _java_quoted(argument: str) -> str:
    """An argument as the java launcher reads it between double quotes in an @-file."""
    return argument.replace("\\", "\\\\").replace('"', '\\"')


def prepare_security(data_dir: Path, security: str) -> BrokerSecurity | None:
    """The TLS files of a ``--security`` mode, made on first use (None for plaintext)."""
    if security not in SECURITY_MODES:
        raise BrokerError(
            f"--security must be one of {', '.join(SECURITY_MODES)}, got {security!r}"
        )
    if security == PLAINTEXT.lower():
        return None
    secure = BrokerSecurity(data_dir)
    formatted = (data_dir / KAFKA_LOGS / "meta.properties").exists()
    if formatted and not secure.password_file.is_file():
        raise BrokerError(
            f"{data_dir} was formatted without SCRAM users, so it cannot serve SASL_SSL; "
            "use a new --data-dir"
        )
    try:
        secure.make()
    except (TlsSetupError, OSError) as exc:
        raise BrokerError(f"cannot set up TLS in {data_dir}: {exc}") from exc
    return secure
