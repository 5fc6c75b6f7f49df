"""Reading a scenario file: YAML in, a validated :class:`Scenario` out.

The file decodes into the typed structs below (unknown keys, types and ranges are
refused there), then the checks the types cannot make run over them. Every error is one
line naming the file and the key path (``changes[2].latency.scale``); what a file can
only get wrong against a fleet (an agent it does not have) is checked by
:meth:`Scenario.apply`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from agentwatch.decoding import decode
from agentwatch.ingest.sim.changes import (
    ChangeKind,
    IntentShift,
    LatencyShift,
    ModelSwap,
    PromptRelease,
    TokenGrowth,
    ViolationBurst,
)
from agentwatch.ingest.sim.parameters import AGENT_TYPES
from agentwatch.ingest.sim.profiles import MODELS, TOOLS
from agentwatch.ingest.sim.scenario import (
    Change,
    Expectation,
    RunHints,
    Scenario,
    ScenarioError,
    duration_seconds,
    parse_when,
)
from agentwatch.setting_types import Agents, Positive
from agentwatch.yamlfile import read_yaml

Share = Annotated[float, msgspec.Meta(gt=0, le=1)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
Factor = Annotated[float, msgspec.Meta(gt=0, le=1000)]  # a change's multiplier; more is a typo
Names = str | list[str]  # one name, or a list of them
Label = str | int | float  # a version, which YAML reads as a number when it looks like one
Duration = str | float  # a Prometheus duration, or seconds; see agentwatch.durations
When = str  # +30h, or an RFC 3339 instant (read_yaml keeps it as text): see parse_when


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A part of the file. An optional key left out is None, and the value built from it
    takes its own default (see ingest/sim/scenario.py and changes.py): written once."""


class _Run(_Struct, frozen=True):
    agents: Agents | None = None
    duration: Duration | None = None
    sim_rate: Positive | None = None
    seed: int | None = None


class _Latency(_Struct, frozen=True):
    scale: Factor
    model: str | None = None
    tool: str | None = None


class _ModelSwap(_Struct, frozen=True):
    from_: str = msgspec.field(name="from")
    to: str
    share: Share | None = None


class _Prompt(_Struct, frozen=True):
    version: Label
    agent_version: Label | None = None
    escalation_scale: Factor | None = None
    add_tools: Names | None = None
    drop_tools: Names | None = None
    followup_tool_rate: Fraction | None = None


class _Scale(_Struct, frozen=True):
    scale: Factor


class _Violations(_Struct, frozen=True):
    scale: Factor
    policy: str | None = None


class _Change(_Struct, frozen=True):
    """One entry of ``changes``: when, for whom, and exactly one kind of change."""

    at: When
    agent: Names | None = None
    agent_type: Names | None = None
    duration: Duration | None = None
    rollout: Share | None = None
    latency: _Latency | None = None
    model_swap: _ModelSwap | None = None
    prompt: _Prompt | None = None
    tokens: _Scale | None = None
    intents: dict[str, float] | None = None  # intent name to weight (checked: names the intent)
    violations: _Violations | None = None


_KINDS: Final = ("latency", "model_swap", "prompt", "tokens", "intents", "violations")


class _Expect(_Struct, frozen=True):
    agent: str
    signal: Names | None = None
    signals: Names | None = None
    from_: When | None = msgspec.field(default=None, name="from")
    comparison: Literal["rolling", "release"] | None = None


class _ScenarioFile(_Struct, frozen=True):
    name: str | None = None
    description: str = ""
    run: _Run = _Run()
    changes: list[_Change] = []
    expect: list[_Expect] = []


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    return parse_scenario(read_yaml(path, ScenarioError), str(path), default_name=path.stem)


def parse_scenario(doc: Any, source: str = "<scenario>", default_name: str = "") -> Scenario:
    """Validate a scenario document (as YAML loads it); errors name ``source`` and the key."""
    spec = decode(doc, _ScenarioFile, "", source, error=ScenarioError)
    name = (spec.name if spec.name is not None else default_name or "scenario").strip()
    if not name:
        raise ScenarioError(f"{source}: name: must be a non-empty string")
    run = _run_hints(spec.run, f"{source}: run")
    changes = tuple(_change(c, i, f"{source}: changes[{i}]") for i, c in enumerate(spec.changes))
    expect = tuple(
        _expectation(e, changes, f"{source}: expect[{i}]") for i, e in enumerate(spec.expect)
    )
    return Scenario(name, spec.description.strip(), changes, expect, run, source)


def _run_hints(run: _Run, where: str) -> RunHints:
    duration_s = None
    if run.duration is not None:
        duration_s = _positive_duration(run.duration, f"{where}.duration")
    return RunHints(agents=run.agents, duration_s=duration_s, sim_rate=run.sim_rate, seed=run.seed)


def _positive_duration(value: Duration, where: str) -> float:
    seconds = duration_seconds(value, where)
    if seconds <= 0:
        raise ScenarioError(f"{where}: must be positive, got {value!r}")
    return seconds


