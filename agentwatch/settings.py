"""Settings: built-in defaults < a TOML config file < AGENTWATCH_* environment variables.

Every setting is a typed field of one section struct below, with its default, so each
default is written once; commands take their flag defaults from :meth:`Settings.value`,
and ``--help`` shows the value that will really be used. Command-line flags win over all
three. A TOML file with an unknown section or key, or a value of the wrong type, is an
error naming the file, the key and (for a misspelling) the closest valid key. A duration
is written ``1h30m`` or as a number of seconds (agentwatch/setting_types.py).
"""

from __future__ import annotations

import codecs
import difflib
import functools
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from agentwatch.durations import DurationError
from agentwatch.errors import ConfigError
from agentwatch.ingest.contract.wire import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPIC
from agentwatch.setting_types import (
    Agents,
    Count,
    DurationText,
    FixedPort,
    Port,
    Positive,
    PositiveSeconds,
    RetentionDays,
    Seconds,
    Workers,
    read_duration,
)

T = TypeVar("T")

CONFIG_ENV = "AGENTWATCH_CONFIG"
DEFAULT_CONFIG_FILE = "agentwatch.toml"


__all__ = ["ConfigError", "Settings", "load_settings"]


class _Section(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class KafkaSettings(_Section, frozen=True):
    bootstrap: str = "127.0.0.1:9092"
    topic: str = DEFAULT_TOPIC
    timeout: PositiveSeconds = 15.0
    """How long ``simulate`` waits for Kafka at the start."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, in any case (agentwatch/kafka.py checks it)."""
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    ssl_check_hostname: bool = True
    sasl_mechanism: str = ""
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (agentwatch/kafka.py checks the combination)."""
    sasl_username: str = ""
    sasl_password_file: str = ""
    """The password itself only ever comes from this file or AGENTWATCH_KAFKA_SASL_PASSWORD."""


def _retention_days() -> dict[str, int]:
    """Days each table keeps its rows: raw traffic a month; the rollup tiers (which the
    metrics views read), alerting and audit 400 days."""
    raw = dict.fromkeys(("events", "dead_letters", "otlp_unmapped"), 30)
    audit = ("alert_events", "actions", "notifications", "drift_scores")
    governance = ("catalog_changes", "releases", "access_reviews")
    rollups = ("minute_rollups", "hour_rollups", "day_rollups")
    return {**raw, **dict.fromkeys((*rollups, *audit, *governance), 400)}


class StorageSettings(_Section, frozen=True):
    db: str = "data/agentwatch.sqlite"
    """The lake's metadata database: a SQLite file (data in ``lake/`` beside it) or
    ``postgres:<dsn>``."""
    data_path: str = ""
    """Where the Parquet data lives: "" beside a SQLite metadata database; a folder or ``s3://...``."""
    maintain_interval: Seconds = 600.0
    """Time between maintenance runs inside ``agentwatch process``; 0 turns them off."""
    snapshot_grace: Seconds = 3600.0
    """How long old snapshots and replaced files stay readable: longer than any query runs."""
    retention_days: dict[str, RetentionDays] = msgspec.field(default_factory=_retention_days)
    """Days of rows kept per table; 0 keeps a table's rows forever. The file and the
    environment (``events=30,dead_letters=7``) each change the tables they name."""
    legal_hold: list[str] = msgspec.field(default_factory=list)
    """Agent ids whose rows retention never deletes (environment: a comma list)."""


class LogSettings(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] | None = None
    """None: text on a terminal, JSON lines otherwise."""


class ProcessSettings(_Section, frozen=True):
    group: str = "agentwatch"
    dlq_topic: str | None = None
    idle_timeout: Seconds | None = None
    max_batch: Count = 25_000
    """The most records a worker lands in one set (all its partitions), and the most it
    holds pending behind that set: with the start-up, what bounds its memory."""
    flush_interval: Seconds = 0.5
    """How long a record waits at most before its batch lands: the data's freshness."""
    max_message_bytes: Count = DEFAULT_MAX_MESSAGE_BYTES
    dedup_horizon: Seconds = 3600.0
    dedup_max_ids: Count = 20_000_000
    """The most event ids one partition's dedup index holds."""
    workers: Workers = 0
    """Consumer-group members run as processes; 0: one per core."""
    dedup_memory_mb: Positive = 64.0
    """The dedup indexes of one process share this budget (8 bytes an id; see dedup.py)."""
    duckdb_memory_mb: Positive = 64.0
    """DuckDB's memory limit in a landing worker, doubled for a set that needs more."""
    session_timeout: PositiveSeconds = 10.0
    allowed_lateness: Seconds = 300.0
    metrics_port: Port | None = None
    """None or 0: /metrics not served."""
    metrics_host: str = "127.0.0.1"  # loopback unless told: nothing open by default
    max_label_values: Count = 200
    connect_timeout: PositiveSeconds = 5.0
    """How long to wait for a first answer from Kafka; later outages are waited out."""


class PricingSettings(_Section, frozen=True):
    file: str = ""
    """"": the pricing table shipped with agentwatch."""


class SimulateSettings(_Section, frozen=True):
    agents: Agents = 8
    rate: Positive = 200.0
    duration: Seconds = 60.0
    sim_rate: Positive = 200.0


class BrokerSettings(_Section, frozen=True):
    port: FixedPort = 9092
    data_dir: str = ".kafka/broker"
    heap: str = "512m"
    start_timeout: PositiveSeconds = 60.0
    stop_timeout: PositiveSeconds = 30.0
    partitions: Count = 3
    security: Literal["plaintext", "sasl_ssl"] = "plaintext"


class ControlSettings(_Section, frozen=True):
    topic: str = "agent-control"
    """The compacted topic of breaker states."""
    keys_file: str = ""
    """'key-id:secret' lines that sign and verify control records."""


class AlertsSettings(_Section, frozen=True):
    catalog: str = ""
    rules: str = ""
    runbooks: str = ""
    notify_config: str = ""
    """Each "": the one shipped with agentwatch."""
    interval: PositiveSeconds = 10.0
    metrics_port: Port = 0
    """0: /metrics not served."""
    metrics_host: str = "127.0.0.1"  # loopback unless told: nothing open by default


class ReceiveSettings(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 9095
    """0: any free port (printed at start)."""
    token_file: str = ""
    basic_auth_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    workers: Count = 8
    read_timeout: PositiveSeconds = 10.0
    request_timeout: PositiveSeconds = 30.0
    max_body: Count = 4 * 1024 * 1024


class OtlpSettings(_Section, frozen=True):
    host: str = "127.0.0.1"
    http_port: Port = 4318
    """0: OTLP/HTTP turned off."""
    grpc_port: Port = 4317
    """0: OTLP/gRPC turned off."""
    max_body_bytes: Count = 8 * 1024 * 1024
    token: str = ""
    token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    keep_content: bool = False
    metrics_port: Port | None = None
    """None or 0: /metrics not served."""
    metrics_host: str = "127.0.0.1"
    http_workers: Count = 64  # OTLP/HTTP connections served at once; one more gets 503
    unmapped_topic: str = ""
    collector_topic: str = ""
    collector_format: str = "otlp_proto"


class RedactionSettings(_Section, frozen=True):
    file: str = ""
    """"": the redaction rules shipped with agentwatch."""


class LifecycleSettings(_Section, frozen=True):
    revoke_webhook: str = ""
    archive_dir: str = ""


class BreakerSettings(_Section, frozen=True):
    cooldown: DurationText = "10m"


class DriftSettings(_Section, frozen=True):
    config: str = ""
    interval: PositiveSeconds = 60.0
    """Time between ``drift run``'s checks for a due window."""
    metrics_port: Port = 0
    """0: /metrics not served."""
    metrics_host: str = "127.0.0.1"


class DashboardsSettings(_Section, frozen=True):
    range: DurationText = "6h"
    daily_budget_usd: Positive = 1000.0


class DemoSettings(_Section, frozen=True):
    seconds: PositiveSeconds = 60.0
    data_dir: str = "data"
    agents: Agents = 8
    rate: Positive = 300.0
    seed: int = 7
    port: Port = 0
    """The broker's port; 0: any free one."""


class Config(_Section, frozen=True):
    """Every setting, by section: ``[process] max_batch`` is ``Config().process.max_batch``."""

    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    process: ProcessSettings = msgspec.field(default_factory=ProcessSettings)
    pricing: PricingSettings = msgspec.field(default_factory=PricingSettings)
    simulate: SimulateSettings = msgspec.field(default_factory=SimulateSettings)
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    control: ControlSettings = msgspec.field(default_factory=ControlSettings)
    alerts: AlertsSettings = msgspec.field(default_factory=AlertsSettings)
    receive: ReceiveSettings = msgspec.field(default_factory=ReceiveSettings)
    breaker: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    drift: DriftSettings = msgspec.field(default_factory=DriftSettings)
    dashboards: DashboardsSettings = msgspec.field(default_factory=DashboardsSettings)
    demo: DemoSettings = msgspec.field(default_factory=DemoSettings)
    otlp: OtlpSettings = msgspec.field(default_factory=OtlpSettings)
    redaction: RedactionSettings = msgspec.field(default_factory=RedactionSettings)
    lifecycle: LifecycleSettings = msgspec.field(default_factory=LifecycleSettings)


DEFAULTS = Config()
"""The built-in defaults, the one place they are written."""


def env_name(section: str, key: str) -> str:
    """The environment variable of a setting: ``AGENTWATCH_PROCESS_MAX_BATCH``."""
    return f"AGENTWATCH_{section}_{key}".upper().replace("-", "_")


@functools.cache
def _section_types() -> dict[str, Any]:
    """Each section's struct type, read once (reading annotations is slow at start)."""
    return {f.name: f.type for f in msgspec.structs.fields(Config)}


@functools.cache
def _key_types(section: str) -> dict[str, Any]:
    section_type = _section_types().get(section)
    if section_type is None:
        return {}
    return {f.name: f.type for f in msgspec.structs.fields(section_type)}


def _field_type(section: str, key: str) -> Any:
    """The declared type of ``[section] key``, or None when there is no such setting."""
    return _key_types(section).get(key)


@dataclass(frozen=True)
class Settings:
    """Values by section and key, e.g. ``[kafka] bootstrap`` or ``AGENTWATCH_KAFKA_BOOTSTRAP``."""

    config: Config = field(default_factory=Config)
    source: Path | None = None

    def value(self, section: str, key: str) -> Any:
        """A declared setting: its environment variable, else the file, else the default."""
        if _field_type(section, key) is None:
            raise KeyError(f"[{section}] {key} is not a setting")
        return self.get(section, key, getattr(getattr(DEFAULTS, section), key))

    def get(self, section: str, key: str, default: T) -> T:
        """Like :meth:`value`, for a setting that may not be declared (``default`` if unset)."""
        declared = _field_type(section, key)
        raw = os.environ.get(env_name(section, key))
        if raw is not None:
            wanted = declared if declared is not None else type(default)
            value = _coerce(raw, wanted, env_name(section, key))
            if declared is not None and isinstance(value, dict):  # changes the keys it names
                table = getattr(getattr(DEFAULTS, section), key)
                _check_table_keys(value, table, f"{env_name(section, key)}={raw!r}")
                value = {**getattr(getattr(self.config, section), key), **value}
            return value  # type: ignore[no-any-return]
        if declared is None:
            return default
        return getattr(getattr(self.config, section), key)  # type: ignore[no-any-return]


def _coerce(raw: str, wanted: Any, name: str) -> Any:
    """An environment value as its setting's type. A table-valued setting is spelt
    ``key=value,key=value``, a list one ``a,b,c``."""
    if wanted is type(None) or wanted is str:
        return raw
    shape = typing.get_origin(wanted) or wanted
    try:
        if shape is dict:
            value: Any = _pairs(raw, name)
        elif shape is list:
            value = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            value = read_duration(raw, wanted)
        value = msgspec.convert(value, wanted, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{name}={raw!r}: {_problem(exc)}") from None
    except DurationError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r}: must be a finite number")
    return value


def _pairs(raw: str, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{name}={raw!r}: expected KEY=VALUE pairs separated by commas, "
                f"e.g. events=30,dead_letters=7; got {item!r}"
            )
        pairs[key.strip()] = value.strip()
    return pairs


def _check_table_keys(value: dict[str, Any], table: dict[str, Any], where: str) -> None:
    """The keys of a table-valued setting are those of its default (retention: the tables)."""
    for key in value:
        if key not in table:
            close = difflib.get_close_matches(key, list(table), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; one of {', '.join(table)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def _problem(exc: msgspec.ValidationError) -> str:
    """msgspec's message without its ``- at `$...``` suffix (the caller names the key)."""
    return str(exc).split(" - at `", 1)[0]


def check_keys(
    doc: dict[str, Any], allowed: dict[str, Any], source: object, path: str = ""
) -> None:
    """Reject unknown keys, naming the file, the key path and the closest valid key.

    ``allowed`` maps each key to a nested ``allowed`` mapping, or to None for a leaf.
    """
    for key, value in doc.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            close = difflib.get_close_matches(str(key), [str(k) for k in allowed], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: {where}: unknown key{hint}")
        nested = allowed[key]
        if nested is not None and isinstance(value, dict):
            check_keys(value, nested, source, where)


def struct_keys(struct: Any) -> dict[str, Any]:
    """The keys :func:`check_keys` allows for a msgspec struct type, nested structs included."""
    out: dict[str, Any] = {}
    for f in msgspec.structs.fields(struct):
        nested = f.type if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct) else None
        out[f.encode_name] = struct_keys(nested) if nested is not None else None
    return out


def decode_config(values: dict[str, Any], source: object) -> Config:
    """The typed settings of a parsed TOML document, or a ConfigError saying where.

    A table-valued setting (``[storage] retention_days``) may name only its default's keys
    and changes only those it names."""
    allowed = struct_keys(Config)
    for section, key, table in _table_settings():
        allowed[section][key] = dict.fromkeys(table)
    check_keys(values, allowed, source)
    values = _read_durations(values, source)
    try:
        config = msgspec.convert(values, Config)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = message.split(" - at `$.", 1)[1].rstrip("`") if " - at `$." in message else ""
        section, _, key = where.partition(".")
        if key.endswith("[...]"):  # an entry of a table-valued setting: find which
            key = _bad_entry(values.get(section, {}), section, key.removesuffix("[...]"))
        location = f"[{section}] {key}" if key else where
        raise ConfigError(f"{source}: {location}: {_problem(exc)}") from None
    for section, key, table in _table_settings():
        given = getattr(getattr(config, section), key)
        merged = msgspec.structs.replace(getattr(config, section), **{key: {**table, **given}})
        config = msgspec.structs.replace(config, **{section: merged})
    _check_finite(config, source)
    return config


def _read_durations(values: dict[str, Any], source: object) -> dict[str, Any]:
    """``values`` with each duration setting as it holds it (see agentwatch/setting_types.py)."""
    out = dict(values)
    for section, keys in values.items():
        if not isinstance(keys, dict):
            continue
        out[section] = dict(keys)
        for key, value in keys.items():
            try:
                out[section][key] = read_duration(value, _field_type(section, key))
            except DurationError as exc:
                raise ConfigError(f"{source}: [{section}] {key}: {exc}") from None
    return out


def _table_settings() -> list[tuple[str, str, dict[str, Any]]]:
    """``(section, key, default)`` of each table-valued setting."""
    return [
        (section, f.name, getattr(getattr(DEFAULTS, section), f.name))
        for section in _section_types()
        for f in msgspec.structs.fields(getattr(DEFAULTS, section))
        if isinstance(getattr(getattr(DEFAULTS, section), f.name), dict)
    ]


def _bad_entry(doc: dict[str, Any], section: str, key: str) -> str:
    """``key.entry`` for the first entry of a table-valued setting its type refuses."""
    item_type = typing.get_args(_field_type(section, key))[-1]
    for name, item in dict(doc.get(key) or {}).items():
        try:
            msgspec.convert(item, item_type)
        except msgspec.ValidationError:
            return f"{key}.{name}"
    return key


def _check_finite(config: Config, source: object) -> None:
    """inf passes ``ge=0`` and ``gt=0``; no setting means it (as no flag takes it)."""
    for section in _section_types():
        values = getattr(config, section)
        for f in msgspec.structs.fields(values):
            value = getattr(values, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(
                    f"{source}: [{section}] {f.name}: must be a finite number, got {value}"
                )


def load_settings(path: str | None = None) -> Settings:
    """Read the config file named by ``path``, ``$AGENTWATCH_CONFIG`` or ./agentwatch.toml."""
    if path is not None and not path.strip():
        raise ConfigError("--config names no file (an empty path)")
    explicit = path or os.environ.get(CONFIG_ENV)
    candidate = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist")
        return Settings()
    try:
        with candidate.open("rb") as fh:
            raw = fh.read()
        if raw.startswith(codecs.BOM_UTF8):
            raise ConfigError(
                f"{candidate}: starts with a byte order mark: save it as UTF-8 without one"
            )
        values = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{candidate}: not UTF-8 text (TOML files are UTF-8)") from None
    except OSError as exc:  # a directory, unreadable
        raise ConfigError(f"config file {candidate}: {exc.strerror or exc}") from None
    return Settings(config=decode_config(values, candidate), source=candidate)
