"""The kinds of behaviour change a scenario schedules, each a function of an agent's parameters.

``apply`` returns the parameters with the change made, or raises :class:`ScenarioError`
when the agent has no such model, tool, intent or policy; ``describe`` says it in words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from agentwatch.ingest.sim.parameters import Agent, AgentParameters, IntentSpec, Mix, ModelSpec
from agentwatch.ingest.sim.profiles import MODELS, TOOLS
from agentwatch.ingest.sim.scenario import ScenarioError


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
