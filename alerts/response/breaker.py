"""The circuit-breaker state machine, pure: no Kafka, no wall clock.

One breaker per agent and per agent+tool. ``closed`` lets calls through; ``open`` halts
them; once the cooldown since opening has elapsed it becomes ``half_open``, where the
SDK lets one probe call through: a good probe closes it, a bad one opens it again with
a fresh cooldown. A person may close or open it at any time, except that an agent the
catalog lists as retired is held open and cannot be closed.

Keeping the rules here, apart from the control topic, is what lets them be tested with
an injected clock and property tests; ``agentwatch.alerts.response.control`` publishes the
transitions this module computes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final

from agentwatch.clock import Clock as Clock
from agentwatch.ingest.contract.control import BreakerState, control_key

DEFAULT_COOLDOWN_S: Final = 300.0
RETIRED_REASON: Final = "retired in the agent catalog"
SYSTEM_ACTOR: Final = "system:catalog"  # holds retired agents open
COOLDOWN_ACTOR: Final = "system:breaker"  # moves breakers to half-open


class BreakerError(ValueError):
    """A transition the rules forbid, e.g. closing a retired agent's breaker."""


@dataclass(frozen=True)
class BreakerKey:
    """Which breaker: an agent's, or one tool's (or model's) of an agent."""

    agent_id: str
    tool: str | None = None

    @property
    def sort_key(self) -> tuple[str, int, str]:
        """Agent by agent, the agent's own breaker before its tools' (``None`` sorts first)."""
        return (self.agent_id, self.tool is not None, self.tool or "")

    def __str__(self) -> str:
        return control_key(self.agent_id, self.tool)

    @classmethod
    def parse(cls, text: str) -> BreakerKey:
        """``agent`` or ``agent/tool``, the control topic's record key."""
        agent, sep, tool = text.partition("/")
        key = cls(agent, tool if sep else None)
        control_key(key.agent_id, key.tool)  # validates
        return key


@dataclass(frozen=True)
class Breaker:
    """One breaker's state; transitions return a new value and never mutate.

    ``since`` is when it entered its state, ``opened_at`` when it last opened (the
    cooldown runs from there), ``held`` whether the catalog holds it open.
    """

    key: BreakerKey
    state: BreakerState = "closed"
    since: dt.datetime | None = None
    opened_at: dt.datetime | None = None
    cooldown_s: float = DEFAULT_COOLDOWN_S
    reason: str = ""
    actor: str = ""
    held: bool = False

    def cooldown_ends(self) -> dt.datetime | None:
        if self.state != "open" or self.opened_at is None:
            return None
        return self.opened_at + dt.timedelta(seconds=self.cooldown_s)

    def due(self, now: dt.datetime) -> bool:
        """Open, not held, and the cooldown is over: time for a probe."""
        ends = self.cooldown_ends()
        return not self.held and ends is not None and now >= ends

    def open(
        self, now: dt.datetime, *, reason: str, actor: str, cooldown_s: float | None = None
    ) -> Breaker:
        """Open (or reopen from half-open); an open breaker stays as it is."""
        if self.state == "open":
            return self
        cooldown = self.cooldown_s if cooldown_s is None else cooldown_s
        if cooldown < 0:
            raise BreakerError(f"cooldown must be >= 0 s, got {cooldown}")
        return replace(
            self,
            state="open",
            since=now,
            opened_at=now,
            cooldown_s=cooldown,
            reason=reason,
            actor=actor,
        )

    def close(self, now: dt.datetime, *, reason: str, actor: str) -> Breaker:
        """Close by hand, from any state; refused while the catalog holds it open."""
        if self.held:
            raise BreakerError(f"breaker {self.key} is held open: {self.reason}")
        if self.state == "closed":
            return self
        return replace(self, state="closed", since=now, opened_at=None, reason=reason, actor=actor)

    def tick(self, now: dt.datetime) -> Breaker:
        """Move to half-open once the cooldown is over; otherwise nothing changes."""
        if not self.due(now):
            return self
        return replace(
            self,
            state="half_open",
            since=now,
            reason=f"cooldown of {self.cooldown_s:g} s over; probing",
            actor=COOLDOWN_ACTOR,
        )

    def probe(self, now: dt.datetime, *, ok: bool, actor: str, detail: str = "") -> Breaker:
        """The half-open probe's outcome: closed if it went well, else open again."""
        if self.state != "half_open":
            return self
        if ok:
            reason = detail or "probe succeeded"
            return replace(
                self, state="closed", since=now, opened_at=None, reason=reason, actor=actor
            )
        reason = detail or "probe failed"
        return replace(self, state="open", since=now, opened_at=now, reason=reason, actor=actor)

    def hold(self, now: dt.datetime, reason: str = RETIRED_REASON) -> Breaker:
        """Open and keep open (retired agent): no cooldown, no probe, no manual close."""
        if self.held and self.state == "open":
            return self
        opened = self.state == "open"
        return replace(
            self,
            state="open",
            since=self.since if opened else now,
            opened_at=self.opened_at if opened else now,
            reason=reason,
            actor=SYSTEM_ACTOR,
            held=True,
        )

    def release(self) -> Breaker:
        """Stop holding (the agent is no longer retired); it stays open until closed."""
        return replace(self, held=False) if self.held else self


