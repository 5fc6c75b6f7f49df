"""Command-line options several commands share, so each has one name, setting and help."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from agentwatch.ingest.contract.control import KEYS_ENV, ControlKeyError, Keyring
from agentwatch.settings import ConfigError, Settings


def at_least_one(text: str) -> int:
    """An argparse ``type``: a count (a batch size, a number of agents), 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> float:
    """An argparse ``type``: a finite amount (seconds, say), 0 or more."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value:g}")
    return value


def positive(text: str) -> float:
    """An argparse ``type``: a finite amount above 0 (a rate, a timeout, a budget)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_bootstrap_option(
    parser: argparse.ArgumentParser, settings: Settings, purpose: str = "Kafka bootstrap servers"
) -> None:
    """``--bootstrap``: ``[kafka] bootstrap``, env AGENTWATCH_KAFKA_BOOTSTRAP."""
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        default=settings.value("kafka", "bootstrap"),
        help=f"{purpose} (env AGENTWATCH_KAFKA_BOOTSTRAP; default %(default)s)",
    )


def add_db_option(
    parser: argparse.ArgumentParser,
    settings: Settings,
    purpose: str = "the store: its SQLite catalog file (data in lake/ beside it) or postgres:<dsn>",
) -> None:
    """``--db``: ``[storage] db``, the lake's catalog."""
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
        type=int,
        metavar="P",
        default=settings.value(section, "metrics_port") or None,
        help=f"serve {served} for Prometheus on this port, at /metrics "
        f"([{section}] metrics_port; default: not served)",
    )
    parser.add_argument(
        "--metrics-host",
        default=settings.value(section, "metrics_host"),
        help="address /metrics listens on; 0.0.0.0 for every interface (default %(default)s)",
    )


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
