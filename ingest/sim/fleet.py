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

import bisect
import datetime as dt
import hashlib
import heapq
import itertools
import math
import random
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, TypeVar

from agentwatch.ingest.contract.events import (
    SCHEMA_VERSION,
    Error,
    Escalation,
    Event,
    Feedback,
    LlmCall,
    PolicyCheck,
    Resolution,
    Security,
    SessionEnd,
    SessionStart,
    Severity,
    ToolCall,
)

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


# --------------------------------------------------------------------------- catalog

_MODELS: Final = {
    m.name: m
    for m in (
        ModelSpec("gpt-4o-mini", "openai", LogNormal(380, 0.35), 9.0, 0.15, 0.60, 0.075),
        ModelSpec("gpt-4o", "openai", LogNormal(520, 0.35), 16.0, 2.50, 10.0, 1.25),
        ModelSpec("claude-3-5-sonnet", "anthropic", LogNormal(700, 0.3), 15.0, 3.0, 15.0, 0.30),
        ModelSpec("claude-3-5-haiku", "anthropic", LogNormal(420, 0.3), 10.0, 0.80, 4.0, 0.08),
        ModelSpec("gemini-1.5-flash", "google", LogNormal(330, 0.4), 6.5, 0.075, 0.30, 0.01875),
        ModelSpec(
            "o3-mini", "openai", LogNormal(900, 0.4), 8.0, 1.10, 4.40, 0.55,
            reasoning_tokens=LogNormal(600, 0.6),
        ),
    )
}  # fmt: skip


# The catalogs agents draw from, by name: a scenario swaps in a model or adds a tool from here.
MODELS: Final[Mapping[str, ModelSpec]] = MappingProxyType(_MODELS)


def _tool(
    name: str, median_ms: float, sigma: float = 0.5, failure: float = 0.01, kind: str = "function"
) -> ToolSpec:
    return ToolSpec(name, LogNormal(median_ms, sigma), tool_type=kind, failure_rate=failure)


_TOOLS: Final = {
    t.name: t
    for t in (
        # HR
        _tool("workday.get_payslip", 320),
        _tool("workday.get_leave_balance", 240),
        _tool("workday.request_leave", 480, failure=0.02),
        _tool("workday.get_tax_documents", 650, sigma=0.6),
        _tool("benefits.search_plans", 410),
        _tool("kb.search_hr_policies", 180, sigma=0.4, kind="datastore"),
        # IT
        _tool("okta.get_user", 150, sigma=0.4),
        _tool("okta.reset_password", 420, failure=0.015),
        _tool("okta.reset_mfa", 460, failure=0.015),
        _tool("okta.assign_app", 530, failure=0.02),
        _tool("intune.get_device", 610, sigma=0.6, failure=0.02),
        _tool("netops.check_vpn_status", 900, sigma=0.7, failure=0.03),
        _tool("servicenow.create_ticket", 720, sigma=0.5, failure=0.015),
        _tool("kb.search_it", 170, sigma=0.4, kind="datastore"),
        # finance and compliance
        _tool("concur.get_expense_report", 560, sigma=0.5),
        _tool("policy.lookup_expense_rules", 200, sigma=0.4, kind="datastore"),
        _tool("policy.search", 210, sigma=0.4, kind="datastore"),
        _tool("sap.get_invoice", 780, sigma=0.6, failure=0.02),
        _tool("sap.check_vendor", 690, sigma=0.6, failure=0.02),
        _tool("sap.approve_invoice", 950, sigma=0.5, failure=0.02),
        _tool("sanctions.screen_vendor", 1300, sigma=0.7, failure=0.03),
        # member services
        _tool("crm.get_account", 260),
        _tool("crm.update_contact", 380, failure=0.015),
        _tool("billing.get_balance", 300),
        _tool("billing.get_invoice", 340),
        _tool("billing.open_dispute", 620, failure=0.02),
        _tool("billing.create_payment_plan", 700, failure=0.02),
        _tool("retention.get_offers", 280),
        _tool("kb.search_member_faq", 160, sigma=0.4, kind="datastore"),
    )
}

TOOLS: Final[Mapping[str, ToolSpec]] = MappingProxyType(_TOOLS)

