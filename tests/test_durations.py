"""The one duration grammar every file and flag reads, and its one spelling."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from agentwatch.durations import (
    DurationError,
    duration_argument,
    format_duration,
    parse_duration,
    parse_seconds,
)

# (what a user writes, seconds it means, how agentwatch writes it back); None: an error.
GRAMMAR: list[tuple[object, float | None, str | None]] = [
    # Prometheus's units, one at a time.
    ("500ms", 0.5, "500ms"),
    ("30s", 30, "30s"),
    ("5m", 300, "5m"),
    ("2h", 7200, "2h"),
    ("1d", 86400, "1d"),
    ("1w", 604800, "1w"),
    ("1y", 365 * 86400, "1y"),
    ("100y", 100 * 365 * 86400, "100y"),
    # Compound, as in Prometheus; written back longest unit first.
    ("1h30m", 5400, "1h30m"),
    ("1h30m30s", 5430, "1h30m30s"),
    ("1m500ms", 60.5, "1m500ms"),
    ("90m", 5400, "1h30m"),
    ("36h", 129600, "1d12h"),
    ("7d", 604800, "1w"),
    # Zero, with or without a unit.
    ("0", 0, "0s"),
    ("0s", 0, "0s"),
    # What users already write here: decimals before a unit, surrounding blanks, and
    # plain numbers of seconds in YAML.
    ("1.5h", 5400, "1h30m"),
    (" 10m ", 600, "10m"),
    (90, 90, "1m30s"),
    (0.25, 0.25, "250ms"),
    # Not durations.
    ("", None, None),
    ("5", None, None),
    ("5 m", None, None),
    ("m5", None, None),
    ("-1s", None, None),
    ("1h ago", None, None),
    ("six hours", None, None),
    (-1, None, None),
    (float("inf"), None, None),
    # Longer than 100 years: a typo, and past what a date holds.
    ("101y", None, None),
    ("99999999999d", None, None),
    (1e300, None, None),
    (True, None, None),
    (None, None, None),
    ([1], None, None),
]


@pytest.mark.parametrize(("written", "seconds", "spelled"), GRAMMAR)
def test_the_duration_grammar(written: object, seconds: float | None, spelled: str | None) -> None:
    if seconds is None:
        with pytest.raises(DurationError, match="not a duration"):
            parse_seconds(written)
        return
    assert parse_seconds(written) == pytest.approx(seconds)
    assert parse_duration(written) == dt.timedelta(seconds=seconds)
    assert format_duration(parse_duration(written)) == spelled
    assert parse_seconds(spelled) == pytest.approx(seconds)  # the spelling reads back


def test_a_duration_flag_is_an_argparse_error_when_it_is_not_one() -> None:
    assert duration_argument("1h30m") == dt.timedelta(minutes=90)
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration: '90'"):
        duration_argument("90")
