"""One simulated conversation, as a generator of timestamped events."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

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
from agentwatch.ingest.sim.parameters import (
    Agent,
    AgentParameters,
    LogNormal,
    Mix,
    PolicyStage,
    ToolSpec,
)
from agentwatch.ingest.sim.profiles import TOOLS

if TYPE_CHECKING:
    from agentwatch.ingest.sim.fleet import Fleet

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

T = TypeVar("T")

Step = tuple[float, Event]
Steps = Generator[Step, None, T]


class Session:
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
                    spec = p.tools.get(name) or TOOLS[name]
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
