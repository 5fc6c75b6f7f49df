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

Everything is validated with messages that name the file and the field, first on its
own (:func:`parse_scenario`), then against the fleet it is applied to
(:meth:`Scenario.apply`), which schedules the changes through ``Agent.change_at``.
Overlapping changes compose: at every instant an agent runs on its initial parameters
with every change then in force applied in order of start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import yaml

from agentwatch.decoding import did_you_mean
from agentwatch.durations import DurationError, format_duration, parse_seconds
from agentwatch.ingest.sim.parameters import (
    AGENT_TYPES,
    Agent,
    AgentParameters,
    IntentSpec,
    Mix,
    ModelSpec,
)
from agentwatch.ingest.sim.profiles import MODELS, TOOLS


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not fit the fleet; says where and why."""


# --------------------------------------------------------------------------- time


def _seconds(value: object, where: str) -> float:
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
    if isinstance(value, dt.datetime):  # YAML reads unquoted timestamps itself
        if value.tzinfo is None:
            raise ScenarioError(f"{where}: {value.isoformat()} needs a time zone, e.g. Z")
        return When(absolute=value.timestamp())
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+"):
            return When(offset_s=_seconds(text[1:], where))
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
    """A run's start: RFC 3339 (UTC if no zone), a date, or how long ago: ``2d``, ``now-2d``.

    As the drift command reads times. ``now-2d`` and ``2d`` suit the command line, where
    argparse takes ``--start -2d`` for an option (``--start=-2d`` works).
    """
    value = text.strip()
    for prefix in ("now-", "-", ""):
        if value.startswith(prefix):
            with contextlib.suppress(DurationError):
                return now - parse_seconds(value.removeprefix(prefix))
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ScenarioError(
            f"--start: expected an RFC 3339 time such as 2026-11-20T09:00:00Z, a date, or how "
            f"long ago such as 2d or now-36h, got {text!r}"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return instant.timestamp()


# --------------------------------------------------------------------------- changes


def _scaled_mix(mix: Mix[ModelSpec], pick: str | None, scale: float) -> Mix[ModelSpec]:
    return Mix(
        tuple(
            replace(m, latency_scale=m.latency_scale * scale) if pick in (None, m.name) else m
            for m in mix.items
        ),
        mix.weights,
    )


def _model_names(p: AgentParameters) -> str:
    return ", ".join(m.name for m in p.models.items)


@dataclass(frozen=True, slots=True)
class LatencyShift:
    """Latency of one model, one tool, or (neither named) every model, times ``scale``."""

    scale: float
    model: str | None = None
    tool: str | None = None

    def apply(self, p: AgentParameters, agent: Agent) -> AgentParameters:
        if self.tool is not None:
            spec = p.tools.get(self.tool)
            if spec is None:
                raise ScenarioError(
                    f"{agent.agent_id} does not call tool {self.tool!r}; "
                    f"its tools: {', '.join(sorted(p.tools))}"
                )
            shifted = replace(spec, latency_scale=spec.latency_scale * self.scale)
            return replace(p, tools={**p.tools, self.tool: shifted})
        if self.model is not None and all(m.name != self.model for m in p.models.items):
            raise ScenarioError(
                f"{agent.agent_id} does not use model {self.model!r}; its models: {_model_names(p)}"
            )
        return replace(p, models=_scaled_mix(p.models, self.model, self.scale))

    def describe(self) -> str:
        what = self.tool or self.model or "every model"
        return f"latency of {what} x{self.scale:g}"


@dataclass(frozen=True, slots=True)
class ModelSwap:
    """``share`` of the traffic of model ``source`` moves to model ``target``."""

    source: str
    target: str
    share: float = 1.0

    def apply(self, p: AgentParameters, agent: Agent) -> AgentParameters:
        items = list(p.models.items)
        weights = list(p.models.weights)
        at = [i for i, m in enumerate(items) if m.name == self.source]
        if not at:
            raise ScenarioError(
                f"{agent.agent_id} does not use model {self.source!r}; "
                f"its models: {_model_names(p)}"
            )
        moved = 0.0
        for i in at:
            moved += weights[i] * self.share
            weights[i] *= 1.0 - self.share
        existing = [i for i, m in enumerate(items) if m.name == self.target]
        if existing:
            weights[existing[0]] += moved
        else:
            items.append(MODELS[self.target])
            weights.append(moved)
        kept = [(m, w) for m, w in zip(items, weights, strict=True) if w > 0]
        return replace(p, models=Mix.of(kept))

    def describe(self) -> str:
        share = "" if self.share == 1.0 else f" ({self.share:.0%} of its traffic)"
        return f"model {self.source} -> {self.target}{share}"


@dataclass(frozen=True, slots=True)
class PromptRelease:
    """A new prompt version: it may call other tools, follow up more, escalate more."""

    version: str
    agent_version: str | None = None
    escalation_scale: float = 1.0
    add_tools: tuple[str, ...] = ()
    drop_tools: tuple[str, ...] = ()
    followup_tool_rate: float | None = None

    def apply(self, p: AgentParameters, agent: Agent) -> AgentParameters:
        missing = [t for t in self.drop_tools if t not in p.tools]
        if missing:
            raise ScenarioError(
                f"{agent.agent_id} does not call {', '.join(missing)}, so it cannot stop; "
                f"its tools: {', '.join(sorted(p.tools))}"
            )
        intents = p.intents
        if self.add_tools or self.drop_tools:
            intents = Mix(
                tuple(replace(intent, tools=self._tools(intent.tools)) for intent in intents.items),
                intents.weights,
            )
        names = {t for intent in intents.items for t in intent.tools}
        tools = {n: p.tools.get(n) or TOOLS[n] for n in sorted(names)}
        return replace(
            p,
            prompt_version=self.version,
            agent_version=self.agent_version or p.agent_version,
            escalation_rate=min(1.0, p.escalation_rate * self.escalation_scale),
            followup_tool_rate=(
                p.followup_tool_rate if self.followup_tool_rate is None else self.followup_tool_rate
            ),
            intents=intents,
            tools=tools,
        )

    def _tools(self, tools: tuple[str, ...]) -> tuple[str, ...]:
        kept = tuple(t for t in tools if t not in self.drop_tools)
        return kept + tuple(t for t in self.add_tools if t not in kept)

    def describe(self) -> str:
        parts = [f"prompt {self.version}"]
        if self.agent_version:
            parts.append(f"agent {self.agent_version}")
        if self.add_tools:
            parts.append("calls " + ", ".join(self.add_tools))
        if self.drop_tools:
            parts.append("stops calling " + ", ".join(self.drop_tools))
        if self.followup_tool_rate is not None:
            parts.append(f"follow-up tool rate {self.followup_tool_rate:g}")
        if self.escalation_scale != 1.0:
            parts.append(f"escalation x{self.escalation_scale:g}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class TokenGrowth:
    """Every token count (system prompt, user turns, outputs, tool results) times ``scale``."""

    scale: float

    def apply(self, p: AgentParameters, agent: Agent) -> AgentParameters:
        return replace(p, token_scale=p.token_scale * self.scale)

    def describe(self) -> str:
        return f"tokens x{self.scale:g}"


@dataclass(frozen=True, slots=True)
class IntentShift:
    """New weights for the named intents; the others keep theirs."""

    weights: tuple[tuple[str, float], ...]

    def apply(self, p: AgentParameters, agent: Agent) -> AgentParameters:
        known = [i.name for i in p.intents.items]
        unknown = [name for name, _ in self.weights if name not in known]
        if unknown:
            raise ScenarioError(
                f"{agent.agent_id} has no intent {', '.join(map(repr, unknown))}; "
                f"its intents: {', '.join(known)}"
            )
        new = dict(self.weights)
        pairs: list[tuple[IntentSpec, float]] = [
            (i, new.get(i.name, w)) for i, w in zip(p.intents.items, p.intents.weights, strict=True)
        ]
        if sum(w for _, w in pairs) <= 0:
            raise ScenarioError(f"{agent.agent_id}: the new intent weights are all zero")
        return replace(p, intents=Mix.of(pairs))

    def describe(self) -> str:
        return "intents " + ", ".join(f"{n}={w:g}" for n, w in self.weights)


@dataclass(frozen=True, slots=True)
class ViolationBurst:
    """Guardrail violation rates times ``scale``: one policy's, or (none named) all of them."""

    scale: float
    policy: str | None = None

    def apply(self, p: AgentParameters, agent: Agent) -> AgentParameters:
        if self.policy is None:
            return replace(p, violation_scale=p.violation_scale * self.scale)
        if all(pol.policy_id != self.policy for pol in p.policies):
            raise ScenarioError(
                f"{agent.agent_id} runs no policy {self.policy!r}; "
                f"its policies: {', '.join(pol.policy_id for pol in p.policies)}"
            )
        policies = tuple(
            replace(pol, violation_rate=pol.violation_rate * self.scale)
            if pol.policy_id == self.policy
            else pol
            for pol in p.policies
        )
        return replace(p, policies=policies)

    def describe(self) -> str:
        return f"violations of {self.policy or 'every policy'} x{self.scale:g}"


