"""Scenarios: a YAML timeline of behaviour changes applied to the simulated fleet.

A drift detector can only be trusted once its delay and its false alarms are measured,
and both need ground truth: which agent changed, how, and from when. A scenario file
states that. ``changes`` schedules what happens (a model slows down, a model is swapped,
a prompt release uses tools differently and escalates more, token usage grows, users
ask other things, a guardrail fires in a burst), each at a time given as an offset from
the start of the run (``+30h``) or as an RFC 3339 instant, for named agents or every
agent of a type, optionally for a ``duration`` only and optionally as a canary on a
share of new sessions (``rollout``). ``expect`` says, in machine-readable form, which
agent and signals a detector should flag and from when; ``run`` suggests the fleet
(agents, simulated duration, event rate, seed) the timeline was written for.

This module holds the timeline: when, for whom, what to expect, and
:meth:`Scenario.apply`, which checks it against the fleet and schedules the changes through
``Agent.change_at``. The kinds of change are in :mod:`agentwatch.ingest.sim.changes`;
reading and validating the file, with messages that name the file and the field, in
:mod:`agentwatch.ingest.sim.scenario_file`.

Overlapping changes compose: at every instant an agent runs on its initial parameters
with every change then in force applied in order of start.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from agentwatch.durations import DurationError, format_duration, parse_seconds, parse_time
from agentwatch.errors import ConfigError
from agentwatch.ingest.sim.parameters import Agent

if TYPE_CHECKING:
    from agentwatch.ingest.sim.changes import ChangeKind


class ScenarioError(ConfigError, ValueError):
    """A scenario file that cannot be read or does not fit the fleet; says where and why
    (a command reports it in one line, as any input it cannot use)."""


# --------------------------------------------------------------------------- time


def duration_seconds(value: object, where: str) -> float:
    """A duration in seconds, or an error saying where it is."""
    try:
        return parse_seconds(value)
    except DurationError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class When:
    """An instant: ``offset_s`` after the start of the run, or an ``absolute`` epoch time."""

    offset_s: float | None = None
    absolute: float | None = None

    def resolve(self, start: float) -> float:
        """Epoch seconds, given the run's start."""
        if self.absolute is not None:
            return self.absolute
        return start + (self.offset_s or 0.0)

    def __str__(self) -> str:
        if self.absolute is not None:
            return dt.datetime.fromtimestamp(self.absolute, dt.UTC).isoformat()
        return f"+{format_duration(self.offset_s or 0.0)}"


def parse_when(value: object, where: str) -> When:
    """``+2h`` (an offset from the start) or an RFC 3339 instant with a time zone."""
    if isinstance(value, dt.datetime):  # from code; scenario files give text (yamlfile.py)
        if value.tzinfo is None:
            raise ScenarioError(f"{where}: {value.isoformat()} needs a time zone, e.g. Z")
        return When(absolute=value.timestamp())
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+"):
            return When(offset_s=duration_seconds(text[1:], where))
        try:
            instant = dt.datetime.fromisoformat(text)
        except ValueError:
            instant = None
        if instant is not None:
            if instant.tzinfo is None:
                raise ScenarioError(f"{where}: {text!r} needs a time zone, e.g. Z or +00:00")
            return When(absolute=instant.timestamp())
    raise ScenarioError(
        f"{where}: expected an offset from the start such as +30h, or an RFC 3339 time such "
        f"as 2026-11-20T09:00:00Z, got {value!r}"
    )


def parse_start(text: str, now: float) -> float:
    """A run's start in epoch seconds, as every command reads a time (``now-2d``, a date)."""
    try:
        return parse_time(text, dt.datetime.fromtimestamp(now, dt.UTC)).timestamp()
    except DurationError as exc:
        raise ScenarioError(f"--start: {exc}") from None


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the timeline: a kind of change, for whom, from when, for how long."""

    at: When
    kind: ChangeKind
    agents: tuple[str, ...] = ()
    agent_types: tuple[str, ...] = ()
    duration_s: float | None = None
    rollout: float | None = None
    index: int = 0

    def targets(self, agent: Agent) -> bool:
        return agent.agent_id in self.agents or agent.agent_type in self.agent_types

    def describe(self) -> str:
        text = self.kind.describe()
        if self.rollout is not None:
            text += f", as a canary on {self.rollout:.0%} of new sessions"
        if self.duration_s is not None:
            text += f", for {format_duration(self.duration_s)}"
        return text


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a detector should flag: ``signals`` of ``agent`` from ``since`` on."""

    agent: str
    signals: tuple[str, ...]
    since: When | None = None  # None: when the first change naming the agent starts
    comparison: str | None = None  # 'rolling' or 'release'; None: either


