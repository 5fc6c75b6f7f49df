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
