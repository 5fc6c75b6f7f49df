"""Errors every command reports as one line: a setting that cannot be used (exit 2), and
the first line of any error.

It lives apart from :mod:`agentwatch.settings` so that low-level modules (the Kafka client
options, the SDK) can raise it without importing the settings and what they import.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A config file, flag or environment value that cannot be used."""


def first_line(exc: BaseException) -> str:
    """An error's first line (DuckDB's and Kafka's run on with context), or its type."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
