"""Ports, worker processes, simulated agents and retention days are range-checked on the
flag (an argparse error naming it, exit 2) and in the file and the environment (one line
naming the key or the variable, exit 2), before anything binds, spawns or deletes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.cli import build_parser, main
from agentwatch.settings import ConfigError, Settings, load_settings

NOWHERE = ["--bootstrap", "127.0.0.1:1"]


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The last line of the usage error ``argv`` ends with, after checking it is exit 2."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["drift", "run", "--metrics-port", "99999"], "--metrics-port"),
        (["alerts", "run", "--once", "--metrics-port", "99999"], "--metrics-port"),
        (["process", *NOWHERE, "--metrics-port", "99999"], "--metrics-port"),
        (["otlp", *NOWHERE, "--metrics-port", "99999"], "--metrics-port"),
        (["otlp", *NOWHERE, "--http-port", "99999"], "--http-port"),
        (["otlp", *NOWHERE, "--grpc-port", "-1"], "--grpc-port"),
        (["alerts", "receive", "--port", "65536"], "--port"),
        (["demo", "--port", "99999"], "--port"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_a_port_beyond_0_to_65535_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    value = argv[argv.index(flag) + 1]
    command = " ".join(word for word in argv[:2] if not word.startswith("-"))
    assert usage_error(capsys, argv) == (
        f"agentwatch {command}: error: argument {flag}: must be a port from 0 to 65535, got {value}"
    )


@pytest.mark.parametrize("value", ["99999", "-1", "0"])
def test_the_broker_port_must_be_named_1_to_65535(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert usage_error(capsys, ["broker", "start", "--port", value]) == (
        "agentwatch broker start: error: argument --port: must be a port from 1 to 65535, "
        f"got {value}"
    )


@pytest.mark.parametrize("argv", [["process"], ["alerts", "run"], ["drift", "run"], ["otlp"]])
def test_metrics_port_0_means_not_served(argv: list[str]) -> None:
    args = build_parser(Settings()).parse_args([*argv, "--metrics-port", "0"])
    assert args.metrics_port is None


def test_port_0_where_it_means_off_or_any_free_port_is_accepted() -> None:
    parser = build_parser(Settings())
    assert parser.parse_args(["otlp", "--grpc-port", "0"]).grpc_port == 0
    assert parser.parse_args(["alerts", "receive", "--port", "0"]).port == 0
    assert parser.parse_args(["demo", "--port", "0"]).port == 0


@pytest.mark.parametrize(
    ("argv", "flag", "bound"),
    [
        (["process", *NOWHERE, "--workers", "99999999999"], "--workers", "256"),
        (["simulate", *NOWHERE, "--agents", "99999999999"], "--agents", "10000"),
        (["demo", "--agents", "10001"], "--agents", "10000"),
    ],
    ids=["process --workers", "simulate --agents", "demo --agents"],
)
def test_workers_and_agents_have_an_upper_bound_named_in_the_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, bound: str
) -> None:
    value = argv[argv.index(flag) + 1]
    assert usage_error(capsys, argv) == (
        f"agentwatch {argv[0]}: error: argument {flag}: must be at most {bound}, got {value}"
    )


def test_process_workers_0_still_means_one_per_core() -> None:
    assert build_parser(Settings()).parse_args(["process", "--workers", "0"]).workers == 0


@pytest.mark.parametrize("argv", [["store", "maintain"], ["process", *NOWHERE]])
def test_a_retention_of_more_than_100_years_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    item = "events=99999999999999999999"
    db = ["--db", str(tmp_path / "agentwatch.sqlite")]
    assert main([*argv, *db, "--retention", item]) == 2
    assert capsys.readouterr().err.strip() == (
        f"agentwatch: --retention '{item}': at most 36500 days (0 keeps rows for ever)"
    )
    assert not (tmp_path / "agentwatch.sqlite").exists()


def test_a_retention_that_is_not_a_plain_number_of_days_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["store", "maintain", "--retention", "events=²"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "agentwatch: --retention 'events=²': expected TABLE=DAYS, e.g. events=30"


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("process", "metrics_port", "99999", "Expected `int` <= 65535"),
        ("alerts", "metrics_port", "-1", "Expected `int` >= 0"),
        ("drift", "metrics_port", "65536", "Expected `int` <= 65535"),
        ("otlp", "http_port", "70000", "Expected `int` <= 65535"),
        ("otlp", "grpc_port", "70000", "Expected `int` <= 65535"),
        ("otlp", "metrics_port", "70000", "Expected `int` <= 65535"),
        ("receive", "port", "-5", "Expected `int` >= 0"),
        ("demo", "port", "99999", "Expected `int` <= 65535"),
        ("broker", "port", "0", "Expected `int` >= 1"),
        ("process", "workers", "257", "Expected `int` <= 256"),
        ("simulate", "agents", "99999999999", "Expected `int` <= 10000"),
        ("demo", "agents", "10001", "Expected `int` <= 10000"),
    ],
)
def test_an_out_of_range_port_workers_or_agents_setting_names_the_file_key_or_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    key: str,
    value: str,
    problem: str,
) -> None:
    path = tmp_path / "agentwatch.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert str(caught.value) == f"{path}: [{section}] {key}: {problem}"
    variable = f"AGENTWATCH_{section}_{key}".upper()
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Settings().value(section, key)
    assert str(caught.value) == f"{variable}='{value}': {problem}"


def test_a_port_out_of_range_in_the_environment_stops_the_command_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTWATCH_BROKER_PORT", "99999")
    assert main(["broker", "start"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "agentwatch: AGENTWATCH_BROKER_PORT='99999': Expected `int` <= 65535"
