"""Open sessions of one partition, so a session_end can report duration and containment.

A session's events share its key and so its partition, in order: the partition's
processor sees its start and any escalation before its end. Only sessions still open
are kept (bounded by age and count), and the state is rebuilt from stored events on
assignment, so a restart does not lose the duration of sessions that span it.

The same state gives the rollups each event's session context (``context``): the
session's start, whether it escalated, and the model and prompt version of its first
LLM call, as far as the partition has seen them.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field

import polars as pl

from agentwatch.processors.store.definitions import IS_CONTAINED

# A batch's sessions as known before it landed, merged with what the batch itself shows.
CONTEXT_SCHEMA = {
    "session_id": pl.String(),
    "session_started_at": pl.Datetime("us", "UTC"),
    "escalated": pl.Boolean(),
    "session_model": pl.String(),
    "session_prompt_version": pl.String(),
}

OUTCOME_SCHEMA = {
    "agent_id": pl.String(),
    "agent_version": pl.String(),
    "environment": pl.String(),
    "resolution": pl.String(),
    "duration_s": pl.Float64(),
    "contained": pl.Boolean(),
}
# What the tracker knows of an ended session, from which containment is derived.
_ENDED_SCHEMA = {
    **{k: v for k, v in OUTCOME_SCHEMA.items() if k != "contained"},
    "escalated": pl.Boolean(),
}


# What the tracker keeps of an open session, compactly (a fleet has hundreds of thousands
# open at once): its start and first-seen times in epoch microseconds, whether it has
# escalated, and the model and prompt version of its first LLM call (interned strings).
# About 220 bytes a session in all (measured on simulated sessions), against 474 with
# datetimes and a second dictionary.
_Open = tuple[int | None, bool, int, str | None, str | None]
_US = 1_000_000


@dataclass
class SessionTracker:
    max_age_s: float = 86_400.0
    max_sessions: int = 1_000_000
    # session_id -> what is known of it; insertion order is first-seen order, so expiry
    # only looks at the front.
    open: dict[str, _Open] = field(default_factory=dict)

    def context(self, events: pl.DataFrame) -> pl.DataFrame:
        """Each session of the batch (before ``update``): start, escalation, first model.

        The batch's own rows count too, whatever their order: a start, an escalation or
        a first LLM call in the same batch as the event is known to it.
        """
        llm = pl.col("kind") == "llm_call"
        batch = (
            events.select("session_id", "ts", "kind", "model", "prompt_version")
            .sort("ts")  # only the columns read: sorting a whole batch copies every column
            .group_by("session_id")
            .agg(
                _start=pl.col("ts").filter(pl.col("kind") == "session_start").min(),
                _first=pl.col("ts").min(),
                _escalated=(pl.col("kind") == "escalation").any(),
                _model=pl.col("model").filter(llm).drop_nulls().first(),
                _prompt=pl.col("prompt_version").filter(llm).drop_nulls().first(),
            )
        )
        opened = self.open
        known = [(sid, *opened[sid]) for sid in batch["session_id"].to_list() if sid in opened]
        when = CONTEXT_SCHEMA["session_started_at"]
        state = pl.DataFrame(
            known,
            schema={
                "session_id": pl.String(),
                "start": pl.Int64(),
                "escalated": pl.Boolean(),
                "seen": pl.Int64(),
                "model": pl.String(),
                "prompt": pl.String(),
            },
            orient="row",
        ).with_columns(pl.col("start", "seen").cast(when))
        return batch.join(state, on="session_id", how="left").select(
            "session_id",
            session_started_at=pl.coalesce("start", "_start", pl.min_horizontal("seen", "_first")),
            escalated=pl.col("escalated").fill_null(False) | pl.col("_escalated"),
            session_model=pl.coalesce("model", "_model"),
            session_prompt_version=pl.coalesce("prompt", "_prompt"),
        )

    def update(self, events: pl.DataFrame) -> pl.DataFrame:
        """Feed a batch in offset order; return one outcome row per session that ended."""
        rows = events.filter(pl.col("kind").is_in(["session_start", "escalation", "session_end"]))
        if rows.is_empty():
            self._remember_models(events)
            return pl.DataFrame(schema=OUTCOME_SCHEMA)
        outcomes: list[tuple[object, ...]] = []
        opened = self.open
        # Only session boundaries and escalations reach this loop: a few percent of events.
        for kind, sid, ts, agent, version, env, resolution in rows.select(
            "kind", "session_id", pl.col("ts").dt.epoch("us"),
            "agent_id", "agent_version", "environment", "resolution",
        ).iter_rows():  # fmt: skip
            start, escalated, seen, model, prompt = opened.get(sid, (None, False, ts, None, None))
            if kind == "session_start":
                opened[sid] = (ts, escalated, seen, model, prompt)
            elif kind == "escalation":
                opened[sid] = (start, True, seen, model, prompt)
            else:
                opened.pop(sid, None)
                duration = (ts - start) / _US if start is not None else None
                outcomes.append((agent, version, env, resolution, duration, escalated))
        self._remember_models(events)
        newest = rows["ts"].max()
        assert isinstance(newest, dt.datetime)
        self._expire(_micros(newest))
        ended = pl.DataFrame(outcomes, schema=_ENDED_SCHEMA, orient="row")
        return ended.with_columns(contained=IS_CONTAINED.polars()).select(list(OUTCOME_SCHEMA))

    def _expire(self, now_us: int) -> None:
        oldest = now_us - int(self.max_age_s * _US)
        opened = self.open
        while opened:
            first = next(iter(opened))
            if len(opened) <= self.max_sessions and opened[first][2] >= oldest:
                break
            del opened[first]

    def _remember_models(self, events: pl.DataFrame) -> None:
        """Keep the first model and prompt version of open sessions' LLM calls."""
        calls = events.select("session_id", "ts", "kind", "model", "prompt_version").filter(
            pl.col("kind") == "llm_call"
        )
        if calls.is_empty():
            return
        firsts = (
            calls.sort("ts")
            .group_by("session_id")
            .agg(
                pl.col("model").drop_nulls().first(), pl.col("prompt_version").drop_nulls().first()
            )
        )
        opened = self.open
        # One step per session with LLM calls in the batch, not per event.
        for sid, model, prompt in firsts.iter_rows():
            known = opened.get(sid)
            if known is None or (known[3] is not None and known[4] is not None):
                continue
            start, escalated, seen, old_model, old_prompt = known
            opened[sid] = (
                start,
                escalated,
                seen,
                old_model or _interned(model),
                old_prompt or _interned(prompt),
            )

    def rebuild(self, stored: pl.DataFrame, newest: dt.datetime) -> None:
        """Replay stored rows (kind, session_id, ts, ...) of the recent past, a slice in
        offset order at a time; ``newest`` is the latest ``ts`` of all slices."""
        recent = stored.filter(pl.col("ts") >= newest - dt.timedelta(seconds=self.max_age_s))
        if not recent.is_empty():
            self.update(recent.sort("_offset"))


def _micros(at: dt.datetime) -> int:
    return (at - _EPOCH) // dt.timedelta(microseconds=1)


def _interned(text: str | None) -> str | None:
    """Models and prompt versions are few: one string each, not one per session."""
    return None if text is None else sys.intern(text)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
