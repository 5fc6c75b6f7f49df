"""Event-time ranges of the history commands (backfill, backtest).

``--from 48h`` means 48 hours before now. When that range holds no events but the store
has some (replayed or simulated history whose event time lies further back), the range
is moved to end where the data ends, with a warning that says so; when the store has no
events at all, the command stops with a clear error and exit status 1.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from agentwatch.processors.drift.summaries import data_bounds


class EmptyRange(Exception):
    """Neither the requested range nor the store holds events; the message says which."""


def resolve(
    db: Path, start: dt.datetime, end: dt.datetime, relative: bool, what: str
) -> tuple[dt.datetime, dt.datetime]:
    """The range to evaluate: as asked, or moved to the data's end (see the module doc)."""
    bounds = data_bounds(db)
    if bounds is None:
        raise EmptyRange(f"{db} holds no events: nothing to {what}")
    first, last = bounds
    if start <= last and end >= first:
        return start, end
    if not relative:
        raise EmptyRange(
            f"no events between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC; the data "
            f"runs from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
        )
    span = end - start
    moved = (last - span, last)
    print(
        f"warning: no events between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC; "
        f"the data ends at {last:%Y-%m-%d %H:%M} UTC, so the range is taken relative to it: "
        f"{moved[0]:%Y-%m-%d %H:%M} to {moved[1]:%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return moved
