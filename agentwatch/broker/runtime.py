"""The Kafka jars and the Java that runs them.

The official jars come from Maven Central (``make install`` copies them to ``.kafka/libs``)
or from an Apache Kafka installation named by ``$KAFKA_HOME``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

DEFAULT_HEAP = "512m"
MIN_JAVA = 17

# The repository's `.kafka/libs`: the package is installed editable, so it sits beside it
# (this file is agentwatch/broker/runtime.py).
REPO_KAFKA_LIBS = Path(__file__).resolve().parents[2] / ".kafka" / "libs"

_HEAP_RE = re.compile(r"^\d+[kKmMgG]?$")


class BrokerError(RuntimeError):
    """Kafka could not be located, started or stopped; the message says what to do."""


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
