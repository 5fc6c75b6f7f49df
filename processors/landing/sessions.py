"""Open sessions of one partition, so a session_end can report duration and containment.

A session's events share its key and so its partition, in order: the partition's
processor sees its start and any escalation before its end. Only sessions still open
are kept (bounded by age and count), and the state is rebuilt from stored events on
assignment, so a restart does not lose the duration of sessions that span it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

OUTCOME_SCHEMA = {
    "agent_id": pl.String(),
    "agent_version": pl.String(),
    "environment": pl.String(),
    "resolution": pl.String(),
    "duration_s": pl.Float64(),
    "contained": pl.Boolean(),
}


@dataclass
class SessionTracker:
    max_age_s: float = 86_400.0
    max_sessions: int = 1_000_000
    # session_id -> (start time if seen, escalated so far, first seen); insertion order is
    # first-seen order, so expiry only looks at the front.
    open: dict[str, tuple[dt.datetime | None, bool, dt.datetime]] = field(default_factory=dict)

    def update(self, events: pl.DataFrame) -> pl.DataFrame:
        """Feed a batch in offset order; return one outcome row per session that ended."""
        rows = events.filter(pl.col("kind").is_in(["session_start", "escalation", "session_end"]))
        if rows.is_empty():
            return pl.DataFrame(schema=OUTCOME_SCHEMA)
        outcomes: list[tuple[object, ...]] = []
        # Only session boundaries and escalations reach this loop: a few percent of events.
        for kind, sid, ts, agent, version, env, resolution in rows.select(
            "kind", "session_id", "ts", "agent_id", "agent_version", "environment", "resolution"
        ).iter_rows():
            start, escalated, seen = self.open.get(sid, (None, False, ts))
            if kind == "session_start":
                self.open[sid] = (ts, escalated, seen)
            elif kind == "escalation":
                self.open[sid] = (start, True, seen)
            else:
                self.open.pop(sid, None)
                duration = (ts - start).total_seconds() if start is not None else None
                contained = resolution == "resolved" and not escalated
                outcomes.append((agent, version, env, resolution, duration, contained))
        self._expire(rows["ts"].max())
        return pl.DataFrame(outcomes, schema=OUTCOME_SCHEMA, orient="row")

    def _expire(self, now: object) -> None:
        assert isinstance(now, dt.datetime)
        oldest = now - dt.timedelta(seconds=self.max_age_s)
        while self.open:
            first = next(iter(self.open))
            if len(self.open) <= self.max_sessions and self.open[first][2] >= oldest:
                break
            del self.open[first]

    def rebuild(self, stored: pl.DataFrame) -> None:
        """Replay stored boundary rows (kind, session_id, ts, ...) of the recent past."""
        if stored.is_empty():
            return
        last = stored["ts"].max()
        assert isinstance(last, dt.datetime)
        recent = stored.filter(pl.col("ts") >= last - dt.timedelta(seconds=self.max_age_s))
        self.update(recent.sort("_offset"))