@dataclass(frozen=True, slots=True)
class RunHints:
    """The fleet a timeline was written for; command-line flags take precedence."""

    agents: int | None = None
    duration_s: float | None = None
    sim_rate: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A change as applied to one agent, in epoch seconds, for logs and summaries."""

    agent_id: str
    start: float
    end: float | None
    description: str


@dataclass(frozen=True)
class Scenario:
    """A parsed, validated scenario file."""

    name: str
    description: str
    changes: tuple[Change, ...]
    expect: tuple[Expectation, ...]
    run: RunHints
    source: str = "<scenario>"

    def apply(self, agents: Sequence[Agent], start: float) -> list[Scheduled]:
        """Schedule every change on ``agents`` for a run starting at ``start`` (epoch s).

        Each agent's timeline is rebuilt from its initial parameters: at every instant a
        change starts or ends, the parameters become the initial ones with every change
        then in force applied in order of start (canary changes on the canary's copy).
        Raises :class:`ScenarioError` when a change names an agent, model, tool, intent or
        policy the fleet does not have.
        """
        ids = {a.agent_id for a in agents}
        types = {a.agent_type for a in agents}
        for change in self.changes:
            where = f"{self.source}: changes[{change.index}]"
            for agent_id in change.agents:
                if agent_id not in ids:
                    raise ScenarioError(
                        f"{where}: no agent {agent_id!r} in this fleet of {len(agents)} "
                        f"({', '.join(a.agent_id for a in agents)}); run more agents"
                    )
            for agent_type in change.agent_types:
                if agent_type not in types:
                    raise ScenarioError(
                        f"{where}: no agent of type {agent_type!r} in this fleet of "
                        f"{len(agents)}; run more agents"
                    )
        for expectation in self.expect:
            if expectation.agent not in ids:
                raise ScenarioError(
                    f"{self.source}: expect: no agent {expectation.agent!r} in this fleet of "
                    f"{len(agents)}; run more agents"
                )
        scheduled: list[Scheduled] = []
        for agent in agents:
            mine = [c for c in self.changes if c.targets(agent)]
            if mine:
                scheduled.extend(self._schedule(agent, mine, start))
        return sorted(scheduled, key=lambda s: (s.start, s.agent_id))

    def _schedule(self, agent: Agent, changes: list[Change], start: float) -> list[Scheduled]:
        spans = sorted(
            (
                (
                    c.at.resolve(start),
                    math.inf if c.duration_s is None else c.at.resolve(start) + c.duration_s,
                    c,
                )
                for c in changes
            ),
            key=lambda span: (span[0], span[2].index),
        )
        base = agent.parameters
        for instant in sorted({s for s, _, _ in spans} | {e for _, e, _ in spans} - {math.inf}):
            active = [c for s, e, c in spans if s <= instant < e]
            stable, canary, share = base, None, 0.0
            for change in active:
                try:
                    if change.rollout is None:
                        stable = change.kind.apply(stable, agent)
                        canary = None if canary is None else change.kind.apply(canary, agent)
                    else:
                        canary = change.kind.apply(canary or stable, agent)
                        share = change.rollout
                except ScenarioError as exc:
                    raise ScenarioError(f"{self.source}: changes[{change.index}]: {exc}") from None
            if canary is not None:
                stable = replace(stable, canary=canary, canary_share=share)
            agent.change_at(instant, stable)
        return [
            Scheduled(agent.agent_id, s, None if math.isinf(e) else e, c.describe())
            for s, e, c in spans
        ]

    def since(self, expectation: Expectation, start: float) -> float:
        """When an expectation's drift begins (epoch s): its ``from``, else its agent's first
        change."""
        if expectation.since is not None:
            return expectation.since.resolve(start)
        return min(c.at.resolve(start) for c in self.changes if expectation.agent in c.agents)
