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


@dataclass
class SessionTracker:
    max_age_s: float = 86_400.0
    max_sessions: int = 1_000_000
    # session_id -> (start time if seen, escalated so far, first seen); insertion order is
    # first-seen order, so expiry only looks at the front.
    open: dict[str, tuple[dt.datetime | None, bool, dt.datetime]] = field(default_factory=dict)
    # session_id -> (model, prompt_version) of the first LLM call of an open session.
    models: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

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
        known = [
            (sid, *self.open[sid], *self.models.get(sid, (None, None)))
            for sid in batch["session_id"].to_list()
            if sid in self.open
        ]
        state = pl.DataFrame(
            known,
            schema={
                "session_id": pl.String(),
                "start": CONTEXT_SCHEMA["session_started_at"],
                "escalated": pl.Boolean(),
                "seen": CONTEXT_SCHEMA["session_started_at"],
                "model": pl.String(),
                "prompt": pl.String(),
            },
            orient="row",
        )
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
                self.models.pop(sid, None)
                duration = (ts - start).total_seconds() if start is not None else None
                outcomes.append((agent, version, env, resolution, duration, escalated))
        self._remember_models(events)
        self._expire(rows["ts"].max())
        ended = pl.DataFrame(outcomes, schema=_ENDED_SCHEMA, orient="row")
        return ended.with_columns(contained=IS_CONTAINED.polars()).select(list(OUTCOME_SCHEMA))

    def _expire(self, now: object) -> None:
        assert isinstance(now, dt.datetime)
        oldest = now - dt.timedelta(seconds=self.max_age_s)
        while self.open:
            first = next(iter(self.open))
            if len(self.open) <= self.max_sessions and self.open[first][2] >= oldest:
                break
            del self.open[first]
            self.models.pop(first, None)

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
        # One step per session with LLM calls in the batch, not per event.
        for sid, model, prompt in firsts.iter_rows():
            if sid not in self.open:
                continue
            old_model, old_prompt = self.models.get(sid, (None, None))
            self.models[sid] = (old_model or model, old_prompt or prompt)

    def rebuild(self, stored: pl.DataFrame, newest: dt.datetime) -> None:
        """Replay stored rows (kind, session_id, ts, ...) of the recent past, a slice in
        offset order at a time; ``newest`` is the latest ``ts`` of all slices."""
        recent = stored.filter(pl.col("ts") >= newest - dt.timedelta(seconds=self.max_age_s))
        if not recent.is_empty():
            self.update(recent.sort("_offset"))
