"""Kafka TLS and SASL settings: one ``[kafka]`` section turned into client arguments."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest

from agentwatch.cli import build_parser
from agentwatch.kafka import (
    PASSWORD_ENV,
    KafkaSecurity,
    Secret,
    client_options,
    configure,
    security_from_settings,
)
from agentwatch.settings import ConfigError, Settings, decode_config

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("agentwatch", "ingest", "processors", "alerts", "dashboards")
CLIENT_CLASSES = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}


@pytest.fixture(autouse=True)
def _no_kafka_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AGENTWATCH_KAFKA_SECURITY_PROTOCOL",
        "AGENTWATCH_KAFKA_SASL_MECHANISM",
        "AGENTWATCH_KAFKA_SASL_USERNAME",
        "AGENTWATCH_KAFKA_SASL_PASSWORD_FILE",
        "AGENTWATCH_KAFKA_SSL_CA_FILE",
        PASSWORD_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    configure(None)


def sasl_settings(tmp_path: Path, **overrides: Any) -> Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here\n")
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    kafka = {
        "security_protocol": "SASL_SSL",
        "ssl_ca_file": str(ca),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alerts",
        "sasl_password_file": str(secret),
        **overrides,
    }
    source = tmp_path / "agentwatch.toml"
    return Settings(config=decode_config({"kafka": kafka}, source), source=source)


def test_without_settings_clients_connect_in_plaintext() -> None:
    assert client_options("k:9092") == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_settings_become_kafka_python_arguments(tmp_path: Path) -> None:
    options = client_options("k:9093", security_from_settings(sasl_settings(tmp_path)))
    assert options == {
        "bootstrap_servers": "k:9093",
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(tmp_path / "ca.pem"),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alerts",
        "sasl_plain_password": "s3cret-value",
    }


def test_the_password_comes_from_the_environment_without_a_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    security = security_from_settings(sasl_settings(tmp_path, sasl_password_file=""))
    assert client_options("k:9093", security)["sasl_plain_password"] == "from-env"


def test_environment_variables_configure_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTWATCH_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("AGENTWATCH_KAFKA_SASL_MECHANISM", "plain")
    monkeypatch.setenv("AGENTWATCH_KAFKA_SASL_USERNAME", "sdk")
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    options = client_options("k:9092")
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("PLAIN", "sdk")


def test_the_configured_default_serves_every_client(tmp_path: Path) -> None:
    configure(security_from_settings(sasl_settings(tmp_path)))
    assert client_options("k:9093")["sasl_plain_username"] == "alerts"


def test_the_password_appears_in_no_repr_nor_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    explicit = KafkaSecurity(
        protocol="SASL_SSL", sasl_mechanism="PLAIN", username="u", password=Secret("hunter22")
    )
    from_file = security_from_settings(sasl_settings(tmp_path))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("connecting", extra={"security": explicit})
        logging.getLogger("test").info("connecting %s %r", from_file, from_file)
    shown = repr(explicit) + str(explicit) + repr(from_file) + caplog.text
    assert "hunter22" not in shown and "s3cret" not in shown
    assert "SASL_SSL" in shown


def test_a_sasl_protocol_without_a_password_is_an_error_naming_the_setting(
    tmp_path: Path,
) -> None:
    security = security_from_settings(sasl_settings(tmp_path, sasl_password_file=""))
    with pytest.raises(
        ConfigError, match="sasl_password_file or \\$AGENTWATCH_KAFKA_SASL_PASSWORD"
    ):
        client_options("k:9093", security)


def test_a_missing_password_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    security = security_from_settings(sasl_settings(tmp_path, sasl_password_file=str(missing)))
    with pytest.raises(ConfigError, match=f"sasl_password_file: cannot read {missing}"):
        client_options("k:9093", security)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("security_protocol", "TLS", "security_protocol must be one of"),
        ("sasl_mechanism", "GSSAPI", "sasl_mechanism must be one of"),
        ("sasl_username", "", "sasl_username is required"),
        ("ssl_ca_file", "/no/such/ca.pem", "ssl_ca_file: no such file /no/such/ca.pem"),
    ],
)
def test_unusable_settings_are_errors_naming_the_key(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    security = security_from_settings(sasl_settings(tmp_path, **{key: value}))
    with pytest.raises(ConfigError, match=message):
        client_options("k:9093", security)


def test_a_bad_kafka_setting_stops_a_command_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentwatch.cli import main

    config = tmp_path / "agentwatch.toml"
    config.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n')
    from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG

    code = main(
        ["--config", str(config), "breaker", "status", "--bootstrap", "127.0.0.1:1",
         "--catalog", str(EXAMPLE_CATALOG)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["agentwatch: [kafka] sasl_username is required with SASL_SSL"]


def _client_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) in CLIENT_CLASSES
    ]


def test_every_kafka_client_is_created_with_client_options() -> None:
    unsafe = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for call in _client_calls(tree):
                spread = [kw.value for kw in call.keywords if kw.arg is None]
                named = {kw.arg for kw in call.keywords}
                uses_options = any(
                    isinstance(v, ast.Call) and getattr(v.func, "id", "") == "client_options"
                    for v in spread
                )
                from_options = any(
                    isinstance(v, ast.Attribute) and v.attr == "_options" for v in spread
                )
                if not (uses_options or from_options) or "bootstrap_servers" in named:
                    unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert unsafe == []


def test_the_processor_serves_metrics_on_loopback_by_default() -> None:
    args = build_parser(Settings()).parse_args(["process"])
    assert args.metrics_host == "127.0.0.1"
