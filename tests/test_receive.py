"""`alerts receive`: webhook v4 payloads in, Alerts out; garbage refused; and the real
Alertmanager delivering to it over loopback."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.alertmanager.access import WebhookAuth
from agentwatch.alerts.alertmanager.receive import ReceiveServer, TransitionFilter, parse_webhook
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.receivers import Notification, webhook_payload
from agentwatch.broker.ports import free_port
from tests.conftest import require_tool

TOKEN = "receiver-token-" + "7" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# A payload as Alertmanager 0.25 sends it (nanosecond times, Go's zero time for endsAt).
AM_PAYLOAD = {
    "receiver": "agentwatch",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "AgentViolationBurst",
                "agent_id": "hr-assistant-1",
                "category": "safety",
                "severity": "critical",
            },
            "annotations": {
                "summary": "hr-assistant-1: 50% of policy checks failed in the last minute",
                "runbook_url": "runbooks/contain-agent.yaml",
            },
            "startsAt": "2025-03-01T09:30:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": "c3f0a1b2d4e5f607",
        },
        {
            "status": "resolved",
            "labels": {
                "alertname": "AgentSilent",
                "agent_id": "it-support-2",
                "severity": "warning",
            },
            "annotations": {},
            "startsAt": "2025-03-01T08:00:00+01:00",
            "endsAt": "2025-03-01T09:10:00Z",
            "generatorURL": "",
            "fingerprint": "0011223344556677",
        },
    ],
    "groupLabels": {"alertname": "AgentViolationBurst"},
    "commonLabels": {"alertname": "AgentViolationBurst"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="AgentViolationBurst"}',
    "truncatedAlerts": 0,
}


class Collector:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.fail = False
        self.event = threading.Event()

    def __call__(self, alerts: Sequence[Alert]) -> None:
        if self.fail:
            raise RuntimeError("runbook engine down")
        self.alerts.extend(alerts)
        self.event.set()

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> list[Alert]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [a for a in list(self.alerts) if predicate(a)]
            if found:
                return found
            self.event.wait(0.2)
            self.event.clear()
        raise AssertionError(f"no matching alert within {timeout}s; got {self.alerts}")


@pytest.fixture
def receiver() -> Iterator[tuple[ReceiveServer, Collector]]:
    sink = Collector()
    server = ReceiveServer("127.0.0.1", 0, sink, auth=WebhookAuth((TOKEN.encode(),)))
    server.start()
    try:
        yield server, sink
    finally:
        server.shutdown()
        server.server_close()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST with the receiver's token unless ``headers`` say otherwise."""
    req = urllib.request.Request(url, data=body, method="POST", headers=AUTH | (headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_real_payload_becomes_alerts(receiver: tuple[ReceiveServer, Collector]) -> None:
    server, sink = receiver
    status, answer = post(f"{server.url}/webhook", json.dumps(AM_PAYLOAD).encode())
    assert (status, answer) == (200, {"status": "ok", "alerts": 2})
    burst, silent = sink.alerts
    assert burst.rule == "AgentViolationBurst" and burst.state == "firing"
    assert burst.agent_id == "hr-assistant-1" and burst.severity == "critical"
    assert burst.annotations["runbook_url"] == "runbooks/contain-agent.yaml"
    assert burst.starts_at == dt.datetime(2025, 3, 1, 9, 30, 0, 123456, tzinfo=dt.UTC)
    assert burst.ends_at is None
    assert silent.state == "resolved"
    assert silent.starts_at == dt.datetime(2025, 3, 1, 7, 0, tzinfo=dt.UTC)
    assert silent.ends_at == dt.datetime(2025, 3, 1, 9, 10, tzinfo=dt.UTC)


def bad(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(AM_PAYLOAD))
    for path, value in changes.items():
        target: Any = doc
        *parents, last = path.split("__")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "JSON object"),
        (bad(version="3"), "version"),
        (bad(status="maybe"), "status"),
        (bad(alerts="none"), "alerts must be a list"),
        (bad(alerts__0__labels={"agent_id": "x"}), "alertname"),
        (bad(alerts__0__labels={"alertname": 5}), "labels"),
        (bad(alerts__0__startsAt="yesterday"), "startsAt"),
        (bad(alerts__0__startsAt="2025-03-01T09:30:00"), "time zone"),
        (bad(alerts__1__status="pending"), "status"),
        (bad(groupKey=None), "groupKey"),
    ],
)
def test_garbage_is_refused_with_400(
    receiver: tuple[ReceiveServer, Collector], doc: Any, message: str
) -> None:
    server, sink = receiver
    status, answer = post(server.url, json.dumps(doc).encode())
    assert status == 400 and message in answer["error"]
    assert sink.alerts == []


