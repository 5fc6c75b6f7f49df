"""A real single-node Apache Kafka 4.x broker (KRaft) that the project starts by itself.

The official jars come from Maven Central (``make install`` copies them to ``.kafka/libs``)
or from an Apache Kafka installation named by ``$KAFKA_HOME``. Everything a broker owns
lives in one data directory: ``server.properties``, the KRaft/partition logs, ``broker.log``
(the JVM's stdout and stderr) and ``broker.json`` (pid and ports), so ``stop`` and
``status`` need nothing but that directory.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentwatch.broker_tls import PLAINTEXT, SECURITY_MODES, BrokerSecurity, TlsSetupError
from agentwatch.kafka import KafkaSecurity, client_options

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
DEFAULT_DATA_DIR = ".kafka/broker"
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0
DEFAULT_PARTITIONS = 3
MIN_JAVA = 17
HOST = "127.0.0.1"
EXIT_NOT_RUNNING = 3

INFO_FILE = "broker.json"
LOG_FILE = "broker.log"
PROPERTIES_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
LOCK_FILE = ".broker.lock"
KAFKA_LOGS = "kafka-logs"

KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

# The repository's `.kafka/libs`: the package is installed editable, so it sits beside it.
REPO_KAFKA_LIBS = Path(__file__).resolve().parent.parent / ".kafka" / "libs"

_HEAP_RE = re.compile(r"^\d+[kKmMgG]?$")

# Brokers started by this process, kept so they are reaped (not left as zombies that
# still answer kill(pid, 0)) and so Popen does not warn about a still-running child.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """Kafka could not be located, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class BrokerInfo:
    """A running broker as recorded in ``<data_dir>/broker.json``."""

    pid: int
    port: int
    controller_port: int
    bootstrap: str
    data_dir: Path
    started_at: float  # epoch seconds
    security_protocol: str = PLAINTEXT

    @property
    def client_security(self) -> KafkaSecurity | None:
        """How a client logs in to this broker (None: plaintext, no login)."""
        if self.security_protocol == PLAINTEXT:
            return None
        return BrokerSecurity(self.data_dir).client_security()

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.started_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "started_at": self.started_at,
            "security_protocol": self.security_protocol,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BrokerInfo:
        return cls(
            pid=int(doc["pid"]),
            port=int(doc["port"]),
            controller_port=int(doc["controller_port"]),
            bootstrap=str(doc["bootstrap"]),
            data_dir=Path(doc["data_dir"]),
            started_at=float(doc["started_at"]),
            security_protocol=str(doc.get("security_protocol", PLAINTEXT)),
        )


# --------------------------------------------------------------------------- locating


def kafka_libs_dir() -> Path:
    """The directory of Kafka jars: $AGENTWATCH_KAFKA_LIBS, $KAFKA_HOME/libs or .kafka/libs.

    An explicit setting never falls back to another location, so a wrong KAFKA_HOME is
    reported instead of silently running different jars.
    """
    explicit = os.environ.get("AGENTWATCH_KAFKA_LIBS")
    home = os.environ.get("KAFKA_HOME")
    if explicit:
        libs, source = Path(explicit), "AGENTWATCH_KAFKA_LIBS"
    elif home:
        libs, source = Path(home) / "libs", "KAFKA_HOME"
    else:
        libs, source = REPO_KAFKA_LIBS, "the repository (fetched by `make install`)"
    if not any(libs.glob("kafka_2.*.jar")):
        raise BrokerError(
            f"no Kafka broker jars (kafka_2.13-*.jar) in {libs}, from {source}. "
            "Run `make install` to fetch Apache Kafka from Maven Central, or set KAFKA_HOME "
            "to an Apache Kafka 4.x installation."
        )
    return libs


