"""The notification config: Alertmanager's YAML layout, read into routes and integrations.

Why Alertmanager's layout: ``route``, ``receivers`` with ``webhook_configs``,
``slack_configs`` and ``pagerduty_configs``, and ``inhibit_rules`` read the same as in an
Alertmanager config, so people can copy their routes over. Additions: ``file_configs``
(JSON lines to a file or stdout), ``receiver_from`` on routes (the catalog's owner or
on-call), ``global.retry`` (backoff of failed deliveries) and ``*_file`` variants of
secrets so they need not sit in the config. Differences: ``send_resolved`` defaults to
true for every integration, since resolved notices are part of the contract here.

The file decodes into the structs below (``NotifyDoc`` and what it holds), whose field
defaults are the config's: a misspelt key at any depth, a value of the wrong type or a
bad duration is one line naming the file, the key path and the problem
(``receivers[2].webhook_configs[0].timout: unknown key (did you mean timeout?)``).

A relative ``file_configs`` path lives under the data dir, so the shipped config writes
next to the rest of the data. The config is chosen by ``--notify-config``, then
``[alerts] notify_config`` or ``$AGENTWATCH_ALERTS_NOTIFY_CONFIG``, else the shipped one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.resources
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

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
    RouteDoc,
    Router,
    matches_all,
    parse_matchers,
    route_from_doc,
)
from agentwatch.decoding import decode
from agentwatch.durations import DurationError, parse_duration
from agentwatch.settings import ConfigError, Settings
from agentwatch.yamlfile import read_yaml

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


def _given(value: str | float) -> str:
    """A duration as written in the file (a YAML ``0`` decodes as ``0.0``)."""
    return value if isinstance(value, str) else format(value, "g")


def _span(value: str | float, where: str) -> dt.timedelta:
    """A timeout or backoff: a duration above 0."""
    try:
        span = parse_duration(value)
    except DurationError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not span:
        raise ValueError(f"{where}: must be above 0, got {_given(value)}")
    return span


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


class _Integration(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What every integration may say. Defaults are the integrations' own (receivers.py)."""

    send_resolved: bool = True


class _HttpIntegration(_Integration, frozen=True, kw_only=True):
    timeout: str | float | None = None  # None: global.http_timeout


class WebhookConfig(_HttpIntegration, frozen=True, kw_only=True):
    url: str = ""
    url_file: str = ""
    max_alerts: Annotated[int, msgspec.Meta(ge=0)] = WebhookIntegration.max_alerts
    headers: dict[str, str] = {}


class SlackConfig(_HttpIntegration, frozen=True, kw_only=True):
    api_url: str = ""
    api_url_file: str = ""
    channel: str | None = None
    username: str | None = None
    max_alerts: Annotated[int, msgspec.Meta(ge=0)] = SlackIntegration.max_alerts


class PagerDutyConfig(_HttpIntegration, frozen=True, kw_only=True):
    routing_key: str = ""
    routing_key_file: str = ""
    url: str = PAGERDUTY_URL
    source: str = PagerDutyIntegration.source


class FileConfig(_Integration, frozen=True, kw_only=True):
    path: Annotated[str, msgspec.Meta(min_length=1)]  # "-": stdout


class ReceiverDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    webhook_configs: tuple[WebhookConfig, ...] = ()
    slack_configs: tuple[SlackConfig, ...] = ()
    pagerduty_configs: tuple[PagerDutyConfig, ...] = ()
    file_configs: tuple[FileConfig, ...] = ()


class InhibitRuleDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source_matchers: tuple[str, ...] = ()
    source_match: dict[str, str] = {}
    source_match_re: dict[str, str] = {}
    target_matchers: tuple[str, ...] = ()
    target_match: dict[str, str] = {}
    target_match_re: dict[str, str] = {}
    equal: tuple[str, ...] = ()


class NotifyDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A whole notification config as written."""

    route: RouteDoc
    global_: GlobalSettings = msgspec.field(default_factory=GlobalSettings, name="global")
    receivers: tuple[ReceiverDoc, ...] = ()
    inhibit_rules: tuple[InhibitRuleDoc, ...] = ()
    templates: tuple[str, ...] = ()  # Alertmanager's template files: accepted, not used


def load_notify_config(path: Path, data_dir: Path) -> NotifyConfig:
    """Read and check a config file; every problem is a ``ConfigError`` naming the file."""
    doc = read_yaml(path)
    try:
        config = parse_notify_config(doc, data_dir, base=path.parent)
    except ValueError as exc:
        raise ConfigError(f"notification config {path}: {exc}") from None
    config.source = path
    return config


def parse_notify_config(doc: Any, data_dir: Path, base: Path | None = None) -> NotifyConfig:
    """A config from its parsed YAML; raises ``ValueError`` (with the key path) on anything
    unusable. Relative ``*_file`` secrets are read under ``base``."""
    notify = decode(doc, NotifyDoc, "")
    glob = notify.global_
    timeout = _span(glob.http_timeout, "global.http_timeout").total_seconds()
    receivers: dict[str, list[Integration]] = {}
    for i, receiver in enumerate(notify.receivers):
        if receiver.name in receivers:
            raise ValueError(f"receivers[{i}].name: duplicate receiver name {receiver.name!r}")
        receivers[receiver.name] = _integrations(
            receiver, f"receivers[{i}]", data_dir, base, timeout
        )
    route = route_from_doc(notify.route)
    inhibit = [_inhibit_rule(r, f"inhibit_rules[{i}]") for i, r in enumerate(notify.inhibit_rules)]
    retry = RetryPolicy(
        attempts=glob.retry.attempts,
        initial_backoff=_span(glob.retry.initial_backoff, "global.retry.initial_backoff"),
        max_backoff=_span(glob.retry.max_backoff, "global.retry.max_backoff"),
        multiplier=glob.retry.multiplier,
    )
    if retry.attempts < 1 or retry.multiplier < 1:
        raise ValueError("global.retry: attempts must be >= 1 and multiplier >= 1")
    if retry.max_backoff < retry.initial_backoff:
        raise ValueError(
            "global.retry.max_backoff: must be at least initial_backoff "
            f"({_given(glob.retry.initial_backoff)}), got {_given(glob.retry.max_backoff)}"
        )
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


def _inhibit_rule(doc: InhibitRuleDoc, where: str) -> InhibitRule:
    source = parse_matchers(
        doc.source_matchers, doc.source_match, doc.source_match_re, where, "source_"
    )
    target = parse_matchers(
        doc.target_matchers, doc.target_match, doc.target_match_re, where, "target_"
    )
    if not source or not target:
        raise ValueError(f"{where}: needs source_matchers and target_matchers")
    return InhibitRule(source, target, doc.equal)


def _url(value: str, where: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: not an http(s) URL")  # the value may be a secret
    return value


def _secret(value: str, file: str, key: str, where: str, base: Path | None) -> str:
    """``value`` of ``key``, or the content of the file its ``<key>_file`` names: one of
    them is required."""
    if not value and file:
        secret_path = Path(file)
        if not secret_path.is_absolute() and base is not None:
            secret_path = base / secret_path
        try:
            value = secret_path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{where}.{key}_file: {exc}") from None
    if not value:
        raise ValueError(f"{where}: needs {key} or {key}_file")
    return value


def _integrations(
    receiver: ReceiverDoc, where: str, data_dir: Path, base: Path | None, timeout: float
) -> list[Integration]:
    out: list[Integration] = []

    def http_timeout(cfg: _HttpIntegration, at: str) -> float:
        return (
            timeout if cfg.timeout is None else _span(cfg.timeout, f"{at}.timeout").total_seconds()
        )

    for j, hook in enumerate(receiver.webhook_configs):
        at = f"{where}.webhook_configs[{j}]"
        out.append(
            WebhookIntegration(
                url=_url(_secret(hook.url, hook.url_file, "url", at, base), f"{at}.url"),
                send_resolved=hook.send_resolved,
                max_alerts=hook.max_alerts,
                timeout=http_timeout(hook, at),
                headers=hook.headers,
            )
        )
    for j, slack in enumerate(receiver.slack_configs):
        at = f"{where}.slack_configs[{j}]"
        url = _secret(slack.api_url, slack.api_url_file, "api_url", at, base)
        out.append(
            SlackIntegration(
                url=_url(url, f"{at}.api_url"),
                channel=slack.channel,
                username=slack.username,
                send_resolved=slack.send_resolved,
                max_alerts=slack.max_alerts,
                timeout=http_timeout(slack, at),
            )
        )
    for j, pager in enumerate(receiver.pagerduty_configs):
        at = f"{where}.pagerduty_configs[{j}]"
        out.append(
            PagerDutyIntegration(
                routing_key=_secret(
                    pager.routing_key, pager.routing_key_file, "routing_key", at, base
                ),
                url=_url(pager.url, f"{at}.url"),
                source=pager.source,
                send_resolved=pager.send_resolved,
                timeout=http_timeout(pager, at),
            )
        )
    for file in receiver.file_configs:
        path = file.path
        if path != "-" and not Path(path).is_absolute():
            path = str(data_dir / path)
        out.append(FileIntegration(path=path, send_resolved=file.send_resolved))
    return out
