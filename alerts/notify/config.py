"""The notification config: Alertmanager's YAML layout, read into routes and integrations.

Why Alertmanager's layout: ``route``, ``receivers`` with ``webhook_configs``,
``slack_configs`` and ``pagerduty_configs``, and ``inhibit_rules`` read the same as in an
Alertmanager config, so people can copy their routes over. Additions: ``file_configs``
(JSON lines to a file or stdout), ``receiver_from`` on routes (the catalog's owner or
on-call), ``global.retry`` (backoff of failed deliveries) and ``*_file`` variants of
secrets so they need not sit in the config. Differences: ``send_resolved`` defaults to
true for every integration, since resolved notices are part of the contract here.

A relative ``file_configs`` path lives under the data dir, so the shipped config writes
next to the rest of the data. The config is chosen by ``--notify-config``, then
``[alerts] notify_config`` or ``$AGENTWATCH_ALERTS_NOTIFY_CONFIG``, else the shipped one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.resources
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from agentwatch.alerts.notify.receivers import (
    PAGERDUTY_URL,
    FileIntegration,
    Integration,
    PagerDutyIntegration,
    SlackIntegration,
    WebhookIntegration,
)
from agentwatch.alerts.notify.routing import (
    Matcher,
    Route,
    Router,
    RoutingError,
    matches_all,
    parse_route,
)
from agentwatch.decoding import decode
from agentwatch.durations import DurationError, parse_duration
from agentwatch.settings import ConfigError, Settings, check_keys

DEFAULT_FILE = "notify.yaml"


def shipped_config_path() -> Path:
    """The default config shipped with the package."""
    return Path(str(importlib.resources.files("agentwatch.alerts.notify").joinpath(DEFAULT_FILE)))


def notify_config_path(settings: Settings) -> Path:
    configured = settings.value("alerts", "notify_config")
    return Path(configured) if configured else shipped_config_path()


def add_notify_config_argument(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """``--notify-config FILE`` for commands that notify (``--config`` is the TOML file)."""
    parser.add_argument(
        "--notify-config",
        type=Path,
        metavar="FILE",
        default=notify_config_path(settings),
        help="notification routes and receivers, YAML in Alertmanager's layout "
        "([alerts] notify_config, env AGENTWATCH_ALERTS_NOTIFY_CONFIG; default %(default)s)",
    )


class RetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``global.retry`` as written in the file."""

    attempts: int = 5
    initial_backoff: str | float = "1s"
    max_backoff: str | float = "1m"
    multiplier: float = 2.0


class GlobalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``global`` block as written in the file."""

    external_url: str = ""
    generator_url: str = ""
    http_timeout: str | float = "10s"
    retry: RetrySettings = msgspec.field(default_factory=RetrySettings)


_RETRY = RetrySettings()
_INITIAL_BACKOFF = parse_duration(_RETRY.initial_backoff)
_MAX_BACKOFF = parse_duration(_RETRY.max_backoff)


def _span(value: str | float, where: str) -> dt.timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for one delivery, bounded in attempts and in delay."""

    attempts: int = _RETRY.attempts
    initial_backoff: dt.timedelta = _INITIAL_BACKOFF
    max_backoff: dt.timedelta = _MAX_BACKOFF
    multiplier: float = _RETRY.multiplier

    def delay(self, failed_attempts: int) -> dt.timedelta:
        """The wait after the ``failed_attempts``-th failure (1-based)."""
        seconds = self.initial_backoff.total_seconds() * self.multiplier ** (failed_attempts - 1)
        return min(dt.timedelta(seconds=seconds), self.max_backoff)


@dataclass(frozen=True)
class InhibitRule:
    """While a source alert fires, target alerts with the same ``equal`` labels are muted."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    def inhibits(self, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        return (
            matches_all(self.source, source)
            and matches_all(self.target, target)
            and all(source.get(k, "") == target.get(k, "") for k in self.equal)
        )


@dataclass
class NotifyConfig:
    route: Route
    receivers: dict[str, list[Integration]]
    inhibit_rules: list[InhibitRule] = field(default_factory=list)
    external_url: str = ""
    generator_url: str = ""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    source: Path | None = None


def load_notify_config(path: Path, data_dir: Path) -> NotifyConfig:
    """Read and check a config file; every problem is a ``ConfigError`` naming the file."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"notification config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"notification config {path}: {exc}") from None
    try:
        config = parse_notify_config(doc, data_dir, base=path.parent)
    except (RoutingError, ValueError, TypeError) as exc:
        raise ConfigError(f"notification config {path}: {exc}") from None
    config.source = path
    return config