ChangeKind = LatencyShift | ModelSwap | PromptRelease | TokenGrowth | IntentShift | ViolationBurst


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


# --------------------------------------------------------------------------- parsing

_TOP_KEYS: Final = frozenset({"name", "description", "run", "changes", "expect"})
_RUN_KEYS: Final = frozenset({"agents", "duration", "sim_rate", "seed"})
_CHANGE_KEYS: Final = frozenset({"at", "agent", "agent_type", "duration", "rollout"})
_EXPECT_KEYS: Final = frozenset({"agent", "signal", "signals", "from", "comparison"})
_KIND_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "latency": frozenset({"scale", "model", "tool"}),
    "model_swap": frozenset({"from", "to", "share"}),
    "prompt": frozenset(
        {
            "version",
            "agent_version",
            "escalation_scale",
            "add_tools",
            "drop_tools",
            "followup_tool_rate",
        }
    ),
    "tokens": frozenset({"scale"}),
    "intents": frozenset(),  # a mapping of intent name to weight
    "violations": frozenset({"scale", "policy"}),
}
_COMPARISONS: Final = ("rolling", "release")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    return parse_scenario(doc, str(path), default_name=path.stem)


def parse_scenario(doc: Any, source: str = "<scenario>", default_name: str = "") -> Scenario:
    """Validate a scenario document (as YAML loads it); errors name ``source`` and the field."""
    if not isinstance(doc, dict):
        raise ScenarioError(f"{source}: expected a mapping with changes: and expect:")
    _no_unknown(doc, _TOP_KEYS, source, "")
    name = doc.get("name", default_name or "scenario")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(f"{source}: name: expected a non-empty string, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{source}: description: expected text, got {description!r}")
    run = _run_hints(doc.get("run") or {}, source)
    raw_changes = doc.get("changes") or []
    if not isinstance(raw_changes, list):
        raise ScenarioError(f"{source}: changes: expected a list of changes")
    changes = tuple(_change(c, i, source) for i, c in enumerate(raw_changes))
    raw_expect = doc.get("expect") or []
    if not isinstance(raw_expect, list):
        raise ScenarioError(f"{source}: expect: expected a list of expectations")
    expect = tuple(_expectation(e, i, changes, source) for i, e in enumerate(raw_expect))
    return Scenario(name.strip(), description.strip(), changes, expect, run, source)


