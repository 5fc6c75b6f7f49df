"""``agentwatch process`` refuses out-of-range flags before it touches Kafka or the lake."""

from __future__ import annotations

import pytest

from agentwatch.cli import main


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--max-batch", "0", "must be at least 1, got 0"),
        ("--max-batch", "1.5", "not a whole number: '1.5'"),
        ("--max-message-bytes", "-1", "must be at least 1, got -1"),
        ("--max-label-values", "0", "must be at least 1, got 0"),
        ("--flush-interval", "-1", "must not be negative, got -1"),
        ("--idle-timeout", "-0.1", "must not be negative, got -0.1"),
        ("--dedup-horizon", "inf", "must be a finite number, got 'inf'"),
        (
            "--allowed-lateness",
            "soon",
            "not a duration: 'soon' (use e.g. 500ms, 30s, 5m, 1h30m, 2d or 1w)",
        ),
        ("--maintain-interval", "-60", "must not be negative, got -60"),
        ("--dedup-memory-mb", "0", "must be positive, got 0"),
        ("--session-timeout", "nan", "must be a finite number, got 'nan'"),
        ("--connect-timeout", "0", "must be positive, got 0"),
        ("--topic", "", "a topic name is 1 to 249 letters, digits, '.', '_' or '-', got ''"),
        ("--topic", "a/b", "a topic name is 1 to 249 letters, digits, '.', '_' or '-', got 'a/b'"),
        ("--group", " ", "must not be empty or blank"),
    ],
)
def test_an_out_of_range_flag_is_a_one_line_usage_error_naming_it(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, problem: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["process", flag, value, "--bootstrap", "127.0.0.1:1"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"agentwatch process: error: argument {flag}: {problem}"


@pytest.mark.parametrize(
    "servers", ["", "broker:port", "broker:0", "broker:70000", "a:1,", "a b:1"]
)
def test_bootstrap_servers_that_are_not_host_and_port_are_refused_at_once(
    capsys: pytest.CaptureFixture[str], servers: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["process", "--bootstrap", servers])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "agentwatch process: error: argument --bootstrap: expected HOST:PORT (several "
        f"separated by commas), got {servers!r}"
    )


@pytest.mark.parametrize(
    "servers", ["localhost", "broker-1:9092", "10.0.0.7:19092,10.0.0.8:19092", "[::1]:9092"]
)
def test_bootstrap_servers_as_kafka_takes_them_are_accepted(servers: str) -> None:
    from agentwatch.commands.options import bootstrap_servers

    assert bootstrap_servers(servers) == servers
