"""Durations: one grammar and one spelling for every file and flag.

The grammar is Prometheus's: a number and a unit, ``ms``, ``s``, ``m``, ``h``, ``d``,
``w`` (7 days) or ``y`` (365 days), several of them run together (``1h30m``), or ``0``.
Two things users already write here are accepted too: a decimal number before a unit
(``1.5h``), and in YAML a plain number, read as seconds (``cooldown: 90``). A string
needs its unit, so ``90`` on the command line is a mistake, not ninety seconds. Nothing
negative, infinite or empty is a duration.

:func:`format_duration` writes the shortest Prometheus spelling (``5400 s`` is ``1h30m``),
which Prometheus itself reads back: exported rules and windows use it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from typing import Final

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


class DurationError(ValueError):
    """A value that is not a duration; the message says what would be."""


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


def duration_argument(text: str) -> dt.timedelta:
    """An argparse ``type``: a duration flag, with argparse's error when it is not one."""
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


__all__ = [
    "EXAMPLES",
    "LONGEST_S",
    "UNITS",
    "DurationError",
    "duration_argument",
    "format_duration",
    "parse_duration",
    "parse_seconds",
]
