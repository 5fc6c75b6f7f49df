"""The error every command reports as one line and exit code 2: a setting that cannot be used.

It lives apart from :mod:`agentwatch.settings` so that low-level modules (the Kafka client
options, the SDK) can raise it without importing the settings and what they import.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A config file, flag or environment value that cannot be used."""
