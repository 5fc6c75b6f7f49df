"""Each receiver against a real HTTP server on 127.0.0.1, checking the exact payloads."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import parse_notify_config
from agentwatch.alerts.notify.notifier import Notifier
from agentwatch.alerts.notify.receivers import (
    DeliveryError,
    FileIntegration,
    Notification,
    PagerDutyIntegration,
    SlackIntegration,
    WebhookIntegration,
    redact_url,
)

T0 = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Capture:
    """What the local server received, and the answers it gives (status, body, headers)."""

    url: str
    requests: list[Captured] = field(default_factory=list)
    answers: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Capture]:
    capture = Capture(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            capture.requests.append(Captured(self.path, dict(self.headers), body))
            status, text, headers = capture.answers.pop(0) if capture.answers else (200, b"ok", {})
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    capture.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        httpd.shutdown()
        httpd.server_close()


def alert(
    state: str, severity: str = "critical", agent: str = "support-bot", **extra: str
) -> Alert:
    return Alert(
        rule="HighErrorRate",
        labels={"alertname": "HighErrorRate", "severity": severity, "agent_id": agent, **extra},
        annotations={
            "summary": f"error rate high on {agent}",
            "description": "12% of calls failed",
            "runbook_url": "https://runbooks.example/high-error-rate",
        },
        state=state,  # type: ignore[arg-type]
        starts_at=T0,
        ends_at=T0 + dt.timedelta(minutes=7) if state == "resolved" else None,
        value=0.12,
        samples=250,
    )


def notification(*alerts: Alert) -> Notification:
    return Notification(
        receiver="support-oncall",
        group_key='{}/{severity="critical"}:{agent_id="support-bot", alertname="HighErrorRate"}',
        group_labels={"alertname": "HighErrorRate", "agent_id": "support-bot"},
        alerts=alerts,
        now=T0 + dt.timedelta(minutes=10),
        external_url="http://agentwatch.local",
        generator_url="http://agentwatch.local/alerts/{rule}?fp={fingerprint}",
    )


def test_webhook_sends_the_alertmanager_v4_payload(server: Capture) -> None:
    firing = alert("firing", region="eu")
    resolved = alert("resolved", region="us")
    WebhookIntegration(url=f"{server.url}/hook", headers={"X-Team": "support"}).send(
        notification(firing, resolved)
    )
    (req,) = server.requests
    assert req.path == "/hook"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Team"] == "support"
    assert req.body == {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{agent_id="support-bot", alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "support-oncall",
        "groupLabels": {"alertname": "HighErrorRate", "agent_id": "support-bot"},
        "commonLabels": {
            "alertname": "HighErrorRate",
            "severity": "critical",
            "agent_id": "support-bot",
        },
        "commonAnnotations": {
            "summary": "error rate high on support-bot",
            "description": "12% of calls failed",
            "runbook_url": "https://runbooks.example/high-error-rate",
        },
        "externalURL": "http://agentwatch.local",
        "alerts": [
            {
                "status": "firing",
                "labels": dict(firing.labels),
                "annotations": dict(firing.annotations),
                "startsAt": "2025-03-01T09:30:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": f"http://agentwatch.local/alerts/HighErrorRate?fp={firing.fingerprint}",
                "fingerprint": firing.fingerprint,
            },
            {
                "status": "resolved",
                "labels": dict(resolved.labels),
                "annotations": dict(resolved.annotations),
                "startsAt": "2025-03-01T09:30:00Z",
                "endsAt": "2025-03-01T09:37:00Z",
                "generatorURL": f"http://agentwatch.local/alerts/HighErrorRate?fp={resolved.fingerprint}",
                "fingerprint": resolved.fingerprint,
            },
        ],
    }


def test_webhook_max_alerts_truncates_and_says_so(server: Capture) -> None:
    alerts = [alert("firing", region=r) for r in ("a", "b", "c")]
    WebhookIntegration(url=server.url, max_alerts=2).send(notification(*alerts))
    body = server.requests[0].body
    assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == 1


def test_slack_payload(server: Capture) -> None:
    SlackIntegration(url=f"{server.url}/services/T0/B0/secret", channel="#support").send(
        notification(alert("firing"), alert("firing", region="eu"))
    )
    body = server.requests[0].body
    assert set(body) == {"text", "blocks", "attachments", "channel"}
    assert body["channel"] == "#support"
    assert body["text"] == ("[FIRING:2] HighErrorRate support-bot error rate high on support-bot")
    header, first, _, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[FIRING:2] HighErrorRate support-bot"},
    }
    assert first["type"] == "section" and first["text"]["type"] == "mrkdwn"
    assert "*error rate high on support-bot*" in first["text"]["text"]
    assert "<https://runbooks.example/high-error-rate|runbook>" in first["text"]["text"]
    assert context["type"] == "context"
    (attachment,) = body["attachments"]
    assert attachment["color"] == "#a30200"  # critical
    assert {"title": "agent_id", "value": "support-bot", "short": True} in attachment["fields"]


def test_slack_resolved_is_green(server: Capture) -> None:
    SlackIntegration(url=server.url).send(notification(alert("resolved")))
    body = server.requests[0].body
    assert body["text"].startswith("[RESOLVED:1]")
    assert body["attachments"][0]["color"] == "#2eb886"
    assert "channel" not in body


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("critical", "critical"), ("error", "error"), ("warning", "warning"), ("info", "info")],
)
def test_pagerduty_trigger(server: Capture, severity: str, expected: str) -> None:
    integ = PagerDutyIntegration(routing_key="R0UTINGKEY", url=f"{server.url}/v2/enqueue")
    server.answers.append((202, b'{"status":"success","message":"Event processed"}', {}))
    n = notification(alert("firing", severity=severity))
    integ.send(n)
    (req,) = server.requests
    assert req.path == "/v2/enqueue"
    event = req.body
    assert set(event) == {
        "routing_key", "event_action", "dedup_key", "payload", "client", "client_url", "links",
    }  # fmt: skip
    assert event["routing_key"] == "R0UTINGKEY"
    assert event["event_action"] == "trigger"
    assert len(event["dedup_key"]) == 64
    payload = event["payload"]
    assert payload["severity"] == expected
    assert payload["source"] == "support-bot"
    assert payload["summary"] == (
        "[FIRING:1] HighErrorRate support-bot error rate high on support-bot"
    )
    assert payload["timestamp"] == "2025-03-01T09:30:00Z"
    assert payload["class"] == "HighErrorRate" and payload["component"] == "support-bot"
    assert payload["custom_details"]["num_firing"] == 1
    assert event["links"] == [
        {"href": "https://runbooks.example/high-error-rate", "text": "runbook"}
    ]


def test_pagerduty_resolve_uses_the_same_dedup_key(server: Capture) -> None:
    integ = PagerDutyIntegration(routing_key="R0UTINGKEY", url=server.url)
    integ.send(notification(alert("firing")))
    integ.send(notification(alert("resolved")))
    trigger, resolve = (r.body for r in server.requests)
    assert resolve == {
        "routing_key": "R0UTINGKEY",
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }


def test_file_receiver_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out" / "alerts.jsonl"
    integ = FileIntegration(path=str(path))
    integ.send(notification(alert("firing")))
    integ.send(notification(alert("resolved")))
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["status"] for d in docs] == ["firing", "resolved"]
    assert docs[0]["version"] == "4" and docs[0]["receiver"] == "support-oncall"


def test_stdout_receiver(capsys: pytest.CaptureFixture[str]) -> None:
    FileIntegration(path="-").send(notification(alert("firing")))
    assert json.loads(capsys.readouterr().out)["status"] == "firing"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
def test_http_errors_are_classified(server: Capture, status: int, retryable: bool) -> None:
    server.answers.append((status, b"nope", {"Retry-After": "7"}))
    with pytest.raises(DeliveryError) as info:
        WebhookIntegration(url=f"{server.url}/hook/s3cret").send(notification(alert("firing")))
    assert info.value.retryable is retryable
    assert info.value.retry_after == 7.0
    assert f"HTTP {status}" in str(info.value)
    assert "s3cret" not in str(info.value)  # webhook paths can be secrets


def test_connection_refused_is_retryable(server: Capture) -> None:
    dead = server.url.rsplit(":", 1)[0] + ":1"
    with pytest.raises(DeliveryError) as info:
        WebhookIntegration(url=dead, timeout=2).send(notification(alert("firing")))
    assert info.value.retryable


def test_redact_url() -> None:
    assert redact_url("https://hooks.slack.com/services/T/B/x") == "https://hooks.slack.com/..."
    assert redact_url("http://127.0.0.1:9093") == "http://127.0.0.1:9093"


def test_notifier_retries_a_webhook_until_it_answers(server: Capture) -> None:
    config = parse_notify_config(
        {
            "global": {"retry": {"attempts": 3, "initial_backoff": "1s"}},
            "route": {"receiver": "hook", "group_wait": "0s", "group_by": ["agent_id"]},
            "receivers": [{"name": "hook", "webhook_configs": [{"url": f"{server.url}/w"}]}],
        },
        Path("."),
    )
    server.answers += [(503, b"busy", {}), (502, b"bad gateway", {})]
    notifier = Notifier(config)
    assert notifier.process([alert("firing")], T0) == []
    assert notifier.tick(T0 + dt.timedelta(seconds=1)) == []
    (sent,) = notifier.tick(T0 + dt.timedelta(seconds=3))
    assert (sent.status, sent.attempts) == ("sent", 3)
    assert len(server.requests) == 3
    assert server.requests[-1].body["groupKey"] == '{}:{agent_id="support-bot"}'
