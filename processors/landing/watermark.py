"""Event-time watermarks: which events arrive too late for their one-minute window.

Per partition the watermark is the highest event time seen so far, in offset order. An
event's window (its event-time minute) closes once the watermark passes the window's
end plus the allowed lateness; an event whose window is already closed when it arrives
is *late*: stored and counted, never silently dropped, but left out of the windowed
metrics, so a closed window's figures do not change after people have looked at them.
Decided from offsets alone, the verdict is the same on a replay.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

WINDOW = "1m"
WINDOW_DELTA = dt.timedelta(minutes=1)


def mark_late(
    events: pl.DataFrame, watermark: dt.datetime | None, allowed_lateness_s: float
) -> tuple[pl.DataFrame, dt.datetime | None]:
    """Set ``_late`` on a partition's batch (in offset order); return the new watermark."""
    if events.is_empty():
        return events, watermark
    lateness = dt.timedelta(seconds=allowed_lateness_s)
    start = pl.lit(watermark, dtype=events.schema["ts"]) if watermark else None
    before = pl.col("ts").cum_max().shift(1)
    if start is not None:
        before = pl.max_horizontal(before, start)
    marked = events.with_columns(
        _late=(
            (pl.col("ts").dt.truncate(WINDOW) + WINDOW_DELTA + lateness <= before).fill_null(False)
        )
    )
    top = events["ts"].max()
    assert top is None or isinstance(top, dt.datetime)
    new_watermark = max(x for x in (watermark, top) if x is not None) if top or watermark else None
    return marked, new_watermark
