"""The knobs of a simulated agent: frozen specs of its models, tools, policies and intents.

A scenario changes behaviour by scheduling a replacement of an agent's
:class:`AgentParameters` (``agent.change_at(ts, replace(params, ...))``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

from agentwatch.ingest.contract.events import Severity

T = TypeVar("T")

AGENT_TYPES: Final = ("hr-assistant", "it-support", "finance-compliance", "member-services")

# --------------------------------------------------------------------------- tunables


@dataclass(frozen=True, slots=True)
class LogNormal:
    """A positive quantity with a long right tail, as latencies and token counts are.

    ``median`` is the 50th percentile; ``sigma`` the spread of its logarithm (0.5 puts
    the 95th percentile at about 2.3 times the median).
    """

    median: float
    sigma: float

    def sample(self, rng: random.Random, scale: float = 1.0) -> float:
        return self.median * scale * math.exp(self.sigma * rng.gauss(0.0, 1.0))


@dataclass(frozen=True, slots=True)
class Mix(Generic[T]):
    """A weighted choice, precomputed so that a draw costs one random number and a bisect."""

    items: tuple[T, ...]
    weights: tuple[float, ...]
    _cum: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.items or len(self.items) != len(self.weights):
            raise ValueError("a Mix needs as many weights as items, and at least one")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("Mix weights must be non-negative and not all zero")
        object.__setattr__(self, "_cum", tuple(itertools.accumulate(self.weights)))

    @classmethod
    def of(cls, pairs: Iterable[tuple[T, float]]) -> Mix[T]:
        items, weights = zip(*pairs, strict=True)
        return cls(tuple(items), tuple(float(w) for w in weights))

    def pick(self, rng: random.Random) -> T:
        cum = self._cum
        return self.items[bisect.bisect_right(cum, rng.random() * cum[-1])]

    def share(self, item: T) -> float:
        """The probability of ``item``; tests and scenario code use it to reason about mixes."""
        total = self._cum[-1]
        return sum(w for i, w in zip(self.items, self.weights, strict=True) if i == item) / total


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How a model behaves and what it costs. ``latency_scale`` is the knob for a slowdown."""

    name: str
    provider: str
    ttft_ms: LogNormal
    ms_per_output_token: float
    usd_per_mtok_input: float
    usd_per_mtok_output: float
    usd_per_mtok_cache_read: float
    reasoning_tokens: LogNormal | None = None
    latency_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the agent calls; failures split between timeouts and errors the tool returns."""

    name: str
    latency_ms: LogNormal
    tool_type: str = "function"
    failure_rate: float = 0.01
    timeout_share: float = 0.4
    timeout_ms: float = 10_000.0
    result_tokens: LogNormal = LogNormal(250.0, 0.6)
    latency_scale: float = 1.0


PolicyStage = Literal["input", "tool", "output"]


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A guardrail run at one stage of every turn; ``block_share`` of violations are blocked.

    A tool-stage policy guards the tools named in ``tools``, or every action tool (not
    retrieval) when that is empty. Costly checks (LLM judges) run on a ``sample_rate``
    share of their chances only, as deployments do.
    """

    policy_id: str
    stage: PolicyStage
    severity: Severity
    violation_rate: float
    block_share: float = 0.3
    latency_ms: LogNormal = LogNormal(4.0, 0.5)
    tools: tuple[str, ...] = ()
    sample_rate: float = 1.0


@dataclass(frozen=True, slots=True)
class IntentSpec:
    """What a user comes for: the tools the agent calls for it and how many turns it takes."""

    name: str
    tools: tuple[str, ...]
    turns: Mix[int]
    escalation_factor: float = 1.0


@dataclass(frozen=True, slots=True)
class AgentParameters:
    """Every knob of one agent at one time; a timeline swaps in a modified copy.

    Rates are per session (escalation, abandon, failure, security, feedback), per model
    call (rate limit, timeout, cost reported) or per later turn and tool
    (``followup_tool_rate``). ``token_scale`` multiplies every token count and
    ``violation_scale`` every guardrail's violation rate: the one-number knobs a drift
    scenario turns.
    """

    agent_version: str
    prompt_id: str
    prompt_version: str
    models: Mix[ModelSpec]
    intents: Mix[IntentSpec]
    tools: Mapping[str, ToolSpec]
    policies: tuple[PolicySpec, ...]
    channels: Mix[str]
    user_segments: Mix[str]
    escalation_targets: Mix[str]
    system_prompt_tokens: LogNormal = LogNormal(1100.0, 0.15)
    turn_input_tokens: LogNormal = LogNormal(120.0, 0.7)
    output_tokens: LogNormal = LogNormal(180.0, 0.5)
    planning_output_tokens: LogNormal = LogNormal(45.0, 0.4)
    token_scale: float = 1.0
    think_time_s: LogNormal = LogNormal(9.0, 0.6)
    escalation_rate: float = 0.12
    abandon_rate: float = 0.07
    failure_rate: float = 0.02
    followup_tool_rate: float = 0.3
    llm_rate_limit_rate: float = 0.008
    llm_timeout_rate: float = 0.002
    llm_timeout_ms: float = 30_000.0
    security_rate: float = 0.008
    violation_scale: float = 1.0
    feedback_rate: float = 0.35
    satisfaction: float = 0.85
    cache_hit_rate: float = 0.5
    cost_reported_rate: float = 0.15
    # A canary release beside this one: ``canary_share`` of new sessions run on ``canary``
    # from start to end, the way a gradual rollout splits traffic, so that a release
    # comparison has both versions over the same period.
    canary: AgentParameters | None = None
    canary_share: float = 0.0


@dataclass(slots=True)
class Agent:
    """One running agent: fixed identity plus a schedule of parameter changes."""

    agent_id: str
    agent_type: str
    environment: str
    traffic_weight: float
    parameters: AgentParameters
    _times: list[float] = field(default_factory=list, init=False, repr=False)
    _changes: list[AgentParameters] = field(default_factory=list, init=False, repr=False)

    def parameters_at(self, ts: float) -> AgentParameters:
        """The parameters in force at ``ts`` (epoch seconds)."""
        if not self._times:
            return self.parameters
        i = bisect.bisect_right(self._times, ts)
        return self._changes[i - 1] if i else self.parameters

    def change_at(self, ts: float, parameters: AgentParameters) -> None:
        """From ``ts`` on, use ``parameters``. Schedule changes before the clock reaches them."""
        i = bisect.bisect_right(self._times, ts)
        self._times.insert(i, ts)
        self._changes.insert(i, parameters)