def _no_unknown(doc: Mapping[str, Any], allowed: Iterable[str], source: str, where: str) -> None:
    unknown = sorted(set(map(str, doc)) - set(allowed))
    if unknown:
        place = f"{where}: " if where else ""
        raise ScenarioError(
            f"{source}: {place}unknown key {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown, allowed)}; expected {', '.join(sorted(allowed))}"
        )


def _mapping(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{source}: {where}: expected a mapping, got {value!r}")
    return value


def _number(
    value: Any,
    source: str,
    where: str,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = True,
) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        number = float(value)
        ok = (number > low if low_open else number >= low) and number <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + (
            f" and <= {high:g}" if math.isfinite(high) else ""
        )
        raise ScenarioError(f"{source}: {where}: expected a number {bound}, got {value!r}")
    return float(value)


def _text(value: Any, source: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{source}: {where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _label(value: Any, source: str, where: str) -> str:
    """A version label, which YAML may have read as a number (``version: 13``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return _text(value, source, where)


def _texts(value: Any, source: str, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ScenarioError(f"{source}: {where}: expected at least one name")
    return tuple(_text(v, source, where) for v in items)


def _run_hints(value: Any, source: str) -> RunHints:
    doc = _mapping(value, source, "run")
    _no_unknown(doc, _RUN_KEYS, source, "run")
    agents = doc.get("agents")
    if agents is not None and (not isinstance(agents, int) or isinstance(agents, bool)):
        raise ScenarioError(f"{source}: run.agents: expected a whole number, got {agents!r}")
    if agents is not None and agents < 1:
        raise ScenarioError(f"{source}: run.agents: must be at least 1, got {agents}")
    seed = doc.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ScenarioError(f"{source}: run.seed: expected a whole number, got {seed!r}")
    duration = doc.get("duration")
    duration_s = None if duration is None else _seconds(duration, f"{source}: run.duration")
    if duration_s is not None and duration_s <= 0:
        raise ScenarioError(f"{source}: run.duration: must be positive, got {duration!r}")
    sim_rate = doc.get("sim_rate")
    rate = None if sim_rate is None else _number(sim_rate, source, "run.sim_rate")
    return RunHints(agents=agents, duration_s=duration_s, sim_rate=rate, seed=seed)


def _change(value: Any, index: int, source: str) -> Change:
    where = f"changes[{index}]"
    doc = _mapping(value, source, where)
    kinds = [k for k in doc if k in _KIND_KEYS]
    _no_unknown(doc, _CHANGE_KEYS | set(_KIND_KEYS), source, where)
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        raise ScenarioError(
            f"{source}: {where}: expected exactly one kind of change "
            f"({', '.join(_KIND_KEYS)}); {found}"
        )
    if "at" not in doc:
        raise ScenarioError(f"{source}: {where}: 'at' is required (e.g. at: +30h)")
    at = parse_when(doc["at"], f"{source}: {where}.at")
    agents = _texts(doc["agent"], source, f"{where}.agent") if "agent" in doc else ()
    types = _texts(doc["agent_type"], source, f"{where}.agent_type") if "agent_type" in doc else ()
    if not agents and not types:
        raise ScenarioError(
            f"{source}: {where}: name the agent (agent: it-support-1) or the agent type "
            f"(agent_type: it-support) it applies to"
        )
    for agent_type in types:
        if agent_type not in AGENT_TYPES:
            raise ScenarioError(
                f"{source}: {where}.agent_type: unknown type {agent_type!r}; "
                f"expected one of {', '.join(AGENT_TYPES)}"
            )
    duration_s = None
    if doc.get("duration") is not None:
        duration_s = _seconds(doc["duration"], f"{source}: {where}.duration")
        if duration_s <= 0:
            raise ScenarioError(f"{source}: {where}.duration: must be positive")
    rollout = None
    if doc.get("rollout") is not None:
        rollout = _number(doc["rollout"], source, f"{where}.rollout", high=1.0)
    kind = _kind(kinds[0], doc[kinds[0]], source, f"{where}.{kinds[0]}")
    return Change(at, kind, agents, types, duration_s, rollout, index)


def _kind(name: str, value: Any, source: str, where: str) -> ChangeKind:
    doc = _mapping(value, source, where)
    if name != "intents":
        _no_unknown(doc, _KIND_KEYS[name], source, where)
    if name in ("latency", "tokens", "violations") and "scale" not in doc:
        raise ScenarioError(f"{source}: {where}: 'scale' is required (e.g. scale: 2.0)")
    if name == "latency":
        scale = _number(doc["scale"], source, f"{where}.scale")
        model = _model(doc["model"], source, f"{where}.model") if "model" in doc else None
        tool = _tool(doc["tool"], source, f"{where}.tool") if "tool" in doc else None
        if model and tool:
            raise ScenarioError(f"{source}: {where}: name a model or a tool, not both")
        return LatencyShift(scale, model, tool)
    if name == "model_swap":
        for key in ("from", "to"):
            if key not in doc:
                raise ScenarioError(f"{source}: {where}: '{key}' is required (a model name)")
        share = _number(doc.get("share", 1.0), source, f"{where}.share", high=1.0)
        source_model = _model(doc["from"], source, f"{where}.from")
        target = _model(doc["to"], source, f"{where}.to")
        if source_model == target:
            raise ScenarioError(f"{source}: {where}: 'from' and 'to' are the same model")
        return ModelSwap(source_model, target, share)
    if name == "prompt":
        if "version" not in doc:
            raise ScenarioError(f"{source}: {where}: 'version' is required (e.g. version: v13)")
        version = _label(doc["version"], source, f"{where}.version")
        agent_version = None
        if "agent_version" in doc:
            agent_version = _label(doc["agent_version"], source, f"{where}.agent_version")
        add = _tool_list(doc.get("add_tools", []), source, f"{where}.add_tools")
        drop = _tool_list(doc.get("drop_tools", []), source, f"{where}.drop_tools")
        both = sorted(set(add) & set(drop))
        if both:
            raise ScenarioError(f"{source}: {where}: {', '.join(both)} both added and dropped")
        followup = None
        if "followup_tool_rate" in doc:
            followup = _number(
                doc["followup_tool_rate"],
                source,
                f"{where}.followup_tool_rate",
                high=1.0,
                low_open=False,
            )
        escalation = _number(doc.get("escalation_scale", 1.0), source, f"{where}.escalation_scale")
        return PromptRelease(version, agent_version, escalation, add, drop, followup)
    if name == "tokens":
        return TokenGrowth(_number(doc["scale"], source, f"{where}.scale"))
    if name == "intents":
        if not doc:
            raise ScenarioError(f"{source}: {where}: expected intent weights, e.g. faq: 0.5")
        weights = tuple(
            (_text(str(k), source, where), _number(v, source, f"{where}.{k}", low_open=False))
            for k, v in doc.items()
        )
        return IntentShift(weights)
    scale = _number(doc["scale"], source, f"{where}.scale")
    policy = _text(doc["policy"], source, f"{where}.policy") if "policy" in doc else None
    return ViolationBurst(scale, policy)


def _model(value: Any, source: str, where: str) -> str:
    name = _text(value, source, where)
    if name not in MODELS:
        raise ScenarioError(
            f"{source}: {where}: unknown model {name!r}; expected one of {', '.join(MODELS)}"
        )
    return name


def _tool(value: Any, source: str, where: str) -> str:
    name = _text(value, source, where)
    if name not in TOOLS:
        raise ScenarioError(
            f"{source}: {where}: unknown tool {name!r}; expected one of {', '.join(TOOLS)}"
        )
    return name


def _tool_list(value: Any, source: str, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(_tool(v, source, where) for v in items))


def _expectation(value: Any, index: int, changes: Sequence[Change], source: str) -> Expectation:
    where = f"expect[{index}]"
    doc = _mapping(value, source, where)
    _no_unknown(doc, _EXPECT_KEYS, source, where)
    if "agent" not in doc:
        raise ScenarioError(f"{source}: {where}: 'agent' is required")
    agent = _text(doc["agent"], source, f"{where}.agent")
    if ("signal" in doc) == ("signals" in doc):
        raise ScenarioError(f"{source}: {where}: give either 'signal' or 'signals'")
    key = "signal" if "signal" in doc else "signals"
    signals = tuple(dict.fromkeys(_texts(doc[key], source, f"{where}.{key}")))
    comparison = doc.get("comparison")
    if comparison is not None and comparison not in _COMPARISONS:
        raise ScenarioError(
            f"{source}: {where}.comparison: expected one of {', '.join(_COMPARISONS)}, "
            f"got {comparison!r}"
        )
    named = [c for c in changes if agent in c.agents]
    if not named:
        raise ScenarioError(
            f"{source}: {where}: no change names agent {agent!r}, so nothing should drift there"
        )
    since = parse_when(doc["from"], f"{source}: {where}.from") if "from" in doc else None
    return Expectation(agent, signals, since, comparison)


__all__ = [
    "Change",
    "Expectation",
    "IntentShift",
    "LatencyShift",
    "ModelSwap",
    "PromptRelease",
    "RunHints",
    "Scenario",
    "ScenarioError",
    "Scheduled",
    "TokenGrowth",
    "ViolationBurst",
    "When",
    "load_scenario",
    "parse_scenario",
    "parse_start",
    "parse_when",
]
