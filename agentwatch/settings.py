"""Settings: built-in defaults < a TOML config file < AGENTWATCH_* environment variables.

Command-line flags win over all three: each command takes its flag defaults from
``Settings.get``, so ``--help`` shows the value that will really be used.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CONFIG_ENV = "AGENTWATCH_CONFIG"
DEFAULT_CONFIG_FILE = "agentwatch.toml"


class ConfigError(Exception):
    """A config file or environment value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Values by section and key, e.g. ``[kafka] bootstrap`` or ``AGENTWATCH_KAFKA_BOOTSTRAP``."""

    file_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    def get(self, section: str, key: str, default: T) -> T:
        env_name = f"AGENTWATCH_{section}_{key}".upper().replace("-", "_")
        raw = os.environ.get(env_name)
        if raw is not None:
            return _coerce(raw, default, env_name)
        value = self.file_values.get(section, {}).get(key, default)
        if default is not None and not isinstance(value, type(default)):
            if isinstance(default, float) and isinstance(value, int):
                return float(value)  # type: ignore[return-value]
            raise ConfigError(
                f"{self.source}: [{section}] {key} must be {type(default).__name__}, got {value!r}"
            )
        return value  # type: ignore[no-any-return]


def _coerce(raw: str, default: T, name: str) -> T:
    if default is None or isinstance(default, str):
        return raw  # type: ignore[return-value]
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True  # type: ignore[return-value]
            if raw.lower() in ("0", "false", "no", "off"):
                return False  # type: ignore[return-value]
            raise ValueError(raw)
        return type(default)(raw)  # type: ignore[call-arg]
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None


def load_settings(path: str | None = None) -> Settings:
    """Read the config file named by ``path``, ``$AGENTWATCH_CONFIG`` or ./agentwatch.toml."""
    explicit = path or os.environ.get(CONFIG_ENV)
    candidate = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist")
        return Settings()
    try:
        with candidate.open("rb") as fh:
            values = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate}: {exc}") from None
    return Settings(file_values=values, source=candidate)
