"""Start, stop and inspect a real single-node Apache Kafka 4.x broker (KRaft).

Everything a broker owns lives in one data directory: ``server.properties``, the
KRaft/partition logs, ``broker.log`` (the JVM's stdout and stderr) and ``broker.json``
(pid and ports), so ``stop`` and ``status`` need nothing but that directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentwatch.broker.config import (
    DEFAULT_PARTITIONS,
    LOG4J2,
    LOG4J_FILE,
    PROPERTIES_FILE,
    format_storage,
    pick_controller_port,
    prepare_security,
    server_properties,
)
from agentwatch.broker.ports import HOST, port_bindable, port_open
from agentwatch.broker.runtime import DEFAULT_HEAP, BrokerError, kafka_java_command
from agentwatch.broker.tls import PLAINTEXT, BrokerSecurity, write_private
from agentwatch.kafka import KafkaSecurity, client_options

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0

INFO_FILE = "broker.json"
LOG_FILE = "broker.log"
LOCK_FILE = ".broker.lock"
KAFKA_MAIN = "kafka.Kafka"


# Brokers started by this process, kept so they are reaped (not left as zombies that
# still answer kill(pid, 0)) and so Popen does not warn about a still-running child.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


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
        ready = port_open(info.port) and _accepts_requests(
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

        if not port_bindable(port):
            raise BrokerError(f"port {port} on {HOST} is already in use; pick another --port")
        controller_port = pick_controller_port(data_dir, port)
        secure = prepare_security(data_dir, security)
        props = data_dir / PROPERTIES_FILE
        # A secure broker's file holds its SASL password: private from its creation on.
        write_private(props, server_properties(data_dir, port, controller_port, partitions, secure))
        (data_dir / LOG4J_FILE).write_text(LOG4J2)
        format_storage(data_dir, props, heap, secure)

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