_SHORT: Final = Mix.of([(1, 0.55), (2, 0.3), (3, 0.15)])
_MEDIUM: Final = Mix.of([(1, 0.35), (2, 0.4), (3, 0.2), (4, 0.05)])
_LONG: Final = Mix.of([(2, 0.4), (3, 0.35), (4, 0.25)])


def _models(*pairs: tuple[str, float]) -> Mix[ModelSpec]:
    return Mix.of((_MODELS[name], w) for name, w in pairs)


def _tools_for(intents: Mix[IntentSpec], extra: Sequence[str] = ()) -> dict[str, ToolSpec]:
    names = {t for i in intents.items for t in i.tools} | set(extra)
    return {n: _TOOLS[n] for n in sorted(names)}


def _pii(rate: float) -> PolicySpec:
    return PolicySpec("pii-output", "output", "high", rate, block_share=0.35)


def _allowlist(rate: float) -> PolicySpec:
    return PolicySpec("tool-allowlist", "tool", "critical", rate, block_share=0.9)


def _hr() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("payslip", ("workday.get_payslip",), _SHORT), 0.34),
        (IntentSpec("leave_request",
                    ("workday.get_leave_balance", "workday.request_leave"), _MEDIUM), 0.26),
        (IntentSpec("benefits", ("benefits.search_plans", "kb.search_hr_policies"), _MEDIUM,
                    escalation_factor=1.4), 0.2),
        (IntentSpec("tax_forms", ("workday.get_tax_documents",), _SHORT), 0.08),
        (IntentSpec("policy_question", ("kb.search_hr_policies",), _SHORT), 0.12),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="2.3.0",
        prompt_id="hr-main",
        prompt_version="v7",
        models=_models(("gpt-4o-mini", 0.6), ("gpt-4o", 0.25), ("claude-3-5-haiku", 0.15)),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            PolicySpec("prompt-guard", "input", "high", 0.004, block_share=0.6),
            _allowlist(0.002),
            _pii(0.02),
            PolicySpec(
                "hr-confidentiality",
                "output",
                "medium",
                0.012,
                block_share=0.25,
                latency_ms=LogNormal(350.0, 0.4),
                sample_rate=0.4,
            ),
        ),
        channels=Mix.of([("teams", 0.5), ("slack", 0.3), ("web", 0.2)]),
        user_segments=Mix.of([("employee", 0.8), ("manager", 0.15), ("contractor", 0.05)]),
        escalation_targets=Mix.of(
            [("hr-service-desk", 0.6), ("payroll-team", 0.25), ("hr-benefits-team", 0.15)]
        ),
        escalation_rate=0.10,
        abandon_rate=0.06,
        satisfaction=0.88,
    )


def _it() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("password_reset", ("okta.get_user", "okta.reset_password"), _SHORT), 0.32),
        (IntentSpec("vpn_issue", ("kb.search_it", "netops.check_vpn_status"), _MEDIUM,
                    escalation_factor=1.5), 0.2),
        (IntentSpec("laptop_issue", ("intune.get_device", "servicenow.create_ticket"), _MEDIUM,
                    escalation_factor=1.8), 0.18),
        (IntentSpec("software_access", ("okta.assign_app", "servicenow.create_ticket"), _MEDIUM),
         0.18),
        (IntentSpec("mfa_reset", ("okta.get_user", "okta.reset_mfa"), _SHORT), 0.12),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="1.0.4",
        prompt_id="it-triage",
        prompt_version="v12",
        models=_models(
            ("gpt-4o-mini", 0.45),
            ("claude-3-5-haiku", 0.25),
            ("claude-3-5-sonnet", 0.2),
            ("gemini-1.5-flash", 0.1),
        ),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            PolicySpec("prompt-guard", "input", "high", 0.008, block_share=0.6),
            _allowlist(0.004),
            PolicySpec(
                "privileged-action-approval",
                "tool",
                "high",
                0.02,
                block_share=0.5,
                tools=("okta.reset_password", "okta.reset_mfa", "okta.assign_app"),
            ),
            _pii(0.01),
        ),
        channels=Mix.of([("slack", 0.45), ("teams", 0.35), ("web", 0.15), ("email", 0.05)]),
        user_segments=Mix.of([("employee", 0.85), ("contractor", 0.1), ("executive", 0.05)]),
        escalation_targets=Mix.of(
            [("it-helpdesk-l1", 0.6), ("it-helpdesk-l2", 0.3), ("security-operations", 0.1)]
        ),
        escalation_rate=0.14,
        abandon_rate=0.07,
        security_rate=0.015,
        satisfaction=0.82,
    )


