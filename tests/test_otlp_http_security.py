"""`agentwatch otlp` is safe to expose: TLS handshakes cannot stall intake, request lengths
are strict, error answers close the connection, slow clients cannot pin threads, deep
JSON is a 400, and the command refuses unsafe or broken setups with one line."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from agentwatch import topics
from agentwatch.cli import main
from agentwatch.http_guard import BadLength, body_length
from agentwatch.ingest.otlp.http import PATH, OtlpHttpServer
from agentwatch.ingest.otlp.mapping import MappingConfig
from agentwatch.ingest.otlp.metrics import OtlpMetrics
from agentwatch.ingest.otlp.receiver import Receiver
from agentwatch.ingest.otlp.spans import RequestError, parse_json
from tests.conftest import require_tool
from tests.test_otlp_receiver import TOKEN, FakeKafka, _request_body

PROTOBUF = {"Content-Type": "application/x-protobuf"}
GOOD_TOKEN = "0123456789abcdef-otlp"


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def receiver(kafka: FakeKafka) -> Receiver:
    return Receiver(kafka, MappingConfig(), OtlpMetrics(CollectorRegistry()))


@contextmanager
def serving(receiver: Receiver, token: str | None = None, **options: Any) -> Iterator[Any]:
    limit = options.pop("limit", 1 << 20)
    tls = options.pop("tls", None)
    server = OtlpHttpServer(("127.0.0.1", 0), receiver, limit, token, tls, **options)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return _self_signed(tmp_path, "server")


def request(headers: dict[str, str], body: bytes = b"", head: bytes = b"") -> bytes:
    """A raw POST /v1/traces: ``headers`` as given (no Content-Length added), then ``body``."""
    lines = [f"POST {PATH} HTTP/1.1", "Host: otlp", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines).encode("latin-1") + head + b"\r\n\r\n" + body


def exchange(server: Any, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send ``raw`` and read until the server closes the connection (TimeoutError if never)."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=timeout) as s:
        s.sendall(raw)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return received


def statuses(answer: bytes) -> list[int]:
    """The status codes of the answers in one connection's bytes."""
    return [int(part[:3]) for part in answer.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]


# A complete request: if the unread body of a refused request were parsed as the next
# request on the connection, the server would answer it too (405).
SMUGGLED = b"GET /v1/traces HTTP/1.1\r\nHost: otlp\r\n\r\n"


# ------------------------------------------------------------------------- TLS (HIGH)


def test_an_idle_tcp_client_does_not_stop_tls_clients_from_being_served(
    receiver: Receiver, kafka: FakeKafka, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    with serving(receiver, tls=certificate) as server:
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), port)):  # connects, never says hello
            post = urllib.request.Request(server.url + PATH, data=_request_body(), headers=PROTOBUF)
            context = ssl.create_default_context(cafile=str(cert))
            with urllib.request.urlopen(post, timeout=5, context=context) as answer:
                assert answer.status == 200
    assert len(kafka.events) == 4


def test_a_tls_handshake_that_never_comes_is_cut_off_at_the_request_timeout(
    receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    with serving(receiver, tls=certificate, request_timeout_s=0.5) as server:
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), port), timeout=10) as idle:
            assert idle.recv(1) == b""  # closed by the server, well before 10 s
        assert server.timed_out == 1


# ------------------------------------------------------------ Content-Length (HIGH)


def test_a_negative_content_length_is_refused_without_reading_the_body(
    receiver: Receiver, kafka: FakeKafka
) -> None:
    with serving(receiver) as server:
        answer = exchange(server, request({**PROTOBUF, "Content-Length": "-1"}, b"x" * 1000))
    assert statuses(answer) == [400]
    assert b"Connection: close" in answer
    assert kafka.events == []


@pytest.mark.parametrize(
    "value", [b"+5", b"0x10", b"5 5", b"1e3", b"\xb2", b" "], ids=repr
)  # \xb2 is a superscript two in latin-1: str.isdigit() says yes, int() says no
def test_a_content_length_that_is_not_plain_digits_is_400(receiver: Receiver, value: bytes) -> None:
    with serving(receiver) as server:
        answer = exchange(server, request(PROTOBUF, b"hello", b"\r\nContent-Length: " + value))
    assert statuses(answer) == [400]


def test_two_different_content_lengths_are_400(receiver: Receiver) -> None:
    headers = {**PROTOBUF, "Content-Length": "5"}
    with serving(receiver) as server:
        answer = exchange(server, request(headers, b"hello", b"\r\nContent-Length: 50"))
    assert statuses(answer) == [400]