def _change(spec: _Change, index: int, where: str) -> Change:
    kinds = [k for k in _KINDS if getattr(spec, k) is not None]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        raise ScenarioError(
            f"{where}: expected exactly one kind of change ({', '.join(_KINDS)}); {found}"
        )
    at = parse_when(spec.at, f"{where}.at")
    agents = _names(spec.agent, f"{where}.agent")
    types = _names(spec.agent_type, f"{where}.agent_type")
    if not agents and not types:
        raise ScenarioError(
            f"{where}: name the agent (agent: it-support-1) or the agent type "
            f"(agent_type: it-support) it applies to"
        )
    for agent_type in types:
        if agent_type not in AGENT_TYPES:
            raise ScenarioError(
                f"{where}.agent_type: unknown type {agent_type!r}; "
                f"expected one of {', '.join(AGENT_TYPES)}"
            )
    duration_s = None
    if spec.duration is not None:
        duration_s = _positive_duration(spec.duration, f"{where}.duration")
    kind = _kind(spec, f"{where}.{kinds[0]}")
    return Change(at, kind, agents, types, duration_s, spec.rollout, index)


def _kind(spec: _Change, where: str) -> ChangeKind:
    """The one kind of change ``spec`` gives, after the checks its struct cannot make."""
    if spec.latency is not None:
        latency = spec.latency
        model = None if latency.model is None else _model(latency.model, f"{where}.model")
        tool = None if latency.tool is None else _tool(latency.tool, f"{where}.tool")
        if model and tool:
            raise ScenarioError(f"{where}: name a model or a tool, not both")
        return LatencyShift(latency.scale, model, tool)
    if spec.model_swap is not None:
        swap = spec.model_swap
        source, target = _model(swap.from_, f"{where}.from"), _model(swap.to, f"{where}.to")
        if source == target:
            raise ScenarioError(f"{where}: 'from' and 'to' are the same model")
        return ModelSwap(source, target, **_given(share=swap.share))
    if spec.prompt is not None:
        return _prompt(spec.prompt, where)
    if spec.tokens is not None:
        return TokenGrowth(spec.tokens.scale)
    if spec.intents is not None:
        if not spec.intents:
            raise ScenarioError(f"{where}: expected intent weights, e.g. faq: 0.5")
        for intent, weight in spec.intents.items():
            if not weight >= 0:
                raise ScenarioError(f"{where}.{intent}: must be >= 0, got {weight:g}")
        return IntentShift(tuple(spec.intents.items()))
    assert spec.violations is not None  # _change found exactly one kind
    return ViolationBurst(spec.violations.scale, spec.violations.policy)


def _prompt(spec: _Prompt, where: str) -> PromptRelease:
    add = _tools(spec.add_tools, f"{where}.add_tools")
    drop = _tools(spec.drop_tools, f"{where}.drop_tools")
    both = sorted(set(add) & set(drop))
    if both:
        raise ScenarioError(f"{where}: {', '.join(both)} both added and dropped")
    return PromptRelease(
        _label(spec.version, f"{where}.version"),
        **_given(
            agent_version=(
                None
                if spec.agent_version is None
                else _label(spec.agent_version, f"{where}.agent_version")
            ),
            escalation_scale=spec.escalation_scale,
        ),
        add_tools=add,
        drop_tools=drop,
        followup_tool_rate=spec.followup_tool_rate,
    )


def _given(**values: Any) -> dict[str, Any]:
    """The values the file gave, so that the ones it left out take their defaults."""
    return {key: value for key, value in values.items() if value is not None}


def _text(value: str, where: str) -> str:
    if not value.strip():
        raise ScenarioError(f"{where}: must be a non-empty string")
    return value.strip()


def _label(value: Label, where: str) -> str:
    return _text(str(value), where)


def _names(value: Names | None, where: str) -> tuple[str, ...]:
    """One name or a list of them; None (the key left out) is none."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not items:
        raise ScenarioError(f"{where}: expected at least one name")
    return tuple(dict.fromkeys(_text(v, where) for v in items))


def _model(value: str, where: str) -> str:
    return _known(_text(value, where), MODELS, "model", where)


def _tool(value: str, where: str) -> str:
    return _known(_text(value, where), TOOLS, "tool", where)


def _known(name: str, known: Mapping[str, Any], what: str, where: str) -> str:
    if name not in known:
        raise ScenarioError(f"{where}: unknown {what} {name!r}; expected one of {', '.join(known)}")
    return name


def _tools(value: Names | None, where: str) -> tuple[str, ...]:
    return tuple(_tool(v, where) for v in _names(value, where))


def _expectation(spec: _Expect, changes: Sequence[Change], where: str) -> Expectation:
    if (spec.signal is None) == (spec.signals is None):
        raise ScenarioError(f"{where}: give either 'signal' or 'signals'")
    key = "signal" if spec.signal is not None else "signals"
    signals = _names(spec.signal if spec.signal is not None else spec.signals, f"{where}.{key}")
    agent = _text(spec.agent, f"{where}.agent")
    if not any(agent in c.agents for c in changes):
        raise ScenarioError(
            f"{where}: no change names agent {agent!r}, so nothing should drift there"
        )
    since = None if spec.from_ is None else parse_when(spec.from_, f"{where}.from")
    return Expectation(agent, signals, since, spec.comparison)