def _finance() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("expense_check",
                    ("concur.get_expense_report", "policy.lookup_expense_rules"), _MEDIUM), 0.38),
        (IntentSpec("invoice_approval",
                    ("sap.get_invoice", "sap.check_vendor", "sap.approve_invoice"), _LONG,
                    escalation_factor=1.6), 0.27),
        (IntentSpec("policy_lookup", ("policy.search",), _SHORT), 0.22),
        (IntentSpec("vendor_due_diligence", ("sanctions.screen_vendor", "sap.check_vendor"),
                    _MEDIUM, escalation_factor=2.0), 0.13),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="0.9.2",
        prompt_id="fin-compliance",
        prompt_version="v3",
        models=_models(
            ("gpt-4o", 0.4), ("claude-3-5-sonnet", 0.35), ("gpt-4o-mini", 0.15), ("o3-mini", 0.1)
        ),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            _allowlist(0.003),
            PolicySpec(
                "segregation-of-duties",
                "tool",
                "high",
                0.03,
                block_share=0.7,
                tools=("sap.approve_invoice",),
            ),
            PolicySpec(
                "approval-limit",
                "tool",
                "critical",
                0.02,
                block_share=0.95,
                tools=("sap.approve_invoice",),
            ),
            PolicySpec(
                "financial-advice",
                "output",
                "medium",
                0.015,
                block_share=0.3,
                latency_ms=LogNormal(380.0, 0.4),
                sample_rate=0.6,
            ),
            _pii(0.01),
        ),
        channels=Mix.of([("web", 0.5), ("teams", 0.4), ("email", 0.1)]),
        user_segments=Mix.of([("employee", 0.55), ("approver", 0.3), ("auditor", 0.15)]),
        escalation_targets=Mix.of(
            [("finance-controllers", 0.45), ("accounts-payable", 0.35), ("compliance-office", 0.2)]
        ),
        system_prompt_tokens=LogNormal(2400.0, 0.15),
        turn_input_tokens=LogNormal(260.0, 0.8),
        output_tokens=LogNormal(320.0, 0.5),
        think_time_s=LogNormal(14.0, 0.6),
        escalation_rate=0.16,
        abandon_rate=0.04,
        failure_rate=0.025,
        satisfaction=0.8,
        cost_reported_rate=0.25,
    )


def _member() -> AgentParameters:
    intents = Mix.of([
        (IntentSpec("balance_inquiry", ("crm.get_account", "billing.get_balance"), _SHORT), 0.32),
        (IntentSpec("billing_dispute", ("billing.get_invoice", "billing.open_dispute"), _MEDIUM,
                    escalation_factor=1.7), 0.2),
        (IntentSpec("update_details", ("crm.get_account", "crm.update_contact"), _SHORT), 0.18),
        (IntentSpec("cancel_membership", ("crm.get_account", "retention.get_offers"), _MEDIUM,
                    escalation_factor=1.5), 0.12),
        (IntentSpec("payment_plan", ("billing.get_balance", "billing.create_payment_plan"),
                    _MEDIUM), 0.1),
        (IntentSpec("faq", ("kb.search_member_faq",), _SHORT, escalation_factor=0.5), 0.08),
    ])  # fmt: skip
    return AgentParameters(
        agent_version="3.1.1",
        prompt_id="member-care",
        prompt_version="v21",
        models=_models(("gpt-4o-mini", 0.5), ("gemini-1.5-flash", 0.3), ("claude-3-5-haiku", 0.2)),
        intents=intents,
        tools=_tools_for(intents),
        policies=(
            PolicySpec("prompt-guard", "input", "high", 0.006, block_share=0.6),
            PolicySpec(
                "account-verification",
                "tool",
                "high",
                0.015,
                block_share=0.8,
                tools=("crm.update_contact", "billing.open_dispute", "billing.create_payment_plan"),
            ),
            _pii(0.015),
            PolicySpec(
                "financial-advice",
                "output",
                "medium",
                0.01,
                block_share=0.3,
                latency_ms=LogNormal(380.0, 0.4),
                sample_rate=0.3,
            ),
            PolicySpec(
                "tone-and-brand",
                "output",
                "low",
                0.02,
                block_share=0.05,
                latency_ms=LogNormal(300.0, 0.4),
                sample_rate=0.2,
            ),
        ),
        channels=Mix.of([("web", 0.45), ("mobile", 0.35), ("voice", 0.15), ("email", 0.05)]),
        user_segments=Mix.of([("standard", 0.7), ("premium", 0.22), ("new", 0.08)]),
        escalation_targets=Mix.of(
            [("member-care-l1", 0.55), ("billing-specialists", 0.3), ("retention-team", 0.15)]
        ),
        think_time_s=LogNormal(7.0, 0.6),
        escalation_rate=0.11,
        abandon_rate=0.1,
        security_rate=0.01,
        satisfaction=0.78,
    )


