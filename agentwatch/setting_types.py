"""The value types of settings: their ranges, and durations.

The ranges are checked in the file and the environment as on the command line
(agentwatch/commands/options.py): a count, an amount above 0, a duration of 0 or more or
above 0; every float must also be finite (settings.py refuses inf). A duration
setting is written as every duration flag is (agentwatch/durations.py): ``1h30m`` or a
number of seconds, in the file and in the environment alike, and holds seconds, or for a
setting a flag reads as text (``[breaker] cooldown``) the shortest spelling, so a mistake
is caught when the settings load, naming the file and key, not later naming a flag.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Final

import msgspec

from agentwatch.durations import format_duration, number_or_duration, parse_seconds

_DURATION: Final = {"kind": "duration"}
"""The ``extra`` of a duration setting's :class:`msgspec.Meta`, which marks it as one."""

Count = Annotated[int, msgspec.Meta(ge=1)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(ge=0, extra=_DURATION)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, extra=_DURATION)]
DurationText = Annotated[str, msgspec.Meta(extra=_DURATION)]

# A TCP port: what 0 means is each setting's (not served, turned off, any free port); a
# FixedPort is one others are told to connect to, where 0 (any free port) means nothing.
MAX_PORT = 65_535
Port = Annotated[int, msgspec.Meta(ge=0, le=MAX_PORT)]
FixedPort = Annotated[int, msgspec.Meta(ge=1, le=MAX_PORT)]
# Worker processes of `process`: each has its own memory and Kafka connections, and members
# beyond the topic's partitions sit idle. Simulated agents: all are built before the first
# event. Retention: a hundred years is the longest that is not "for ever" (0).
MAX_WORKERS = 256
MAX_AGENTS = 10_000
MAX_RETENTION_DAYS = 36_500
Workers = Annotated[int, msgspec.Meta(ge=0, le=MAX_WORKERS)]
Agents = Annotated[int, msgspec.Meta(ge=1, le=MAX_AGENTS)]
RetentionDays = Annotated[int, msgspec.Meta(ge=0, le=MAX_RETENTION_DAYS)]


def read_duration(value: object, declared: Any) -> object:
    """A file or environment value as a setting of type ``declared`` holds it when that is a
    duration (DurationError if it is not one), else ``value`` as it is. A number is left to
    the setting's range check, which names its bound."""
    base = _duration_base(declared)
    if base is None:
        return value
    number = number_or_duration(value) if isinstance(value, str) else value
    return format_duration(parse_seconds(number)) if base is str else number


def _duration_base(declared: Any) -> type | None:
    """float or str for a duration setting (``Seconds | None`` included), else None."""
    for member in (declared, *typing.get_args(declared)):
        metadata = getattr(member, "__metadata__", ())
        if any(isinstance(m, msgspec.Meta) and m.extra == _DURATION for m in metadata):
            return typing.cast(type, member.__origin__)
    return None


__all__ = [
    "MAX_AGENTS",
    "MAX_PORT",
    "MAX_RETENTION_DAYS",
    "MAX_WORKERS",
    "Agents",
    "Count",
    "DurationText",
    "FixedPort",
    "Port",
    "Positive",
    "PositiveSeconds",
    "RetentionDays",
    "Seconds",
    "Workers",
    "read_duration",
]
