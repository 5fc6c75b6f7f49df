"""The one duration grammar every file and flag reads, and its one spelling."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from agentwatch.durations import (
    DurationError,
    duration_argument,
    format_duration,
    human_duration,
    is_relative,
    number_or_duration,
    parse_duration,
    parse_seconds,
    parse_time,
    time_argument,
)

# (what a user writes, seconds it means, how agentwatch writes it back, how a person reads
# it, as Prometheus's humanizeDuration writes it); None: an error.
GRAMMAR: list[tuple[object, float | None, str | None, str | None]] = [
    # Prometheus's units, one at a time.
    ("500ms", 0.5, "500ms", "500ms"),
    ("30s", 30, "30s", "30s"),
    ("5m", 300, "5m", "5m 0s"),
    ("2h", 7200, "2h", "2h 0m 0s"),
    ("1d", 86400, "1d", "1d 0h 0m 0s"),
    ("1w", 604800, "1w", "7d 0h 0m 0s"),
    ("1y", 365 * 86400, "1y", "365d 0h 0m 0s"),
    ("100y", 100 * 365 * 86400, "100y", "36500d 0h 0m 0s"),
    # Compound, as in Prometheus; written back longest unit first.
    ("1h30m", 5400, "1h30m", "1h 30m 0s"),
    ("1h30m30s", 5430, "1h30m30s", "1h 30m 30s"),
    ("1m500ms", 60.5, "1m500ms", "1m 0s"),
    ("90m", 5400, "1h30m", "1h 30m 0s"),
    ("36h", 129600, "1d12h", "1d 12h 0m 0s"),
    ("7d", 604800, "1w", "7d 0h 0m 0s"),
    ("12m14s", 734, "12m14s", "12m 14s"),
    # Zero, with or without a unit.
    ("0", 0, "0s", "0s"),
    ("0s", 0, "0s", "0s"),
    # What users already write here: decimals before a unit, surrounding blanks, and
    # plain numbers of seconds in YAML.
    ("1.5h", 5400, "1h30m", "1h 30m 0s"),
    ("5.5s", 5.5, "5s500ms", "5.5s"),
    (" 10m ", 600, "10m", "10m 0s"),
    (90, 90, "1m30s", "1m 30s"),
    (0.25, 0.25, "250ms", "250ms"),
    (0.0005, 0.0005, "0s", "500us"),  # below the millisecond Prometheus spells
    # Not durations.
    ("", None, None, None),
    ("5", None, None, None),
    ("5 m", None, None, None),
    ("5x", None, None, None),
    ("m5", None, None, None),
    ("-1s", None, None, None),
    ("1h ago", None, None, None),
    ("six hours", None, None, None),
    (-1, None, None, None),
    (float("inf"), None, None, None),
    # Longer than 100 years: a typo, and past what a date holds.
    ("101y", None, None, None),
    ("99999999999d", None, None, None),
    (1e300, None, None, None),
    (True, None, None, None),
    (None, None, None, None),
    ([1], None, None, None),
]


@pytest.mark.parametrize(("written", "seconds", "spelled", "human"), GRAMMAR)
def test_the_duration_grammar(
    written: object, seconds: float | None, spelled: str | None, human: str | None
) -> None:
    if seconds is None:
        with pytest.raises(DurationError, match="not a duration"):
            parse_seconds(written)
        return
    assert parse_seconds(written) == pytest.approx(seconds)
    assert parse_duration(written) == dt.timedelta(seconds=seconds)
    assert format_duration(parse_duration(written)) == spelled
    assert parse_seconds(spelled) == pytest.approx(seconds, abs=0.001)  # the spelling reads back
    assert human_duration(parse_seconds(written)) == human


@pytest.mark.parametrize(
    ("value", "human"),
    [(-734, "-12m 14s"), (-0.5, "-500ms"), (float("nan"), "nan"), (float("inf"), "inf")],
)
def test_a_person_reads_template_values_that_are_no_duration_as_prometheus_writes_them(
    value: float, human: str
) -> None:
    assert human_duration(value) == human


def test_a_duration_flag_is_an_argparse_error_when_it_is_not_one() -> None:
    assert duration_argument("1h30m") == dt.timedelta(minutes=90)
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration: '90'"):
        duration_argument("90")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("0.5", 0.5), ("-1", -1.0), ("2m", 120.0), ("500ms", 0.5)]
)
def test_a_flag_that_took_seconds_takes_a_bare_number_or_a_duration(
    text: str, seconds: float
) -> None:
    assert number_or_duration(text) == seconds


def test_a_flag_that_took_seconds_refuses_what_is_neither() -> None:
    with pytest.raises(DurationError, match="not a duration: '5x'"):
        number_or_duration("5x")


NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)

# (what a user writes, the instant it names at NOW, whether it moves with now); None: an error.
TIMES: list[tuple[str, dt.datetime | None, bool]] = [
    ("now", NOW, True),
    (" now ", NOW, True),
    ("2d", NOW - dt.timedelta(days=2), True),
    ("-2d", NOW - dt.timedelta(days=2), True),
    ("now-2d", NOW - dt.timedelta(days=2), True),
    ("now-1h30m", NOW - dt.timedelta(minutes=90), True),
    ("0s", NOW, True),
    ("2026-11-19T09:00:00Z", NOW - dt.timedelta(days=1), False),
    ("2026-11-19T11:00:00+02:00", NOW - dt.timedelta(days=1), False),
    ("2026-11-19T09:00:00", NOW - dt.timedelta(days=1), False),  # UTC without a zone
    ("2026-11-19", NOW - dt.timedelta(days=1, hours=9), False),
    ("yesterday", None, False),
    ("now+1h", None, False),
    ("now-", None, False),
    ("--2d", None, False),
    ("-2x", None, False),
    ("2d ago", None, False),
    ("", None, False),
]


@pytest.mark.parametrize(("text", "instant", "relative"), TIMES)
def test_the_time_grammar(text: str, instant: dt.datetime | None, relative: bool) -> None:
    assert is_relative(text) is relative
    if instant is None:
        with pytest.raises(DurationError, match="expected an RFC 3339 time"):
            parse_time(text, NOW)
        return
    assert parse_time(text, NOW) == instant
    assert parse_time(text, NOW).tzinfo is dt.UTC


def test_a_time_flag_is_an_argparse_error_when_it_is_not_one() -> None:
    assert time_argument("2026-11-19") == dt.datetime(2026, 11, 19, tzinfo=dt.UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="got 'soon'"):
        time_argument("soon")