PROFILES: Final[Mapping[str, Callable[[], AgentParameters]]] = {
    "hr-assistant": _hr,
    "it-support": _it,
    "finance-compliance": _finance,
    "member-services": _member,
}


def _previous_version(version: str) -> str:
    major, minor, patch = (int(x) for x in version.split("."))
    return f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{max(minor - 1, 0)}.9"


def make_agents(count: int, seed: int = 0) -> list[Agent]:
    """``count`` agents cycling through the agent types: hr-assistant-1, it-support-1, ...

    The first agent of each type runs in prod on the current version; later ones are mostly
    prod too, with a few in staging or test, some on the previous version, and uneven
    traffic, as a real fleet is.
    """
    if count < 1:
        raise ValueError("a fleet needs at least one agent")
    rng = random.Random(f"{seed}/agents")
    agents: list[Agent] = []
    for n in range(count):
        agent_type = AGENT_TYPES[n % len(AGENT_TYPES)]
        index = n // len(AGENT_TYPES) + 1
        params = PROFILES[agent_type]()
        environment = "prod"
        if index > 1:
            environment = Mix.of([("prod", 0.75), ("staging", 0.15), ("test", 0.1)]).pick(rng)
            if rng.random() < 0.3:  # not yet upgraded: the previous release and its prompt
                params = replace(
                    params,
                    agent_version=_previous_version(params.agent_version),
                    prompt_version=f"v{int(params.prompt_version[1:]) - 1}",
                )
        weight = LogNormal(1.0, 0.35).sample(rng) * (1.0 if environment == "prod" else 0.15)
        agents.append(Agent(f"{agent_type}-{index}", agent_type, environment, weight, params))
    return agents


# --------------------------------------------------------------------------- sessions

_SECURITY: Final = Mix.of(
    [("prompt_injection", 0.6), ("jailbreak", 0.3), ("data_exfiltration", 0.1)]
)
_SEVERITY_UP: Final[dict[Severity, Severity]] = {
    "low": "medium", "medium": "high", "high": "critical", "critical": "critical",
}  # fmt: skip
_TOOL_ERRORS: Final = Mix.of([("ToolError", 0.5), ("HTTP503", 0.3), ("ToolAuthError", 0.2)])
_AGENT_ERRORS: Final = Mix.of([
    ("MaxIterationsExceeded", 0.35), ("ContextLengthExceeded", 0.25),
    ("OutputParseError", 0.25), ("UnhandledException", 0.15),
])  # fmt: skip
_ESCALATION_REASONS: Final = Mix.of([
    ("user asked for a human", 0.4), ("low confidence", 0.25), ("out of scope", 0.15),
    ("sensitive case", 0.12), ("approval required", 0.08),
])  # fmt: skip
_RATE_LIMIT_MS: Final = LogNormal(120.0, 0.5)

Step = tuple[float, Event]
Steps = Generator[Step, None, T]


