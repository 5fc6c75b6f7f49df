"""Command-line options several commands share, so each has one name, setting and help."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Final

from agentwatch.durations import DurationError, format_duration, number_or_duration
from agentwatch.ingest.contract.control import KEYS_ENV, ControlKeyError, Keyring
from agentwatch.setting_types import MAX_AGENTS, MAX_PORT, MAX_WORKERS
from agentwatch.settings import ConfigError, Settings


def at_least_one(text: str) -> int:
    """An argparse ``type``: a count (a batch size, a number of agents), 1 or more."""
    return _whole(text, 1)


def port(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535. What 0 means is each flag's to say
    (not served, turned off, any free port); :func:`fixed_port` where it has no meaning."""
    return _port(text, 0)


def fixed_port(text: str) -> int:
    """An argparse ``type``: a TCP port that must be named, 1 to 65535 (one that others are
    told to connect to, such as the broker's)."""
    return _port(text, 1)


def _port(text: str, low: int) -> int:
    value = _whole(text)
    if not low <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port from {low} to {MAX_PORT}, got {value}")
    return value


def worker_count(text: str) -> int:
    """An argparse ``type``: a number of worker processes, 0 (one per core) to MAX_WORKERS."""
    return _whole(text, 0, MAX_WORKERS)


def fleet_size(text: str) -> int:
    """An argparse ``type``: the size of a simulated fleet, 1 to MAX_AGENTS."""
    return _whole(text, 1, MAX_AGENTS)


def _whole(text: str, low: int | None = None, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
    return value


def non_negative(text: str) -> float:
    """An argparse ``type``: a finite amount, 0 or more."""
    return _not_negative(_finite(text))


def positive(text: str) -> float:
    """An argparse ``type``: a finite amount above 0 (a rate, a budget)."""
    return _above_zero(_finite(text))


DURATION_HELP: Final = "a duration, e.g. 500ms or 2m; a bare number is seconds"


def seconds(text: str) -> float:
    """An argparse ``type``: a duration of 0 or more (:data:`DURATION_HELP`), in seconds."""
    return _not_negative(_finite_seconds(text))


def positive_seconds(text: str) -> float:
    """An argparse ``type``: a duration above 0 (a timeout, an interval), in seconds."""
    return _above_zero(_finite_seconds(text))


def duration_help(purpose: str, default: float | None, unset: str = "none") -> str:
    """The help of a duration flag: what it is for, how to write one, and its default."""
    shown = unset if default is None else format_duration(default)
    return f"{purpose} ({DURATION_HELP}; default {shown})"


def _not_negative(value: float) -> float:
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value:g}")
    return value


def _above_zero(value: float) -> float:
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def given(text: str) -> str:
    """An argparse ``type``: text that names or explains something (an agent, a reason, a
    comment); an empty or blank one is refused, so nothing is recorded without it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or blank")
    return text


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return _checked_finite(value, text)


def _finite_seconds(text: str) -> float:
    try:
        value = number_or_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return _checked_finite(value, text)


def _checked_finite(value: float, text: str) -> float:
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name
_SERVER: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+)(?::([0-9]{1,5}))?")


def bootstrap_servers(text: str) -> str:
    """An argparse ``type``: ``HOST[:PORT][,HOST[:PORT]...]`` (an IPv6 host in brackets;
    Kafka's port 9092 when none is given), checked at once rather than after waiting out
    the connect timeout."""
    for server in text.split(","):
        found = _SERVER.fullmatch(server.strip())
        if found is None or not 1 <= int(found.group(1) or 9092) <= MAX_PORT:
            raise argparse.ArgumentTypeError(
                f"expected HOST:PORT (several separated by commas), got {text!r}"
            )
    return text


def topic_name(text: str) -> str:
    """An argparse ``type``: a name Kafka accepts for a topic."""
    if not _TOPIC.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"a topic name is 1 to 249 letters, digits, '.', '_' or '-', got {text!r}"
        )
    return text


def add_bootstrap_option(
    parser: argparse.ArgumentParser, settings: Settings, purpose: str = "Kafka bootstrap servers"
) -> None:
    """``--bootstrap``: ``[kafka] bootstrap``, env AGENTWATCH_KAFKA_BOOTSTRAP."""
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        type=bootstrap_servers,
        default=settings.value("kafka", "bootstrap"),
        help=f"{purpose} (env AGENTWATCH_KAFKA_BOOTSTRAP; default %(default)s)",
    )


def add_db_option(
    parser: argparse.ArgumentParser,
    settings: Settings,
    purpose: str = "the store: its SQLite metadata file (data in lake/ beside it) or "
    "postgres:<dsn>",
) -> None:
    """``--db``: ``[storage] db``, the lake's metadata database."""
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(settings.value("storage", "db")),
        help=f"{purpose} (env AGENTWATCH_STORAGE_DB; default %(default)s)",
    )


def add_metrics_options(
    parser: argparse.ArgumentParser, settings: Settings, section: str, served: str
) -> None:
    """``--metrics-port`` and ``--metrics-host``: ``[section] metrics_port`` (unset or 0: not
    served) and ``metrics_host``, loopback unless told, so nothing is open by default."""
    parser.add_argument(
        "--metrics-port",
        type=_served_port,
        metavar="P",
        default=settings.value(section, "metrics_port") or None,
        help=f"serve {served} for Prometheus on this port, at /metrics; 0 does not serve "
        f"them ([{section}] metrics_port; default: not served)",
    )
    parser.add_argument(
        "--metrics-host",
        default=settings.value(section, "metrics_host"),
        help="address /metrics listens on; 0.0.0.0 for every interface (default %(default)s)",
    )


def _served_port(text: str) -> int | None:
    """A ``--metrics-port``: a :func:`port`, 0 (None) for not served."""
    return port(text) or None


def add_control_topic_option(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--control-topic``: ``[control] topic``, the compacted topic of breaker states."""
    parser.add_argument(
        "--control-topic",
        default=settings.value("control", "topic"),
        help="the compacted topic of breaker states (env AGENTWATCH_CONTROL_TOPIC; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--control-keys-file",
        metavar="PATH",
        default=settings.value("control", "keys_file"),
        help="file of 'key-id:secret' lines that sign and verify control records; the "
        f"first signs (env AGENTWATCH_CONTROL_KEYS_FILE; or the keys themselves in {KEYS_ENV})",
    )


def control_keyring(args: argparse.Namespace) -> Keyring:
    """The keys of ``--control-keys-file`` or ``AGENTWATCH_CONTROL_KEYS``; ConfigError if none."""
    try:
        keyring = Keyring.from_file(args.control_keys_file) if args.control_keys_file else None
        keyring = keyring or Keyring.from_env()
    except ControlKeyError as exc:
        raise ConfigError(str(exc)) from None
    if keyring is None:
        raise ConfigError(
            "no control keys: control records are signed, so give --control-keys-file "
            f"([control] keys_file, AGENTWATCH_CONTROL_KEYS_FILE) or {KEYS_ENV} "
            "(see docs/security.md)"
        )
    return keyring