@dataclass(frozen=True)
class Change:
    """One operation's effect; only a change of state is a transition to announce."""

    before: Breaker
    after: Breaker

    @property
    def changed(self) -> bool:
        return self.before.state != self.after.state


class BreakerBook:
    """Every breaker by key, with the clock and the catalog's retired agents.

    A breaker never seen is closed. Each operation returns the :class:`Change` it made,
    so a caller can publish exactly the transitions.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        default_cooldown_s: float = DEFAULT_COOLDOWN_S,
        retired: Iterable[str] = (),
        breakers: Iterable[Breaker] = (),
    ) -> None:
        self._clock = clock
        self.default_cooldown_s = default_cooldown_s
        self._breakers: dict[BreakerKey, Breaker] = {b.key: b for b in breakers}
        self.retired: frozenset[str] = frozenset()
        self.set_retired(retired)

    def now(self) -> dt.datetime:
        return self._clock()

    def get(self, key: BreakerKey) -> Breaker:
        found = self._breakers.get(key)
        if found is not None:
            return found
        return Breaker(key, cooldown_s=self.default_cooldown_s)

    def __iter__(self) -> Iterator[Breaker]:
        return iter(sorted(self._breakers.values(), key=lambda b: b.key.sort_key))

    def _set(self, before: Breaker, after: Breaker) -> Change:
        self._breakers[after.key] = after
        return Change(before, after)

    def open(
        self, key: BreakerKey, *, reason: str, actor: str, cooldown_s: float | None = None
    ) -> Change:
        before = self.get(key)
        cooldown = self.default_cooldown_s if cooldown_s is None else cooldown_s
        return self._set(
            before, before.open(self.now(), reason=reason, actor=actor, cooldown_s=cooldown)
        )

    def close(self, key: BreakerKey, *, reason: str, actor: str) -> Change:
        if key.agent_id in self.retired:
            raise BreakerError(f"agent {key.agent_id!r} is retired in the catalog: held open")
        before = self.get(key)
        return self._set(before, before.close(self.now(), reason=reason, actor=actor))

    def probe_result(self, key: BreakerKey, *, ok: bool, actor: str, detail: str = "") -> Change:
        before = self.get(key)
        return self._set(before, before.probe(self.now(), ok=ok, actor=actor, detail=detail))

    def tick(self) -> list[Change]:
        """Half-open every breaker whose cooldown is over."""
        now = self.now()
        changes = [self._set(b, b.tick(now)) for b in list(self._breakers.values()) if b.due(now)]
        return [c for c in changes if c.changed]

    def set_retired(self, agents: Iterable[str]) -> list[Change]:
        """Hold the retired agents' breakers open; release those no longer retired."""
        now = self.now()
        self.retired = frozenset(agents)
        changes: list[Change] = []
        for agent in sorted(self.retired):
            before = self.get(BreakerKey(agent))
            changes.append(self._set(before, before.hold(now)))
        for breaker in list(self._breakers.values()):
            if breaker.held and breaker.key.agent_id not in self.retired:
                self._set(breaker, breaker.release())
        return [c for c in changes if c.changed]

    def allows(self, agent_id: str, tool: str | None = None) -> bool:
        """Whether a call would go through outright (half-open admits only its probe)."""
        keys = [BreakerKey(agent_id)] + ([BreakerKey(agent_id, tool)] if tool else [])
        return all(self.get(k).state == "closed" for k in keys)