class _Session:
    """One conversation, written as a generator of (ts, event) in time order.

    The generator is lazy: a step's randomness is drawn when the previous event leaves the
    fleet's queue, and each turn reads the parameters in force when it starts. A session
    drawn into a canary stays on it for as long as the canary runs.
    """

    __slots__ = (
        "agent", "base", "canary", "ctx_tokens", "events", "fleet", "intent", "prompt", "rng",
    )  # fmt: skip

    def __init__(self, fleet: Fleet, agent: Agent, session_id: str, t0: float) -> None:
        rng = fleet.rng
        p = agent.parameters_at(t0)
        # Drawn only when a canary runs, so that fleets without one keep their sequence.
        self.canary = p.canary is not None and rng.random() < p.canary_share
        if self.canary and p.canary is not None:
            p = p.canary
        self.fleet = fleet
        self.agent = agent
        self.rng = rng
        self.events = 0
        self.ctx_tokens = 0
        self.intent = p.intents.pick(rng)
        # A session keeps the prompt it started with, as deployments do.
        self.prompt = (p.prompt_id, p.prompt_version)
        self.base: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "agent_id": agent.agent_id,
            "session_id": session_id,
            "agent_version": p.agent_version,
            "environment": agent.environment,
            "trace_id": f"{rng.getrandbits(128):032x}",
            "parent_span_id": f"{rng.getrandbits(64):016x}",
        }

    def _at(self, ts: float) -> AgentParameters:
        """The parameters this session runs on at ``ts``: the canary's, if it is on one."""
        p = self.agent.parameters_at(ts)
        return p.canary if self.canary and p.canary is not None else p

    def _ev(self, cls: Callable[..., Event], ts: float, **fields: Any) -> Step:
        self.events += 1
        event = cls(
            **self.base,
            **fields,
            event_id=self.fleet.next_event_id(),
            ts=dt.datetime.fromtimestamp(ts, dt.UTC),
            span_id=f"{self.rng.getrandbits(64):016x}",
        )
        return ts, event

    def run(self, t: float) -> Iterator[Step]:
        rng = self.rng
        intent = self.intent
        p = self._at(t)
        self.events += 1
        base = dict(self.base)
        root = base.pop("parent_span_id")
        yield (
            t,
            SessionStart(
                **base,
                event_id=self.fleet.next_event_id(),
                ts=dt.datetime.fromtimestamp(t, dt.UTC),
                span_id=root,
                channel=p.channels.pick(rng),
                user_segment=p.user_segments.pick(rng),
                intent=intent.name,
            ),
        )
        self.ctx_tokens = int(p.system_prompt_tokens.sample(rng, p.token_scale))

        # The outcome is mostly decided by who comes and why; guardrails, attacks and
        # failures on the way can still turn it.
        u = rng.random()
        esc = p.escalation_rate * intent.escalation_factor
        outcome: Resolution = "resolved"
        if u < esc:
            outcome = "escalated"
        elif u < esc + p.abandon_rate:
            outcome = "abandoned"
        elif u < esc + p.abandon_rate + p.failure_rate:
            outcome = "failed"
        turns = intent.turns.pick(rng)
        decisive = rng.randint(1, turns)
        reason: str | None = None

        for turn in range(1, turns + 1):
            p = self._at(t)
            t += p.think_time_s.sample(rng) if turn > 1 else rng.uniform(0.05, 0.4)
            self.ctx_tokens += int(p.turn_input_tokens.sample(rng, p.token_scale))

            t, verdict = yield from self._policies(t, p, "input")
            if turn == 1 and rng.random() < p.security_rate:
                t += rng.uniform(0.002, 0.02)
                blocked = rng.random() < 0.7
                category = _SECURITY.pick(rng)
                severity: Severity = "high" if blocked else "medium"
                yield self._ev(
                    Security,
                    t,
                    category=category,
                    action="blocked" if blocked else "flagged",
                    severity="critical" if category == "data_exfiltration" else severity,
                )
                if blocked:
                    verdict = "blocked"
            if verdict == "blocked":
                roll = rng.random()
                if roll < 0.3:
                    outcome, decisive = "failed", turn
                elif roll < 0.55:
                    outcome, decisive, reason = "escalated", turn, "policy blocked request"
                t, ok = yield from self._llm(t, p, refusal=True)  # the agent declines
                if not ok or (turn == decisive and outcome != "resolved"):
                    break
                continue

            failed = False
            tools = (
                intent.tools
                if turn == 1
                else tuple(n for n in intent.tools if rng.random() < p.followup_tool_rate)
            )
            if tools:
                t, ok = yield from self._llm(t, p, plan=True)
                if not ok:
                    outcome, decisive = "failed", turn
                    break
                for name in tools:
                    spec = p.tools.get(name) or _TOOLS[name]
                    if spec.tool_type == "function":
                        t, verdict = yield from self._policies(t, p, "tool", name)
                        if verdict == "blocked":
                            failed = True
                            break
                    t, ok = yield from self._tool(t, spec, p.token_scale)
                    if not ok:
                        failed = True
                        break
            if failed and outcome != "failed":
                outcome, decisive = ("escalated", turn) if rng.random() < 0.6 else ("failed", turn)
                reason = "tool failure" if outcome == "escalated" else None
            t, ok = yield from self._llm(t, p)
            if not ok:
                outcome, decisive = "failed", turn
                break
            t, verdict = yield from self._policies(t, p, "output")
            if verdict == "blocked":  # regenerate once, under the guardrail's feedback
                t, ok = yield from self._llm(t, p)
                if ok:
                    t, verdict = yield from self._policies(t, p, "output")
                if not ok or verdict == "blocked":
                    outcome, decisive, reason = "escalated", turn, "policy blocked response"
            if turn == decisive and outcome != "resolved":
                break

        p = self._at(t)
        if outcome == "failed":
            t += rng.uniform(0.01, 0.5)
            yield self._ev(Error, t, status="error", error_type=_AGENT_ERRORS.pick(rng))
            t += rng.uniform(0.01, 0.2)
        elif outcome == "escalated":
            t += rng.uniform(0.2, 1.5)
            target = p.escalation_targets.pick(rng)
            if reason == "policy blocked request" and rng.random() < 0.5:
                target = "security-operations"
            yield self._ev(
                Escalation,
                t,
                reason=reason or _ESCALATION_REASONS.pick(rng),
                target=target,
                attributes={"ticket": f"HND-{rng.randint(100000, 999999)}"},
            )
            if rng.random() < p.feedback_rate * 0.5:
                t += p.think_time_s.sample(rng, 0.5)
                yield self._feedback(t, 0.45)
            t += rng.uniform(0.5, 3.0)
        elif outcome == "abandoned":
            t += p.think_time_s.sample(rng, 4.0)  # closed by the inactivity timeout
        else:
            if rng.random() < p.feedback_rate:
                t += p.think_time_s.sample(rng, 0.5)
                yield self._feedback(t, p.satisfaction)
            t += rng.uniform(0.3, 3.0)
        yield self._ev(SessionEnd, t, resolution=outcome, intent=intent.name)

    def _feedback(self, t: float, satisfaction: float) -> Step:
        good = self.rng.random() < satisfaction
        label = "thumbs_up" if good else "thumbs_down"
        return self._ev(Feedback, t, score=1.0 if good else 0.0, label=label)

    def _policies(
        self, t: float, p: AgentParameters, stage: PolicyStage, tool: str = ""
    ) -> Steps[tuple[float, str]]:
        """Run the stage's guardrails in order; a block stops the rest. Returns (t, worst)."""
        rng = self.rng
        worst = "pass"
        for pol in p.policies:
            if pol.stage != stage or (tool and pol.tools and tool not in pol.tools):
                continue
            if pol.sample_rate < 1.0 and rng.random() >= pol.sample_rate:
                continue
            latency = pol.latency_ms.sample(rng)
            t += latency / 1000.0
            severity = pol.severity
            outcome = "pass"
            if rng.random() < pol.violation_rate * p.violation_scale:
                outcome = "blocked" if rng.random() < pol.block_share else "violation"
                if rng.random() < 0.15:
                    severity = _SEVERITY_UP[severity]
            yield self._ev(
                PolicyCheck,
                t,
                policy_id=pol.policy_id,
                outcome=outcome,
                severity=severity,
                latency_ms=round(latency, 3),
            )
            if outcome == "blocked":
                return t, "blocked"
            if outcome == "violation":
                worst = "violation"
        return t, worst

    def _llm(
        self, t: float, p: AgentParameters, *, plan: bool = False, refusal: bool = False
    ) -> Steps[tuple[float, bool]]:
        """One model call, retried through rate limits and one timeout. Returns (t, ok)."""
        rng = self.rng
        model = p.models.pick(rng)
        prompt_id, prompt_version = self.prompt
        for attempt in range(1, 4):
            t += rng.uniform(0.005, 0.03)
            roll = rng.random()
            if roll < p.llm_rate_limit_rate + p.llm_timeout_rate:
                timeout = roll >= p.llm_rate_limit_rate
                latency = p.llm_timeout_ms if timeout else _RATE_LIMIT_MS.sample(rng)
                t += latency / 1000.0
                yield self._ev(
                    LlmCall,
                    t,
                    model=model.name,
                    provider=model.provider,
                    prompt_id=prompt_id,
                    prompt_version=prompt_version,
                    input_tokens=self.ctx_tokens if timeout else 0,
                    output_tokens=0,
                    latency_ms=round(latency, 3),
                    status="error",
                    error_type="Timeout" if timeout else "RateLimitError",
                    attributes={"attempt": attempt},
                )
                if timeout and attempt >= 2:
                    return t, False
                t += rng.uniform(0.2, 1.0) * 2**attempt  # client backoff
                continue

            input_tokens = self.ctx_tokens
            if plan:
                output_tokens = p.planning_output_tokens.sample(rng, p.token_scale)
            elif refusal:
                output_tokens = p.planning_output_tokens.sample(rng, 1.5)
            else:
                output_tokens = p.output_tokens.sample(rng, p.token_scale)
            out = max(1, int(output_tokens))
            reasoning = int(model.reasoning_tokens.sample(rng)) if model.reasoning_tokens else None
            per_token = model.ms_per_output_token * model.latency_scale
            ttft = model.ttft_ms.sample(rng, model.latency_scale) * (1.0 + input_tokens / 40_000)
            ttft += (reasoning or 0) * per_token
            latency = ttft + out * per_token * math.exp(0.15 * rng.gauss(0.0, 1.0))
            cache = None
            if input_tokens > 1024 and rng.random() < p.cache_hit_rate:
                cache = int(input_tokens * rng.uniform(0.5, 0.9)) // 128 * 128
            finish = "tool_calls" if plan else "stop"
            if not plan and rng.random() < 0.004:
                finish = "length"
            cost = None
            if rng.random() < p.cost_reported_rate:
                billed_out = out + (reasoning or 0)
                cost = round(
                    (
                        (input_tokens - (cache or 0)) * model.usd_per_mtok_input
                        + (cache or 0) * model.usd_per_mtok_cache_read
                        + billed_out * model.usd_per_mtok_output
                    )
                    / 1e6,
                    8,
                )
            t += latency / 1000.0
            yield self._ev(
                LlmCall,
                t,
                model=model.name,
                provider=model.provider,
                prompt_id=prompt_id,
                prompt_version=prompt_version,
                input_tokens=input_tokens,
                output_tokens=out,
                cache_read_tokens=cache,
                reasoning_tokens=reasoning,
                cost_usd=cost,
                finish_reason=finish,
                time_to_first_token_ms=None if plan else round(ttft, 3),
                latency_ms=round(latency, 3),
            )
            self.ctx_tokens += out
            return t, True
        return t, False

    def _tool(self, t: float, spec: ToolSpec, token_scale: float) -> Steps[tuple[float, bool]]:
        """One tool call, retried once most of the time. Returns (t, ok)."""
        rng = self.rng
        for attempt in (1, 2):
            t += rng.uniform(0.002, 0.015)
            if rng.random() < spec.failure_rate:
                if rng.random() < spec.timeout_share:
                    latency, error = spec.timeout_ms, "ToolTimeout"
                else:
                    latency = spec.latency_ms.sample(rng, spec.latency_scale * 0.6)
                    error = _TOOL_ERRORS.pick(rng)
                t += latency / 1000.0
                yield self._ev(
                    ToolCall,
                    t,
                    tool_name=spec.name,
                    tool_type=spec.tool_type,
                    latency_ms=round(latency, 3),
                    status="error",
                    error_type=error,
                    attributes={"attempt": attempt},
                )
                if rng.random() < 0.4:  # not retryable, or the agent gives up
                    break
                continue
            latency = spec.latency_ms.sample(rng, spec.latency_scale)
            t += latency / 1000.0
            yield self._ev(
                ToolCall,
                t,
                tool_name=spec.name,
                tool_type=spec.tool_type,
                latency_ms=round(latency, 3),
            )
            self.ctx_tokens += int(spec.result_tokens.sample(rng, token_scale))
            return t, True
        return t, False


# --------------------------------------------------------------------------- the fleet

_Entry = tuple[float, int, "_Session | None", "Iterator[Step] | None", "Event | None"]


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
        session = _Session(self, agent, session_id, ts)
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

    def _end(self, session: _Session) -> None:
        self.sessions_ended += 1
        self._mean_events += (session.events - self._mean_events) / min(
            self.sessions_ended + 20, 500
        )