def test_a_chunked_body_is_411_and_never_read_as_the_next_request(receiver: Receiver) -> None:
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    with serving(receiver) as server:
        answer = exchange(server, request({**PROTOBUF, "Transfer-Encoding": "chunked"}, chunk))
    assert statuses(answer) == [411]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Content-Type": "application/x-protobuf", "Content-Length": "40"}, 401),
        ({"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}",
          "Content-Length": "40"}, 415),
        ({"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}",
          "Content-Length": "4000"}, 413),
        ({"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}, 411),
        ({"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}",
          "Content-Length": "-40"}, 400),
    ],
    ids=["401", "415", "413", "411", "400"],
)  # fmt: skip
def test_every_error_answer_closes_the_connection_and_the_body_is_never_a_request(
    receiver: Receiver, headers: dict[str, str], code: int
) -> None:
    with serving(receiver, TOKEN, limit=1000) as server:
        answer = exchange(server, request(headers, SMUGGLED))
    assert statuses(answer) == [code]
    assert b"Connection: close" in answer


def test_body_length_reads_one_plain_decimal_number() -> None:
    headers = Message()
    headers["Content-Length"] = "0042"
    assert body_length(headers) == 42
    headers.replace_header("Content-Length", "9" * 5000)  # no int() of 5000 digits
    assert body_length(headers) > 1 << 62
    headers.replace_header("Content-Length", "١٢")  # Arabic-Indic digits: int() takes them
    with pytest.raises(BadLength) as refused:
        body_length(headers)
    assert refused.value.status == 400


# ------------------------------------------------------------------ slowloris (MEDIUM)


def test_slow_clients_pin_no_more_threads_than_the_workers(
    receiver: Receiver, kafka: FakeKafka
) -> None:
    before = threading.active_count()
    slow: list[socket.socket] = []
    with serving(receiver, workers=4, read_timeout_s=5.0, request_timeout_s=1.0) as server:
        host, port = server.server_address[:2]
        try:
            for _ in range(32):  # each sends half a request line, then nothing
                s = socket.create_connection((str(host), port), timeout=5)
                s.sendall(b"POST /v1/tr")
                slow.append(s)
            deadline = time.monotonic() + 10
            while server.accepted < 32:
                assert time.monotonic() < deadline, f"only {server.accepted} accepted"
                time.sleep(0.05)
            assert threading.active_count() <= before + 4 + 2  # workers, serve loop, reaper
            assert server.busy >= 28  # answered 503 at once
            # The request timeout frees the workers: a real export gets through.
            deadline = time.monotonic() + 10
            while _export(server) != 200:
                assert time.monotonic() < deadline, "the slow clients still hold every worker"
                time.sleep(0.2)
            assert server.timed_out >= 1
        finally:
            for s in slow:
                s.close()
    assert len(kafka.events) == 4


def _export(server: Any) -> int | None:
    post = urllib.request.Request(server.url + PATH, data=_request_body(), headers=PROTOBUF)
    try:
        with urllib.request.urlopen(post, timeout=5) as answer:
            return int(answer.status)
    except OSError:  # answered 503 (busy) or closed
        return None


def test_a_request_that_arrives_too_slowly_is_cut_off(receiver: Receiver) -> None:
    with serving(receiver, request_timeout_s=0.5) as server:
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), port), timeout=10) as slow:
            slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: otlp\r\n")  # and no more
            assert slow.recv(1) == b""
        assert server.timed_out == 1


# ------------------------------------------------------------------- deep JSON (LOW)


def test_json_nested_100k_deep_is_answered_400_and_the_server_keeps_serving(
    receiver: Receiver, kafka: FakeKafka
) -> None:
    deep = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    headers = {"Content-Type": "application/json", "Content-Length": str(len(deep))}
    with serving(receiver) as server:
        assert statuses(exchange(server, request(headers, deep))) == [400]
        assert _export(server) == 200
    assert len(kafka.events) == 4


def test_an_export_nested_past_protobufs_depth_is_a_request_error() -> None:
    depth = 400  # past protobuf's depth, short of json's: ParseDict is what recurses
    value = b'{"arrayValue": {"values": [' * depth + b'{"stringValue": "x"}' + b"]}}" * depth
    span = (
        b'{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", '
        b'"name": "x", "attributes": [{"key": "k", "value": ' + value + b"}]}"
    )
    with pytest.raises(RequestError, match="too deep"):
        parse_json(b'{"resourceSpans": [{"scopeSpans": [{"spans": [' + span + b"]}]}]}")


def test_a_list_where_an_object_belongs_is_a_request_error() -> None:
    with pytest.raises(RequestError, match="not an OTLP/JSON trace export"):
        parse_json(b'{"resourceSpans": [[1]]}')


