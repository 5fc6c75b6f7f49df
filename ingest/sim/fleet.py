"""A simulated fleet of AI agents producing realistic, deterministic trace events.

Everything here is pure computation: no clock, no I/O. The caller drives a simulated
clock (``Fleet.events_until(t)``), which serves both real-time pacing (``t`` = now) and
back-filling past timestamps as fast as possible. Given the same seed, agents and start
time, the event sequence is identical, ids included, so a re-run is a duplicate that the
processors' dedup absorbs rather than new traffic.

The knobs of an agent live in frozen dataclasses (:class:`AgentParameters` and the specs
it holds). A scenario timeline changes behaviour by scheduling a replacement
(``agent.change_at(ts, dataclasses.replace(params, token_scale=1.5))``); every turn of a
session reads the parameters in force when it starts, so a change lands mid-session as a
real deployment would, while a session keeps the prompt version it began with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

from agentwatch.ingest.contract.events import Event
from agentwatch.ingest.sim.parameters import Agent, Mix
from agentwatch.ingest.sim.session import Session, Step

T = TypeVar("T")

# --------------------------------------------------------------------------- the fleet

_Entry = tuple[float, int, "Session | None", "Iterator[Step] | None", "Event | None"]


class Fleet:
    """Many agents' sessions interleaved into one stream in timestamp order.

    Sessions arrive at random (a Poisson process over the whole fleet, split among agents
    by traffic weight). The arrival intensity follows a feedback loop on the event count,
    so the stream settles at about ``events_per_second`` of simulated time whatever the
    session mix, including after a timeline changes it.
    """

    HORIZON_S = 15.0
    MIN_HORIZON_S = 2.0
    MAX_GAIN = 6.0
    PRIOR_EVENTS_PER_SESSION = 14.0

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        seed: int,
        start: float | dt.datetime,
        events_per_second: float = 200.0,
    ) -> None:
        if not agents:
            raise ValueError("a fleet needs at least one agent")
        if events_per_second <= 0:
            raise ValueError("events_per_second must be positive")
        self.agents: tuple[Agent, ...] = tuple(agents)
        self.seed = seed
        self.start = start.timestamp() if isinstance(start, dt.datetime) else float(start)
        self.events_per_second = float(events_per_second)
        self.rng = random.Random(seed)
        # Ids depend on the seed and the clock start only: a re-run of the same simulation
        # repeats them (dedup absorbs it), while runs from another start never collide.
        digest = hashlib.blake2b(f"{seed}:{self.start!r}".encode(), digest_size=5)
        self._ns = digest.hexdigest()
        self._event_ids = itertools.count(1)
        self._session_ids = itertools.count(1)
        self._seq = itertools.count()
        self._traffic = Mix(self.agents, tuple(a.traffic_weight for a in self.agents))
        self._heap: list[_Entry] = [(self.start, next(self._seq), None, None, None)]
        self._closed = False
        self._clock = self.start
        self._mean_events = self.PRIOR_EVENTS_PER_SESSION  # refined as sessions end
        self.events_emitted = 0
        self.sessions_started = 0
        self.sessions_ended = 0

    # ------------------------------------------------------------------ driving

    def events_until(self, until: float | dt.datetime) -> Iterator[Event]:
        """Events with ts <= ``until`` (epoch seconds or aware datetime), in ts order.

        Successive calls continue where the last one stopped; how the caller slices time
        does not change the sequence. Abandoning the iterator midway loses nothing.
        """
        limit = until.timestamp() if isinstance(until, dt.datetime) else float(until)
        heap = self._heap
        pop, push, seq = heapq.heappop, heapq.heappush, self._seq
        while heap and heap[0][0] <= limit:
            ts, _, session, steps, event = pop(heap)
            self._clock = ts
            if session is None or steps is None or event is None:
                self._arrive(ts)
                continue
            following = next(steps, None)
            if following is None:
                self._end(session)
            else:
                push(heap, (following[0], next(seq), session, steps, following[1]))
            self.events_emitted += 1
            yield event
        if limit > self._clock and not math.isinf(limit):
            self._clock = limit

    def close(self) -> None:
        """Start no more sessions; the open ones still run to their end."""
        self._closed = True

    def drain(self) -> Iterator[Event]:
        """Close the fleet and return every remaining event of the open sessions."""
        self.close()
        return self.events_until(math.inf)

    def next_event_id(self) -> str:
        return f"{self._ns}-{next(self._event_ids)}"

    # ------------------------------------------------------------------ state

    @property
    def clock(self) -> float:
        """The simulated time reached, epoch seconds."""
        return self._clock

    @property
    def open_sessions(self) -> int:
        return self.sessions_started - self.sessions_ended

    def next_ts(self) -> float | None:
        """When the next event (or session arrival) is due, for a caller pacing in real time."""
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------ internals

    def _arrive(self, ts: float) -> None:
        if self._closed:
            return
        agent = self._traffic.pick(self.rng)
        session_id = f"sess-{self._ns}-{next(self._session_ids):06d}"
        session = Session(self, agent, session_id, ts)
        steps = session.run(ts)
        first_ts, first = next(steps)
        heapq.heappush(self._heap, (first_ts, next(self._seq), session, steps, first))
        self.sessions_started += 1
        # Arrival intensity: the steady rate for the mean session size, pushed up or down
        # by how far the emitted count is from target, smoothed over `horizon` seconds.
        # The horizon is short at first so that a short run reaches its rate soon.
        rate = self.events_per_second
        elapsed = ts - self.start
        horizon = min(self.HORIZON_S, max(self.MIN_HORIZON_S, elapsed))
        deficit = rate * elapsed - self.events_emitted
        gain = min(self.MAX_GAIN, max(0.2, 1.0 + deficit / (rate * horizon)))
        interval = self.rng.expovariate(rate * gain / self._mean_events)
        heapq.heappush(self._heap, (ts + interval, next(self._seq), None, None, None))

    def _end(self, session: Session) -> None:
        self.sessions_ended += 1
        self._mean_events += (session.events - self._mean_events) / min(
            self.sessions_ended + 20, 500
        )
