"""Reading a scenario file: YAML in, a validated :class:`Scenario` out.

Every error names the file and the field (``changes[2].latency.scale``); what a file can
only get wrong against a fleet (an agent it does not have) is checked by
:meth:`Scenario.apply`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from agentwatch.decoding import did_you_mean
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
from agentwatch.settings import MAX_AGENTS

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
    if agents is not None and not 1 <= agents <= MAX_AGENTS:
        raise ScenarioError(f"{source}: run.agents: must be 1 to {MAX_AGENTS:,}, got {agents}")
    seed = doc.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ScenarioError(f"{source}: run.seed: expected a whole number, got {seed!r}")
    duration = doc.get("duration")
    duration_s = None if duration is None else duration_seconds(duration, f"{source}: run.duration")
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
        duration_s = duration_seconds(doc["duration"], f"{source}: {where}.duration")
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
