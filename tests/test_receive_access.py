"""`alerts receive` is safe to expose: credentials, TLS, bounded threads, timeouts, and
runbooks that act only on catalogued agents."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.alertmanager.access import BASIC_AUTH_ENV, TOKEN_ENV, WebhookAuth
from agentwatch.alerts.alertmanager.receive import ReceiveServer, catalogued_only, tls_context
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.respond import Response
from agentwatch.alerts.response.runbook_files import load_runbooks
from agentwatch.cli import main
from agentwatch.settings import ConfigError
from tests.conftest import require_tool
from tests.test_receive import AM_PAYLOAD, TOKEN, Collector, post
from tests.test_runbooks import Harness

BODY = json.dumps(AM_PAYLOAD).encode()
AUTH = WebhookAuth((TOKEN.encode(),), {"alertmanager": b"basic-password-0123456789"})


def serve(sink: Collector, **options: Any) -> ReceiveServer:
    server = ReceiveServer("127.0.0.1", 0, sink, auth=options.pop("auth", AUTH), **options)
    server.start()
    return server


@pytest.fixture
def sink() -> Iterator[Collector]:
    yield Collector()


def stop(server: ReceiveServer) -> None:
    server.shutdown()
    server.server_close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        basic("alertmanager", "wrong-password-0123456789"),
        basic("mallory", "basic-password-0123456789"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {TOKEN}"},
    ],
    ids=["none", "wrong", "longer", "bad-password", "bad-user", "not-base64", "scheme"],
)
def test_an_unauthenticated_webhook_gets_401_and_changes_nothing(
    sink: Collector, headers: dict[str, str]
) -> None:
    server = serve(sink)
    try:
        req = urllib.request.Request(server.url, data=BODY, method="POST", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 401
        assert "Bearer" in refused.value.headers["WWW-Authenticate"]
        assert sink.alerts == [] and server.unauthorized == 1
    finally:
        stop(server)


def test_basic_auth_as_alertmanager_sends_it_is_accepted(sink: Collector) -> None:
    server = serve(sink)
    try:
        assert post(server.url, BODY, basic("alertmanager", "basic-password-0123456789"))[0] == 200
        assert len(sink.alerts) == 2
    finally:
        stop(server)


def test_credentials_come_from_files_and_the_environment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# current, then the one being retired\n{TOKEN}\n{'o' * 20}\n")
    users = tmp_path / "users"
    users.write_text("alertmanager:basic-password-0123456789\n")
    auth = WebhookAuth.load(tokens, users, {TOKEN_ENV: "e" * 16, BASIC_AUTH_ENV: "ops:" + "p" * 16})
    assert auth.allows(f"Bearer {'o' * 20}") and auth.allows(f"Bearer {'e' * 16}")
    assert auth.allows(basic("ops", "p" * 16)["Authorization"])
    assert WebhookAuth.load(None, None, {}).required is False
    tokens.write_text("short\n")
    with pytest.raises(ConfigError, match=r"tokens: line 1: the secret has 5 characters"):
        WebhookAuth.load(tokens, None, {})


def test_receive_with_runbooks_refuses_to_start_without_auth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(BASIC_AUTH_ENV, raising=False)
    assert main(["alerts", "receive", "--runbooks", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("agentwatch: alerts receive --runbooks needs credentials")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "alerts.example.com"])
def test_receive_beyond_loopback_refuses_to_start_without_auth(
    host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(BASIC_AUTH_ENV, raising=False)
    assert main(["alerts", "receive", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"agentwatch: --host {host} is beyond loopback and no credentials are configured: "
        f"give --token-file or --basic-auth-file (or {TOKEN_ENV} / {BASIC_AUTH_ENV}), or "
        "--insecure-no-auth to accept alerts from anyone who reaches the port"
    )


def test_sixty_four_slow_clients_pin_no_more_than_the_workers(sink: Collector) -> None:
    before = threading.active_count()
    server = serve(sink, workers=4, read_timeout_s=5.0, request_timeout_s=1.0)
    host, port = server.server_address[:2]
    slow: list[socket.socket] = []
    try:
        for _ in range(64):  # each sends half a request line, then nothing
            s = socket.create_connection((str(host), port), timeout=5)
            s.sendall(b"POST / HT")
            slow.append(s)
        deadline = time.monotonic() + 10
        while server.accepted < 64:
            assert threading.active_count() <= before + 4 + 2  # workers, serve loop, reaper
            assert time.monotonic() < deadline, f"only {server.accepted} accepted"
            time.sleep(0.05)
        assert threading.active_count() <= before + 4 + 2
        # Those the workers could not take were answered 503 at once.
        assert server.busy + server.timed_out >= 60
        # The request timeout frees the workers: a real webhook gets through in time.
        deadline = time.monotonic() + 10
        while _status(server.url) != 200:
            assert time.monotonic() < deadline, "the slow clients still hold every worker"
            time.sleep(0.2)
        assert server.timed_out >= 1  # a slow client was cut off to make room
    finally:
        for s in slow:
            s.close()
        stop(server)


def _status(url: str) -> int | None:
    try:
        return post(url, BODY)[0]
    except OSError:  # answered 503 and closed before the body was sent
        return None


def test_a_body_over_the_limit_is_413_before_it_is_read(sink: Collector) -> None:
    server = serve(sink, max_body=1000)
    try:
        assert post(server.url, BODY + b" " * 1000)[0] == 413
        assert sink.alerts == []
    finally:
        stop(server)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_serves_https_and_plain_http_gets_nothing(sink: Collector, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = serve(sink, tls=tls_context(str(cert), str(key)))
    try:
        assert server.url.startswith("https://")
        client = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(
            server.url, data=BODY, method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=10, context=client) as resp:
            assert resp.status == 200
        plain = server.url.replace("https://", "http://")
        with pytest.raises(OSError):
            post(plain, BODY)
        assert len(sink.alerts) == 2
    finally:
        stop(server)


def test_a_tls_key_without_its_certificate_is_refused() -> None:
    with pytest.raises(ConfigError, match="go together"):
        tls_context("", "key.pem")


# ------------------------------------------------ what a webhook may make runbooks do


class Notified:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def process(self, alerts: Sequence[Alert], now: Any) -> None:
        self.alerts.extend(alerts)

    def silenced(self, alert: Alert, now: Any) -> str | None:
        return None  # no silences: every runbook may run


def _webhook_response(harness: Harness, catalog_path: Path | None) -> tuple[Notified, Any]:
    notified = Notified()
    response = Response(notified, load_runbooks(), harness.context, None, Path("x.sqlite"))  # type: ignore[arg-type]
    return notified, response.received_sink(catalogued_only(load_catalog(catalog_path)))


def _contain(agent: str) -> Alert:
    doc = json.loads(json.dumps(AM_PAYLOAD))
    doc["alerts"] = doc["alerts"][:1]
    doc["alerts"][0]["labels"]["agent_id"] = agent
    doc["alerts"][0]["labels"]["alertname"] = "NoSuchRule"
    from agentwatch.alerts.alertmanager.receive import parse_webhook

    return parse_webhook(doc)[0]


def test_a_webhook_about_an_agent_not_in_the_catalog_opens_no_breaker(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    notified, sink = _webhook_response(harness, EXAMPLE_CATALOG)
    sink([_contain("victim-agent-2")])
    assert harness.topic.published == []
    assert [a.agent_id for a in notified.alerts] == ["victim-agent-2"]  # still notified


def test_without_a_catalog_webhooks_open_no_breaker_at_all(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    _, sink = _webhook_response(harness, None)
    sink([_contain("hr-assistant-1")])
    assert harness.topic.published == []


def test_a_webhook_about_a_catalogued_agent_runs_its_runbook(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    _, sink = _webhook_response(harness, EXAMPLE_CATALOG)
    sink([_contain("hr-assistant-1")])
    assert [(m.agent_id, m.state) for m in harness.topic.published] == [("hr-assistant-1", "open")]
