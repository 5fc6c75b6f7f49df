"""The clock: what time it is, as a function that can be replaced.

Everything that decides by time (alert ``for`` and ``keep_firing_for``, notification
group waits and repeats, runbook steps, breaker cooldowns and probes, drift windows, the
SDK's event timestamps) takes a :data:`Clock` instead of reading the system time itself,
so a test or a replay can run hours of behaviour without sleeping. It always answers in
UTC, with a time zone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeAlias

Clock: TypeAlias = Callable[[], dt.datetime]
"""A function returning the current time, timezone-aware UTC."""


def utc_now() -> dt.datetime:
    """The system's clock: the default :data:`Clock`."""
    return dt.datetime.now(dt.UTC)


class ManualClock:
    """A :data:`Clock` that stands still until :meth:`advance` moves it."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"a clock needs a time zone, got {start.isoformat()}")
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        """Move ahead by ``seconds`` and return the new time."""
        self.now += dt.timedelta(seconds=seconds)
        return self.now


__all__ = ["Clock", "ManualClock", "utc_now"]