def parse_notify_config(doc: Any, data_dir: Path, base: Path | None = None) -> NotifyConfig:
    """A config from its parsed YAML; raises ``ValueError`` on anything unusable."""
    if not isinstance(doc, Mapping):
        raise ValueError("the top level must be a mapping")
    top = dict.fromkeys(("global", "route", "receivers", "inhibit_rules", "templates"))
    try:
        check_keys(dict(doc), top, "")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix(": ")) from None
    glob = decode(doc.get("global"), GlobalSettings, "global")
    timeout = _span(glob.http_timeout, "global.http_timeout").total_seconds()
    receivers: dict[str, list[Integration]] = {}
    for i, rdoc in enumerate(doc.get("receivers") or []):
        _mapping(rdoc, f"receivers[{i}]")
        name = rdoc.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"receivers[{i}]: needs a name")
        if name in receivers:
            raise ValueError(f"receivers[{i}]: duplicate receiver name {name!r}")
        receivers[name] = _integrations(rdoc, f"receivers[{i}] ({name})", data_dir, base, timeout)
    route_doc = doc.get("route")
    if not isinstance(route_doc, Mapping):
        raise ValueError("route: a root route is required")
    route = parse_route(route_doc)
    inhibit = [_inhibit_rule(r, f"inhibit_rules[{i}]") for i, r in enumerate(
        doc.get("inhibit_rules") or []
    )]  # fmt: skip
    retry = RetryPolicy(
        attempts=glob.retry.attempts,
        initial_backoff=_span(glob.retry.initial_backoff, "global.retry.initial_backoff"),
        max_backoff=_span(glob.retry.max_backoff, "global.retry.max_backoff"),
        multiplier=glob.retry.multiplier,
    )
    if retry.attempts < 1 or retry.multiplier < 1:
        raise ValueError("global.retry: attempts must be >= 1 and multiplier >= 1")
    config = NotifyConfig(
        route=route,
        receivers=receivers,
        inhibit_rules=inhibit,
        external_url=glob.external_url,
        generator_url=glob.generator_url,
        retry=retry,
    )
    Router(route, list(receivers))  # checks that every route names a defined receiver
    return config


def _mapping(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be a mapping")


def _inhibit_rule(doc: Any, where: str) -> InhibitRule:
    _mapping(doc, where)

    def matchers(key: str, legacy: str, legacy_re: str) -> tuple[Matcher, ...]:
        out = [Matcher.parse(m) for m in doc.get(key) or []]
        out += [Matcher.create(str(k), "=", str(v)) for k, v in (doc.get(legacy) or {}).items()]
        out += [Matcher.create(str(k), "=~", str(v)) for k, v in (doc.get(legacy_re) or {}).items()]
        return tuple(out)

    source = matchers("source_matchers", "source_match", "source_match_re")
    target = matchers("target_matchers", "target_match", "target_match_re")
    if not source or not target:
        raise ValueError(f"{where}: needs source_matchers and target_matchers")
    return InhibitRule(source, target, tuple(str(x) for x in doc.get("equal") or []))


def _url(value: str, where: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: not an http(s) URL")  # the value may be a secret
    return value


def _secret(doc: Mapping[str, Any], key: str, where: str, base: Path | None) -> str:
    """``key``'s value, or the content of the file ``<key>_file`` names: one is required."""
    value = str(doc[key]) if doc.get(key) else None
    file_key = f"{key}_file"
    if value is None and doc.get(file_key):
        secret_path = Path(str(doc[file_key]))
        if not secret_path.is_absolute() and base is not None:
            secret_path = base / secret_path
        try:
            value = secret_path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{where}: {file_key}: {exc}") from None
    if not value:
        raise ValueError(f"{where}: needs {key} or {file_key}")
    return value


def _integrations(
    rdoc: Mapping[str, Any], where: str, data_dir: Path, base: Path | None, timeout: float
) -> list[Integration]:
    known = {"name", "webhook_configs", "slack_configs", "pagerduty_configs", "file_configs"}
    unknown = set(rdoc) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (supported: {sorted(known)})")
    out: list[Integration] = []

    def each(key: str) -> Sequence[Mapping[str, Any]]:
        items = rdoc.get(key) or []
        for j, item in enumerate(items):
            _mapping(item, f"{where}.{key}[{j}]")
        return list(items)

    def http_timeout(cfg: Mapping[str, Any]) -> float:
        return parse_duration(cfg["timeout"]).total_seconds() if "timeout" in cfg else timeout

    for j, cfg in enumerate(each("webhook_configs")):
        url = _secret(cfg, "url", f"{where}.webhook_configs[{j}]", base)
        out.append(
            WebhookIntegration(
                url=_url(url, f"{where}.webhook_configs[{j}].url"),
                send_resolved=bool(cfg.get("send_resolved", True)),
                max_alerts=int(cfg.get("max_alerts", 0)),
                timeout=http_timeout(cfg),
                headers={str(k): str(v) for k, v in (cfg.get("headers") or {}).items()},
            )
        )
    for j, cfg in enumerate(each("slack_configs")):
        url = _secret(cfg, "api_url", f"{where}.slack_configs[{j}]", base)
        out.append(
            SlackIntegration(
                url=_url(url, f"{where}.slack_configs[{j}].api_url"),
                channel=cfg.get("channel"),
                username=cfg.get("username"),
                send_resolved=bool(cfg.get("send_resolved", True)),
                max_alerts=int(cfg.get("max_alerts", 10)),
                timeout=http_timeout(cfg),
            )
        )
    for j, cfg in enumerate(each("pagerduty_configs")):
        key = _secret(cfg, "routing_key", f"{where}.pagerduty_configs[{j}]", base)
        out.append(
            PagerDutyIntegration(
                routing_key=key,
                url=_url(str(cfg.get("url", PAGERDUTY_URL)), f"{where}.pagerduty_configs[{j}].url"),
                source=str(cfg.get("source", "agentwatch")),
                send_resolved=bool(cfg.get("send_resolved", True)),
                timeout=http_timeout(cfg),
            )
        )
    for j, cfg in enumerate(each("file_configs")):
        raw = cfg.get("path")
        if not raw:
            raise ValueError(f"{where}.file_configs[{j}]: needs a path (or - for stdout)")
        path = str(raw)
        if path != "-" and not Path(path).is_absolute():
            path = str(data_dir / path)
        out.append(FileIntegration(path=path, send_resolved=bool(cfg.get("send_resolved", True))))
    return out
