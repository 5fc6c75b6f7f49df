"""Command-line options several commands share, so each has one name, setting and help."""

from __future__ import annotations

import argparse
from pathlib import Path

from agentwatch.settings import Settings


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
    parser: argparse.ArgumentParser, settings: Settings, purpose: str = "the DuckDB catalog"
) -> None:
    """``--db``: ``[storage] db``; segments and logs live in the directory beside it."""
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(settings.value("storage", "db")),
        help=f"{purpose} (env AGENTWATCH_STORAGE_DB; default %(default)s)",
    )


def add_control_topic_option(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--control-topic``: ``[control] topic``, the compacted topic of breaker states."""
    parser.add_argument(
        "--control-topic",
        default=settings.value("control", "topic"),
        help="the compacted topic of breaker states (env AGENTWATCH_CONTROL_TOPIC; "
        "default %(default)s)",
    )
