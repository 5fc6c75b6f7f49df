"""Receivers: how one notification (a group of alerts) is put on the wire.

Why these four: the Alertmanager webhook v4 payload is what existing tooling accepts
(it is Alertmanager's own, field for field); Slack and PagerDuty are where on-call
people are; the file receiver needs nothing and suits local runs and the demo.

An integration's ``send`` either returns (delivered) or raises ``DeliveryError``, which
says whether trying again can help: connection failures, timeouts, HTTP 429 and 5xx
can; other 4xx answers mean the request itself is wrong and cannot. Retrying with
backoff, and recording what could not be delivered, is the notifier's job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from agentwatch import __version__
from agentwatch.alerts.model import Alert

WEBHOOK_VERSION = "4"
# Go's zero time: Alertmanager's endsAt for an alert with no known end.
ZERO_TIME = "0001-01-01T00:00:00Z"
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
# PagerDuty accepts exactly these severities; ours map onto them.
PAGERDUTY_SEVERITY = {
    "critical": "critical", "page": "critical", "error": "error", "high": "error",
    "warning": "warning", "medium": "warning", "info": "info", "low": "info", "none": "info",
}  # fmt: skip
SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}
_RESPONSE_LIMIT = 64 * 1024


class DeliveryError(Exception):
    """A notification that did not get through; ``retryable`` says if trying again may help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def rfc3339(ts: dt.datetime) -> str:
    """UTC, ``Z`` suffix, fractional seconds only when there are any."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Notification:
    """One group's alerts for one receiver at one flush: what every integration renders."""

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    alerts: tuple[Alert, ...]  # firing first, then resolved
    now: dt.datetime
    external_url: str = ""
    generator_url: str = ""  # a format string over rule, fingerprint, agent_id

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "firing"]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "resolved"]

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    def alert_generator_url(self, alert: Alert) -> str:
        if not self.generator_url:
            return ""
        return self.generator_url.format_map(
            {"rule": alert.rule, "fingerprint": alert.fingerprint, "agent_id": alert.agent_id or ""}
        )

    def title(self) -> str:
        """``[FIRING:2] HighErrorRate support-bot``: status, count, group labels."""
        count = len(self.firing) if self.firing else len(self.resolved)
        name = self.group_labels.get("alertname", "")
        rest = [v for k, v in sorted(self.group_labels.items()) if k != "alertname"]
        return f"[{self.status.upper()}:{count}] " + " ".join(x for x in (name, *rest) if x)


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_payload(n: Notification, max_alerts: int = 0) -> dict[str, Any]:
    """The Alertmanager webhook v4 payload, field for field."""
    alerts = list(n.alerts)
    truncated = 0
    if max_alerts > 0 and len(alerts) > max_alerts:
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": WEBHOOK_VERSION,
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": n.external_url,
        "alerts": [
            {
                "status": a.state,
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": _ends_at(a, n.now),
                "generatorURL": n.alert_generator_url(a),
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }


def _ends_at(alert: Alert, now: dt.datetime) -> str:
    if alert.ends_at is not None:
        return rfc3339(alert.ends_at)
    return rfc3339(now) if alert.state == "resolved" else ZERO_TIME


class Integration(Protocol):
    """One way of reaching a receiver (a receiver may have several)."""

    kind: ClassVar[str]
    send_resolved: bool

    def send(self, notification: Notification) -> None: ...


def post_json(
    url: str,
    body: object,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """POST JSON; return the response body or raise a classified ``DeliveryError``."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"agentwatch/{__version__}",
            **(headers or {}),
        },
    )
    where = redact_url(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return bytes(resp.read(_RESPONSE_LIMIT))
    except urllib.error.HTTPError as exc:
        text = exc.read(512).decode(errors="replace").strip()
        retry_after = _retry_after(exc.headers.get("Retry-After"))
        retryable = exc.code == 429 or exc.code >= 500
        raise DeliveryError(
            f"HTTP {exc.code} from {where}: {text[:200]}",
            retryable=retryable,
            retry_after=retry_after,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{where}: {reason}", retryable=True) from None


def redact_url(url: str) -> str:
    """Scheme, host and port only: Slack and other webhook paths are secrets."""
    parts = urllib.parse.urlsplit(url)
    tail = "/..." if parts.path not in ("", "/") else ""
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{tail}"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class WebhookIntegration:
    """A generic webhook: POSTs the Alertmanager v4 payload as it is."""

    url: str
    send_resolved: bool = True
    max_alerts: int = 0
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: ClassVar[str] = "webhook"

    def send(self, notification: Notification) -> None:
        post_json(
            self.url,
            webhook_payload(notification, self.max_alerts),
            timeout=self.timeout,
            headers=self.headers,
        )


@dataclass
class SlackIntegration:
    """A Slack-compatible incoming webhook: ``text`` for clients, blocks for people."""

    url: str
    channel: str | None = None
    username: str | None = None
    send_resolved: bool = True
    max_alerts: int = 10
    timeout: float = 10.0
    kind: ClassVar[str] = "slack"

    def send(self, notification: Notification) -> None:
        # Slack answers 200 "ok" and reports errors with 4xx/5xx, which post_json raises.
        post_json(self.url, slack_payload(notification, self), timeout=self.timeout)


def slack_payload(n: Notification, cfg: SlackIntegration | None = None) -> dict[str, Any]:
    """Incoming-webhook JSON: fallback ``text``, Block Kit ``blocks``, a colored attachment."""
    limit = cfg.max_alerts if cfg is not None else 10
    shown = list(n.alerts)[:limit]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": n.title()[:150]}},
    ]
    for alert in shown:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_alert(alert)[:3000]}}
        )
    context = [f"group `{n.group_key}`"]
    if len(n.alerts) > len(shown):
        context.insert(0, f"and {len(n.alerts) - len(shown)} more alert(s)")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": t[:3000]} for t in context]}
    )
    summary = n.common_annotations().get("summary") or (
        shown[0].annotations.get("summary", "") if shown else ""
    )
    payload: dict[str, Any] = {
        "text": f"{n.title()} {summary}".strip(),
        "blocks": blocks,
        "attachments": [
            {
                "color": "#2eb886" if n.status == "resolved" else _slack_color(n),
                "fallback": f"{n.title()} {summary}".strip(),
                "fields": [
                    {"title": k, "value": v, "short": True}
                    for k, v in sorted(n.common_labels().items())
                ],
            }
        ],
    }
    if cfg is not None and cfg.channel:
        payload["channel"] = cfg.channel
    if cfg is not None and cfg.username:
        payload["username"] = cfg.username
    return payload


def _slack_alert(alert: Alert) -> str:
    icon = ":rotating_light:" if alert.state == "firing" else ":white_check_mark:"
    title = alert.annotations.get("summary") or alert.rule
    lines = [f"{icon} *{_slack_escape(title)}*"]
    if alert.annotations.get("description"):
        lines.append(_slack_escape(alert.annotations["description"]))
    facts = [f"*{k}*: `{_slack_escape(v)}`" for k, v in sorted(alert.labels.items())]
    lines.append("  ".join(facts))
    if alert.annotations.get("runbook_url"):
        lines.append(f"<{alert.annotations['runbook_url']}|runbook>")
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_color(n: Notification) -> str:
    top = highest_severity(n.firing)
    return {"critical": "#a30200", "error": "#e01e5a"}.get(top, "#daa038")


def highest_severity(alerts: Sequence[Alert]) -> str:
    return min((a.severity for a in alerts), key=lambda s: SEVERITY_RANK.get(s, 2), default="")


@dataclass
class PagerDutyIntegration:
    """PagerDuty Events API v2: one incident per group, resolved when the group is."""

    routing_key: str
    url: str = PAGERDUTY_URL
    source: str = "agentwatch"
    send_resolved: bool = True
    timeout: float = 10.0
    kind: ClassVar[str] = "pagerduty"

    def send(self, notification: Notification) -> None:
        post_json(self.url, pagerduty_event(notification, self), timeout=self.timeout)


def pagerduty_event(n: Notification, cfg: PagerDutyIntegration) -> dict[str, Any]:
    """A trigger event while anything fires, else a resolve event, for one dedup key."""
    dedup_key = hashlib.sha256(n.group_key.encode()).hexdigest()
    if n.status == "resolved":
        return {"routing_key": cfg.routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    firing = n.firing
    severity = PAGERDUTY_SEVERITY.get(highest_severity(firing), "error")
    summary = n.common_annotations().get("summary") or firing[0].annotations.get("summary", "")
    event: dict[str, Any] = {
        "routing_key": cfg.routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": f"{n.title()} {summary}".strip()[:1024],
            "source": n.common_labels().get("agent_id") or cfg.source,
            "severity": severity,
            "timestamp": rfc3339(min(a.starts_at for a in firing)),
            "class": n.common_labels().get("alertname", ""),
            "component": n.common_labels().get("agent_id", ""),
            "group": n.group_key,
            "custom_details": {
                "firing": [_details(a) for a in firing],
                "resolved": [_details(a) for a in n.resolved],
                "num_firing": len(firing),
                "num_resolved": len(n.resolved),
            },
        },
        "client": "agentwatch",
    }
    if n.external_url:
        event["client_url"] = n.external_url
    links = sorted(
        {a.annotations["runbook_url"] for a in firing if a.annotations.get("runbook_url")}
    )
    if links:
        event["links"] = [{"href": url, "text": "runbook"} for url in links]
    return event


def _details(alert: Alert) -> dict[str, Any]:
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "value": alert.value,
        "starts_at": rfc3339(alert.starts_at),
        "fingerprint": alert.fingerprint,
    }


@dataclass
class FileIntegration:
    """JSON lines of the v4 payload, appended to a file (``-`` for stdout)."""

    path: str
    send_resolved: bool = True
    kind: ClassVar[str] = "file"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, notification: Notification) -> None:
        line = json.dumps(webhook_payload(notification), sort_keys=True) + "\n"
        with self._lock:
            if self.path == "-":
                sys.stdout.write(line)
                sys.stdout.flush()
                return
            try:
                target = Path(self.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("a") as fh:
                    fh.write(line)
            except OSError as exc:
                raise DeliveryError(f"{self.path}: {exc}", retryable=True) from None