def java_executable() -> str:
    """Path of a Java 17+ ``java``: $JAVA_HOME/bin/java if present, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise BrokerError(
            f"java not found: the Kafka broker needs Java {MIN_JAVA}+ "
            "(Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; or set JAVA_HOME)."
        )
    major = _java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerError(
            f"{java} is Java {major}; the Kafka broker needs Java {MIN_JAVA}+ "
            "(Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; or set JAVA_HOME)."
        )
    return java


@functools.cache
def _java_major_version(java: str) -> int:
    try:
        out = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run {java}: {exc}") from None
    match = re.search(r"java\.specification\.version = (\S+)", out.stderr + out.stdout)
    if match is None:
        raise BrokerError(f"could not tell the Java version of {java}: {out.stderr.strip()}")
    parts = match.group(1).split(".")
    return int(parts[1] if parts[0] == "1" else parts[0])  # "1.8" is Java 8


def kafka_java_command(main_class: str, args: list[str], heap: str = DEFAULT_HEAP) -> list[str]:
    """The argv running any class from the Kafka jars, e.g. a tool like ConsumerPerformance."""
    if not _HEAP_RE.match(heap):
        raise BrokerError(f"heap size {heap!r} is not a JVM size like 512m or 1g")
    libs = kafka_libs_dir()  # first: a missing install is the likelier, more useful message
    return [
        java_executable(),
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        "-cp",
        f"{libs}/*",
        main_class,
        *args,
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        # A zombie (someone else's unreaped child) has exited for our purposes.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live Kafka broker for ``data_dir`` (not a recycled pid)."""
    if not _pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no /proc (macOS): the pid is the best evidence there is
    try:
        argv = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return KAFKA_MAIN.encode() in argv and str(data_dir / PROPERTIES_FILE).encode() in argv


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    child = _CHILDREN.get(pid)
    while _pid_alive(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=min(remaining, 0.5))
        else:
            time.sleep(min(remaining, 0.1))
    return True


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise start and stop on one data directory across processes."""
    with (data_dir / LOCK_FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no broker.log)"
    tail = "\n".join(text.splitlines()[-lines:])
    if "org.slf4j.impl.StaticLoggerBinder" in text and "INFO" not in text:
        tail += (
            "\n(Kafka logged nothing: the jars include no SLF4J binding such as "
            "org.apache.logging.log4j:log4j-slf4j-impl, so the reason is not recorded.)"
        )
    return tail


# --------------------------------------------------------------------------- config


def _server_properties(
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


_LOG4J2 = """\
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
    return previous if previous != port and _port_bindable(previous) else None


def _pick_controller_port(data_dir: Path, port: int) -> int:
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


def _format_storage(
    data_dir: Path, props: Path, heap: str, secure: BrokerSecurity | None = None
) -> None:
    if (data_dir / KAFKA_LOGS / "meta.properties").exists():
        return
    args = ["format", "-t", _cluster_id(), "-c", str(props)]
    cmd = kafka_java_command(
        STORAGE_TOOL, args + (secure.format_arguments() if secure else []), heap
    )
    log.info("formatting Kafka storage", extra={"data_dir": str(data_dir)})
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerError("formatting the Kafka storage took over 120 s") from None
    if result.returncode != 0:
        raise BrokerError(
            f"formatting the Kafka storage in {data_dir} failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr).strip()}"
        )


# --------------------------------------------------------------------------- API


