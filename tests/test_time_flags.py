"""Every flag that takes a point in time reads the one time grammar (agentwatch/durations.py):
``now``, how long ago (``2d``, ``-2d``, ``now-2d``) or an RFC 3339 time or date."""

from __future__ import annotations

import datetime as dt

import pytest

from agentwatch.cli import build_parser
from agentwatch.clock import utc_now
from agentwatch.settings import Settings

# (the command and what it needs besides, the flag, where the value lands).
RESOLVED: list[tuple[tuple[str, ...], str, str]] = [
    (("alerts", "run", "--once"), "--at", "at"),
    (("alerts", "silence", "--match", "a=b", "--comment", "c"), "--start", "start"),
    (("drift", "report", "--agent", "a"), "--since", "since"),
]
# Checked when read, resolved once the data's range is known.
CHECKED: list[tuple[tuple[str, ...], str, str]] = [
    (("drift", "backfill"), "--from", "start"),
    (("drift", "backfill", "--from", "2d"), "--to", "end"),
    (("alerts", "backtest"), "--from", "start"),
    (("alerts", "backtest", "--from", "2d"), "--to", "end"),
]
IDS = [f"{command[0]} {command[1]} {flag}" for command, flag, _ in RESOLVED + CHECKED]


@pytest.mark.parametrize(("command", "flag", "dest"), RESOLVED, ids=IDS[: len(RESOLVED)])
@pytest.mark.parametrize("ago", ["2d", "-2d", "now-2d"])
def test_a_time_flag_takes_how_long_ago(
    command: tuple[str, ...], flag: str, dest: str, ago: str
) -> None:
    before = utc_now()
    args = build_parser(Settings()).parse_args([*command, f"{flag}={ago}"])
    assert before - dt.timedelta(days=2) <= getattr(args, dest) <= utc_now() - dt.timedelta(days=2)


@pytest.mark.parametrize(("command", "flag", "dest"), RESOLVED, ids=IDS[: len(RESOLVED)])
def test_a_time_flag_takes_an_instant_in_utc_without_a_zone(
    command: tuple[str, ...], flag: str, dest: str
) -> None:
    args = build_parser(Settings()).parse_args([*command, flag, "2026-11-20T09:30:00"])
    assert getattr(args, dest) == dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("command", "flag", "dest"), CHECKED, ids=IDS[len(RESOLVED) :])
def test_a_range_flag_keeps_its_text_for_when_the_data_is_known(
    command: tuple[str, ...], flag: str, dest: str
) -> None:
    args = build_parser(Settings()).parse_args([*command, flag, "now-2d"])
    assert getattr(args, dest) == "now-2d"


@pytest.mark.parametrize(("command", "flag", "dest"), RESOLVED + CHECKED, ids=IDS)
def test_a_time_flag_refuses_what_is_no_time_in_one_line_naming_it(
    command: tuple[str, ...], flag: str, dest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser(Settings()).parse_args([*command, flag, "soon"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"error: argument {flag}: expected an RFC 3339 time such as "
                         "2026-11-20T09:00:00Z, a date, now, or how long ago such as 2d, -2d "
                         "or now-2d, got 'soon'")  # fmt: skip
