"""Every duration flag reads the one duration grammar, and a bare number of seconds as it
always has; a value that is neither is one usage line naming the flag."""

from __future__ import annotations

from collections import Counter

import pytest

from agentwatch.cli import build_parser
from agentwatch.commands.options import DURATION_HELP
from agentwatch.settings import Settings

# (the command and what it needs besides, the flag) of every flag that is a duration.
FLAGS: list[tuple[tuple[str, ...], str]] = [
    (("process",), "--flush-interval"),
    (("process",), "--dedup-horizon"),
    (("process",), "--allowed-lateness"),
    (("process",), "--session-timeout"),
    (("process",), "--maintain-interval"),
    (("process",), "--snapshot-grace"),
    (("process",), "--idle-timeout"),
    (("process",), "--connect-timeout"),
    (("store", "maintain"), "--snapshot-grace"),
    (("drift", "run"), "--interval"),
    (("alerts", "run"), "--interval"),
    (("alerts", "backtest"), "--interval"),
    (("alerts", "receive"), "--read-timeout"),
    (("alerts", "receive"), "--request-timeout"),
    (("simulate",), "--duration"),
    (("simulate",), "--timeout"),
    (("demo",), "--seconds"),
    (("broker", "start"), "--timeout"),
    (("broker", "stop"), "--timeout"),
]
IDS = [" ".join((*command, flag)) for command, flag in FLAGS]
NEEDS: dict[tuple[str, ...], tuple[str, ...]] = {("alerts", "backtest"): ("--from", "2d")}


def parsed(command: tuple[str, ...], flag: str, value: str) -> float:
    args = build_parser(Settings()).parse_args([*command, *NEEDS.get(command, ()), flag, value])
    seconds: float = getattr(args, flag.removeprefix("--").replace("-", "_"))
    return seconds


@pytest.mark.parametrize(("command", "flag"), FLAGS, ids=IDS)
@pytest.mark.parametrize(("value", "seconds"), [("500ms", 0.5), ("2m", 120.0), ("1h30m", 5400.0)])
def test_a_duration_flag_takes_the_duration_grammar(
    command: tuple[str, ...], flag: str, value: str, seconds: float
) -> None:
    assert parsed(command, flag, value) == seconds


@pytest.mark.parametrize(("command", "flag"), FLAGS, ids=IDS)
def test_a_duration_flag_still_takes_a_bare_number_of_seconds(
    command: tuple[str, ...], flag: str
) -> None:
    assert parsed(command, flag, "90") == 90.0
    assert parsed(command, flag, "2.5") == 2.5


@pytest.mark.parametrize(("command", "flag"), FLAGS, ids=IDS)
def test_a_duration_flag_refuses_what_is_no_duration_in_one_line_naming_it(
    command: tuple[str, ...], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parsed(command, flag, "5x")
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(
        f": error: argument {flag}: not a duration: '5x' (use e.g. 500ms, 30s, 5m, 1h30m, 2d or 1w)"
    )


@pytest.mark.parametrize(
    ("command", "flag"),
    [(("process",), "--session-timeout"), (("alerts", "run"), "--interval")],
    ids=["process --session-timeout", "alerts run --interval"],
)
def test_a_duration_flag_that_must_be_above_zero_refuses_zero_in_any_spelling(
    command: tuple[str, ...], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for zero in ("0", "0s", "0ms"):
        with pytest.raises(SystemExit):
            parsed(command, flag, zero)
        assert capsys.readouterr().err.strip().endswith(f"{flag}: must be positive, got 0")


@pytest.mark.parametrize(("command", "flags"), Counter(c for c, _ in FLAGS).items())
def test_the_help_of_every_duration_flag_says_how_to_write_one(
    command: tuple[str, ...], flags: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser(Settings()).parse_args([*command, "--help"])
    assert " ".join(capsys.readouterr().out.split()).count(DURATION_HELP) == flags