def _read_info(data_dir: Path) -> BrokerInfo | None:
    try:
        return BrokerInfo.from_json(json.loads((data_dir / INFO_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_info(info: BrokerInfo) -> None:
    tmp = info.data_dir / f".{INFO_FILE}.tmp"
    tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    tmp.replace(info.data_dir / INFO_FILE)


def broker_status(data_dir: Path) -> BrokerInfo | None:
    """The broker running on ``data_dir``, or None (no record, or its process is gone)."""
    data_dir = data_dir.resolve()
    info = _read_info(data_dir)
    if info is None or not _is_our_broker(info.pid, data_dir):
        return None
    return info


def _accepts_requests(bootstrap: str, timeout: float, security: KafkaSecurity | None) -> bool:
    """True once the broker answers metadata requests and lists itself as unfenced."""
    from kafka.admin import KafkaAdminClient

    ms = max(1000, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            **client_options(bootstrap, security),
            client_id="agentwatch-broker-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
        )
    except Exception as exc:  # any failure only means "not ready yet"
        log.debug("broker not ready", extra={"bootstrap": bootstrap, "reason": repr(exc)})
        return False
    try:
        cluster = admin.describe_cluster()
        admin.list_topics()
    except Exception as exc:
        log.debug("broker not ready", extra={"bootstrap": bootstrap, "reason": repr(exc)})
        return False
    finally:
        admin.close()
    return any(not broker.get("is_fenced", False) for broker in cluster.get("brokers", []))


def _wait_ready(proc: subprocess.Popen[bytes], info: BrokerInfo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise BrokerError(
                f"the Kafka broker exited with code {code} while starting; "
                f"last lines of {info.log_file}:\n{_tail(info.log_file)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"the Kafka broker did not accept requests on {info.bootstrap} within "
                f"{timeout:g} s; last lines of {info.log_file}:\n{_tail(info.log_file)}"
            )
        ready = _port_open(info.port) and _accepts_requests(
            info.bootstrap, min(remaining, 5.0), info.client_security
        )
        if ready:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=min(0.1, max(remaining, 0.01)))


def start_broker(
    data_dir: Path,
    port: int,
    *,
    heap: str = DEFAULT_HEAP,
    timeout: float = DEFAULT_START_TIMEOUT,
    partitions: int = DEFAULT_PARTITIONS,
    security: str = PLAINTEXT.lower(),
) -> BrokerInfo:
    """Start a broker on ``data_dir`` and return once it serves Kafka requests on ``port``.

    ``security="sasl_ssl"`` serves TLS with SCRAM-SHA-512 (and PLAIN) logins only; the CA,
    certificates and the ``agentwatch`` user are made under ``data_dir`` on first use.

    Idempotent: if a broker already runs on ``data_dir`` it is returned as is (even when
    it listens on another port, which is logged). Storage is formatted on first use only,
    so topics and offsets survive a stop and start.
    """
    data_dir = data_dir.resolve()
    command = kafka_java_command(KAFKA_MAIN, [str(data_dir / PROPERTIES_FILE)], heap)
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        running = broker_status(data_dir)
        if running is not None:
            if running.port != port:
                log.warning(
                    "broker already running on another port",
                    extra={"bootstrap": running.bootstrap, "requested_port": port},
                )
            log.info("broker already running", extra=_log_fields(running))
            return running
        (data_dir / INFO_FILE).unlink(missing_ok=True)  # stale: its process is gone

        if not _port_bindable(port):
            raise BrokerError(f"port {port} on {HOST} is already in use; pick another --port")
        controller_port = _pick_controller_port(data_dir, port)
        secure = _prepare_security(data_dir, security)
        props = data_dir / PROPERTIES_FILE
        props.write_text(_server_properties(data_dir, port, controller_port, partitions, secure))
        props.chmod(0o600)  # a secure broker's file holds its SASL password
        (data_dir / LOG4J_FILE).write_text(_LOG4J2)
        _format_storage(data_dir, props, heap, secure)

        log_file = data_dir / LOG_FILE
        if log_file.exists():
            log_file.replace(data_dir / f"{LOG_FILE}.1")
        command.insert(1, f"-Dlog4j2.configurationFile={data_dir / LOG4J_FILE}")
        with log_file.open("wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the CLI and ignores its Ctrl-C
            )
        _CHILDREN[proc.pid] = proc
        info = BrokerInfo(
            pid=proc.pid,
            port=port,
            controller_port=controller_port,
            bootstrap=f"{HOST}:{port}",
            data_dir=data_dir,
            started_at=time.time(),
            security_protocol=PLAINTEXT if secure is None else secure.client_security().protocol,
        )
        _write_info(info)
        try:
            _wait_ready(proc, info, timeout)
        except BaseException:
            _kill(proc)
            (data_dir / INFO_FILE).unlink(missing_ok=True)
            raise
    log.info(
        "broker started",
        extra={**_log_fields(info), "seconds": round(time.time() - info.started_at, 2)},
    )
    return info


def _prepare_security(data_dir: Path, security: str) -> BrokerSecurity | None:
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


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    _CHILDREN.pop(proc.pid, None)


def stop_broker(data_dir: Path, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
    """Stop the broker on ``data_dir``: SIGTERM (controlled shutdown), SIGKILL after ``timeout``.

    Returns False if none was running.
    """
    data_dir = data_dir.resolve()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir):
        info = broker_status(data_dir)
        if info is None:
            (data_dir / INFO_FILE).unlink(missing_ok=True)
            return False
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
        if not _wait_exit(info.pid, timeout):
            log.warning(
                "broker ignored SIGTERM; killing it",
                extra={**_log_fields(info), "timeout": timeout},
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            if not _wait_exit(info.pid, 10.0):
                raise BrokerError(f"broker pid {info.pid} survived SIGKILL")
        _CHILDREN.pop(info.pid, None)
        (data_dir / INFO_FILE).unlink(missing_ok=True)
    log.info(
        "broker stopped",
        extra={**_log_fields(info), "seconds": round(time.monotonic() - began, 2)},
    )
    return True


def _log_fields(info: BrokerInfo) -> dict[str, Any]:
    return {"pid": info.pid, "bootstrap": info.bootstrap, "data_dir": str(info.data_dir)}


__all__ = [
    "BrokerError",
    "BrokerInfo",
    "broker_status",
    "free_port",
    "java_executable",
    "kafka_java_command",
    "kafka_libs_dir",
    "start_broker",
    "stop_broker",
]