# -------------------------------------------------------------- the command (MEDIUM, LOW)


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command contacts Kafka; no token or host from the environment."""
    for name in ("TOKEN", "TOKEN_FILE", "HOST", "TLS_CERT", "TLS_KEY", "METRICS_HOST"):
        monkeypatch.delenv(f"AGENTWATCH_OTLP_{name}", raising=False)

    def contacted(*_: Any, **__: Any) -> None:
        raise AssertionError("Kafka was contacted")

    monkeypatch.setattr(topics, "ensure_topics", contacted)


def _unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def ensure_topics(bootstrap: str, *_: Any, **__: Any) -> None:
        cause = KafkaTimeoutError(f"Unable to bootstrap from {bootstrap}")
        raise topics.BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: {cause}") from cause

    monkeypatch.setattr(topics, "ensure_topics", ensure_topics)


def _last_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.usefixtures("no_kafka")
def test_otlp_beyond_loopback_without_a_token_refuses_to_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["otlp", "--host", "0.0.0.0", "--bootstrap", "127.0.0.1:1"]) == 2
    err = _last_lines(capsys)
    assert len(err) == 1
    assert err[0].startswith("agentwatch: --host 0.0.0.0 is beyond loopback and no bearer token")
    assert "--allow-unauthenticated" in err[0]


@pytest.mark.usefixtures("no_kafka")
def test_allow_unauthenticated_lets_otlp_listen_beyond_loopback_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _unreachable(monkeypatch)  # it gets as far as Kafka
    argv = ["otlp", "--host", "0.0.0.0", "--allow-unauthenticated", "--bootstrap", "127.0.0.1:1"]
    assert main(argv) == 1
    assert "cannot reach Kafka" in _last_lines(capsys)[-1]


@pytest.mark.usefixtures("no_kafka")
def test_a_token_shorter_than_sixteen_characters_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("short-token\n")
    assert main(["otlp", "--token-file", str(token), "--bootstrap", "127.0.0.1:1"]) == 2
    err = _last_lines(capsys)
    assert err == [f"agentwatch: --token-file {token}: the secret has 11 characters; use at "
                   "least 16 (e.g. `openssl rand -hex 32`)"]  # fmt: skip


@pytest.mark.usefixtures("no_kafka")
def test_a_short_token_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTWATCH_OTLP_TOKEN", "short-token")
    assert main(["otlp", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "(AGENTWATCH_OTLP_TOKEN): the secret has 11 characters" in _last_lines(capsys)[0]


@pytest.mark.usefixtures("no_kafka")
def test_an_unreachable_broker_is_one_line_and_the_processors_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _unreachable(monkeypatch)
    assert main(["otlp", "--bootstrap", "127.0.0.1:1"]) == 1  # as `agentwatch process`
    assert _last_lines(capsys) == [
        "agentwatch: cannot reach Kafka at 127.0.0.1:1: KafkaTimeoutError: Unable to bootstrap "
        "from 127.0.0.1:1 (check --bootstrap and the [kafka] settings)"
    ]


@pytest.mark.usefixtures("no_kafka")
def test_a_key_that_is_not_the_certificates_is_one_line_and_exit_2_before_kafka(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = _self_signed(tmp_path, "one")
    _, other_key = _self_signed(tmp_path, "two")
    argv = ["otlp", "--tls-cert", str(cert), "--tls-key", str(other_key), "--bootstrap", "x:1"]
    assert main(argv) == 2
    assert _last_lines(capsys) == [
        f"agentwatch: cannot load the TLS certificate {cert} and key {other_key}: "
        "the key is not the certificate's"
    ]


class _MetricsStarted(Exception):
    pass


@pytest.mark.usefixtures("no_kafka")
def test_metrics_listen_on_metrics_host_not_on_the_otlp_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import prometheus_client

    from agentwatch.broker.ports import free_port
    from agentwatch.commands import otlp as command
    from agentwatch.ingest.otlp import kafka_sink

    token = tmp_path / "token"
    token.write_text(GOOD_TOKEN)
    bound: list[str] = []

    def start_http_server(port: int, addr: str, registry: Any) -> Any:
        bound.append(addr)
        raise _MetricsStarted

    monkeypatch.setattr(topics, "ensure_topics", lambda *_, **__: None)
    monkeypatch.setattr(kafka_sink, "KafkaSink", lambda *_, **__: FakeKafka())
    monkeypatch.setattr(prometheus_client, "start_http_server", start_http_server)
    monkeypatch.setattr(command, "_tune_gc", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    argv = ["otlp", "--host", "0.0.0.0", "--token-file", str(token), "--bootstrap", "x:1",
            "--http-port", str(free_port()), "--grpc-port", "0", "--metrics-port", "9"]  # fmt: skip
    with pytest.raises(_MetricsStarted):
        main(argv)
    assert bound == ["127.0.0.1"]
    with pytest.raises(_MetricsStarted):
        main([*argv, "--metrics-host", "0.0.0.0"])
    assert bound == ["127.0.0.1", "0.0.0.0"]


def test_the_help_names_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["otlp", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-unauthenticated" in text
    assert "--metrics-host METRICS_HOST address /metrics listens on" in text
    assert "at least 16 characters" in text