def test_not_json_and_size_limits(receiver: tuple[ReceiveServer, Collector]) -> None:
    server, _ = receiver
    assert post(server.url, b"{not json")[0] == 400
    assert post(server.url, b"\xff\xfe")[0] == 400
    server.max_body = 100
    assert post(server.url, json.dumps(AM_PAYLOAD).encode())[0] == 413


def test_missing_content_length_is_411(receiver: tuple[ReceiveServer, Collector]) -> None:
    server, _ = receiver
    host, port = server.server_address[:2]
    import socket

    with socket.create_connection((str(host), port), timeout=5) as s:
        s.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 411")


def test_a_failing_sink_answers_500_so_alertmanager_retries(
    receiver: tuple[ReceiveServer, Collector],
) -> None:
    server, sink = receiver
    sink.fail = True
    status, answer = post(server.url, json.dumps(AM_PAYLOAD).encode())
    assert status == 500 and "runbook engine down" in answer["error"]


def test_health(receiver: tuple[ReceiveServer, Collector]) -> None:
    server, _ = receiver
    with urllib.request.urlopen(f"{server.url}/-/healthy", timeout=5) as resp:
        assert resp.status == 200


def test_our_own_webhook_payload_reads_back() -> None:
    now = dt.datetime(2025, 3, 1, 10, tzinfo=dt.UTC)
    alert = Alert(
        rule="AgentErrorRateHigh",
        labels={"alertname": "AgentErrorRateHigh", "severity": "warning", "agent_id": "a"},
        annotations={"summary": "s"},
        state="resolved",
        starts_at=now - dt.timedelta(minutes=5),
        ends_at=now,
    )
    payload = webhook_payload(
        Notification("r", "{}:{}", {}, (alert,), now=now, external_url="http://x")
    )
    (back,) = parse_webhook(json.loads(json.dumps(payload)))
    assert back == alert and back.fingerprint == payload["alerts"][0]["fingerprint"]


def test_transition_filter_passes_changes_only() -> None:
    seen: list[list[str]] = []
    f = TransitionFilter(lambda alerts: seen.append([a.state for a in alerts]))
    (firing, resolved) = parse_webhook(AM_PAYLOAD)
    f([firing])
    f([firing])  # Alertmanager's repeat
    f([firing, resolved])
    resolved_burst = Alert(firing.rule, firing.labels, firing.annotations, "resolved",
                           firing.starts_at)  # fmt: skip
    f([resolved_burst])
    f([firing])  # fires again
    assert seen == [["firing"], ["resolved"], ["resolved"], ["firing"]]


def _post_to_alertmanager(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_real_alertmanager_delivers_to_receive(
    receiver: tuple[ReceiveServer, Collector], tmp_path: Path
) -> None:
    binary = require_tool("prometheus-alertmanager")
    server, sink = receiver
    token_file = tmp_path / "receiver.token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        json.dumps(
            {
                "route": {
                    "receiver": "agentwatch",
                    "group_by": ["alertname", "agent_id"],
                    "group_wait": "1s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "agentwatch",
                        "webhook_configs": [
                            {
                                "url": f"{server.url}/alertmanager",
                                "send_resolved": True,
                                "http_config": {
                                    "authorization": {
                                        "type": "Bearer",
                                        "credentials_file": str(token_file),
                                    }
                                },
                            }
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.2)
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        labels = {
            "alertname": "AgentViolationBurst",
            "agent_id": "hr-assistant-1",
            "severity": "critical",
        }
        annotations = {"summary": "violations", "runbook_url": "runbooks/contain-agent.yaml"}
        _post_to_alertmanager(
            url, [{"labels": labels, "annotations": annotations, "startsAt": start.isoformat()}]
        )
        (firing,) = sink.wait_for(lambda a: a.state == "firing")
        assert dict(firing.labels) == labels
        assert firing.annotations["runbook_url"] == "runbooks/contain-agent.yaml"
        assert firing.starts_at == start
        end = dt.datetime.now(dt.UTC)
        _post_to_alertmanager(
            url,
            [
                {
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": start.isoformat(),
                    "endsAt": end.isoformat(),
                }
            ],
        )
        (resolved,) = sink.wait_for(lambda a: a.state == "resolved")
        assert resolved.fingerprint == firing.fingerprint
        assert resolved.ends_at is not None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_receive_command_prints_changes_of_state() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "alerts", "receive",
         "--port", str(port)],
        env={**os.environ, "AGENTWATCH_RECEIVE_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/healthy", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        body = json.dumps(AM_PAYLOAD).encode()
        assert post(url, body)[0] == 200
        assert post(url, body)[0] == 200  # a repeat: nothing new to print
        assert post(url, b"junk")[0] == 400
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["rule"], x["state"]) for x in lines] == [
        ("AgentViolationBurst", "firing"),
        ("AgentSilent", "resolved"),
    ]
    assert lines[0]["labels"]["agent_id"] == "hr-assistant-1"
