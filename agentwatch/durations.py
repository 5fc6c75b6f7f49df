"""Durations, and times given as how long ago: one grammar for every file and flag.

The grammar is Prometheus's: a number and a unit, ``ms``, ``s``, ``m``, ``h``, ``d``,
``w`` (7 days) or ``y`` (365 days), several of them run together (``1h30m``), or ``0``.
Two things users already write here are accepted too: a decimal number before a unit
(``1.5h``), and in YAML or TOML a plain number, read as seconds (``cooldown: 90``). A
string needs its unit, so ``90`` on the command line is a mistake, not ninety seconds,
except where a bare number was seconds before durations were taken
(:func:`number_or_duration`). Nothing negative, infinite or empty is a duration.

:func:`format_duration` writes the shortest Prometheus spelling (``5400 s`` is ``1h30m``),
which Prometheus itself reads back: exported rules and windows use it.
:func:`human_duration` writes one for a person (``12m 14s``), as Prometheus's
``humanizeDuration`` does, so an alert reads the same here and in an exported rule.

A point in time on the command line is ``now``, a duration ago (``2d``, ``-2d`` or
``now-2d``: argparse takes ``--start -2d`` for an option, so the other two suit a shell),
or an RFC 3339 timestamp or date, UTC when it has no offset: :func:`parse_time`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from typing import Final

from agentwatch.clock import utc_now

UNITS: Final[tuple[tuple[str, int], ...]] = (
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
)
"""Each unit and its length in milliseconds, longest first."""

_MS: Final = dict(UNITS)
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
EXAMPLES: Final = "500ms, 30s, 5m, 1h30m, 2d or 1w"
LONGEST_S: Final = 100 * 365 * 86_400.0
"""The longest duration taken (100y): any longer one is a typo, and would not fit a date."""


TIME_EXAMPLES: Final = (
    "an RFC 3339 time such as 2026-11-20T09:00:00Z, a date, now, or how long ago such as 2d, "
    "-2d or now-2d"
)


class DurationError(ValueError):
    """A value that is not a duration (or a time); the message says what would be."""


def parse_seconds(value: object) -> float:
    """Seconds in ``value``: a duration string, or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise DurationError(f"not a duration: {value!r} (use e.g. {EXAMPLES})")
    if not math.isfinite(seconds) or seconds < 0:
        raise DurationError(f"not a duration: {value!r} (it must be finite and not negative)")
    if seconds > LONGEST_S:
        raise DurationError(f"not a duration: {value!r} (the longest is 100y)")
    return seconds


def number_or_duration(text: str) -> float:
    """Seconds in a flag or environment value that took a bare number of seconds before it
    took durations, so ``90`` still works: a number is returned as it is, for the caller's
    range check and message; anything else must be a duration."""
    try:
        return float(text)
    except ValueError:
        return parse_seconds(text)


def parse_duration(value: object) -> dt.timedelta:
    """:func:`parse_seconds` as a :class:`~datetime.timedelta`."""
    return dt.timedelta(seconds=parse_seconds(value))


def _parse_text(text: str) -> float:
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _MS[match.group(2)] / 1000
        pos = match.end()
    if not text or pos != len(text):
        raise DurationError(f"not a duration: {text!r} (use e.g. {EXAMPLES})")
    return total


def format_duration(value: dt.timedelta | float) -> str:
    """The shortest Prometheus spelling, to the millisecond: ``1h30m``, ``1w``, ``0s``."""
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in UNITS:
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def human_duration(seconds: float) -> str:
    """Prometheus's ``humanizeDuration``: ``1d 2h 3m 4s``, ``12m 14s``, ``5.5s``, ``250ms``."""
    if not math.isfinite(seconds):
        return f"{seconds:.4g}"
    if seconds == 0:
        return "0s"
    sign, value = ("-", -seconds) if seconds < 0 else ("", seconds)
    if value < 1:
        prefix = ""
        for smaller in "munpfazy":
            if value >= 1:
                break
            prefix, value = smaller, value * 1000
        return f"{sign}{value:.4g}{prefix}s"
    minutes, secs = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = ((days, "d"), (hours, "h"), (minutes, "m"))
    first = next((i for i, (count, _) in enumerate(parts) if count), None)
    if first is None:
        return f"{sign}{value:.4g}s"
    return sign + " ".join(f"{count}{unit}" for count, unit in parts[first:]) + f" {secs}s"


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """The instant ``text`` names, ``now`` being now: see the module doc for the forms."""
    ago = _ago(text)
    if ago is not None:
        return now - ago
    try:
        instant = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DurationError(f"expected {TIME_EXAMPLES}, got {text!r}") from None
    return instant.replace(tzinfo=dt.UTC) if instant.tzinfo is None else instant.astimezone(dt.UTC)


def is_relative(text: str) -> bool:
    """Whether a :func:`parse_time` text is relative to now (``now``, ``2d``), not an instant."""
    return _ago(text) is not None


def _ago(text: str) -> dt.timedelta | None:
    """How long before now a relative time is; None for anything else."""
    value = text.strip()
    if value == "now":
        return dt.timedelta(0)
    rest = value.removeprefix("now-") if value.startswith("now-") else value.removeprefix("-")
    try:
        return parse_duration(rest)
    except DurationError:
        return None


def duration_argument(text: str) -> dt.timedelta:
    """An argparse ``type``: a duration flag, with argparse's error when it is not one."""
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def time_argument(text: str) -> dt.datetime:
    """An argparse ``type``: a :func:`parse_time` flag, resolved at the time it is read."""
    try:
        return parse_time(text, utc_now())
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


__all__ = [
    "EXAMPLES",
    "LONGEST_S",
    "TIME_EXAMPLES",
    "UNITS",
    "DurationError",
    "duration_argument",
    "format_duration",
    "human_duration",
    "is_relative",
    "number_or_duration",
    "parse_duration",
    "parse_seconds",
    "parse_time",
    "time_argument",
]
