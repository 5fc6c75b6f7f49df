"""The API an agent calls to report what it does, built so that reporting cannot hurt it.

Events are the contract's own Structs, checked against the contract before they leave,
so the processor never has to dead-letter what this SDK produced. Failures of the SDK
itself are logged and counted, never raised; exceptions from the agent's own code pass
through the context managers unchanged, after being recorded.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self, get_args

import msgspec

from agentwatch.clock import Clock, utc_now
from agentwatch.ingest.contract.events import (
    DEFAULT_TOPIC,
    SCHEMA_VERSION,
    AnyEvent,
    Error,
    Escalation,
    Event,
    Feedback,
    LlmCall,
    PolicyCheck,
    PolicyOutcome,
    Resolution,
    Security,
    SecurityAction,
    SessionEnd,
    SessionStart,
    Severity,
    ToolCall,
)
from agentwatch.ingest.sdk.emitter import Emitter, EmitterStats, KafkaTransport, RateLimiter
from agentwatch.kafka import KafkaSecurity

log = logging.getLogger(__name__)


_RESOLUTIONS: Final = frozenset(get_args(Resolution))
_DECODER: Final = msgspec.json.Decoder(AnyEvent)
_ENCODER: Final = msgspec.json.Encoder(enc_hook=str)  # odd attribute values become strings


@dataclass(frozen=True)
class CallInfo:
    """What a guard is told about the call the agent is about to make."""

    kind: Literal["llm_call", "tool_call"]
    agent_id: str
    session_id: str
    name: str  # the model or the tool


Guard = Callable[[CallInfo], None]
"""Checked before every llm and tool call; raising stops the call and reaches the agent.

This is how a circuit breaker halts an agent, so its exceptions are the one thing the
SDK deliberately lets through.
"""


@dataclass(frozen=True)
class TracerStats:
    invalid: int  # events refused because they broke the contract (an agent-side bug: see logs)
    internal_errors: int  # SDK failures swallowed so the agent keeps running
    emitter: EmitterStats


def _ms_between(start: dt.datetime, end: dt.datetime) -> float:
    # A wall clock can step backwards; the contract wants durations >= 0.
    return max(0.0, round((end - start).total_seconds() * 1000, 3))


def _encode(event: Event) -> bytes:
    """JSON with ``ts`` written as ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    msgspec writes microseconds, or no fraction at all on a whole second; fixed-width
    milliseconds sort as text and read the same everywhere. ``ts`` follows only ``kind``,
    ``schema_version`` and the SDK's own hex ``event_id``, so its first match is the field.
    """
    raw = _ENCODER.encode(event)
    ts = event.ts
    fixed = f'"ts":"{ts:%Y-%m-%dT%H:%M:%S}.{ts.microsecond // 1000:03d}Z"'.encode()
    return raw.replace(b'"ts":' + _ENCODER.encode(ts), fixed, 1)


class Tracer:
    """Builds events for one agent and hands them to an :class:`Emitter`.

    Thread-safe: sessions and calls may run concurrently in threads or asyncio tasks.
    """

    def __init__(
        self,
        agent_id: str,
        agent_version: str | None = None,
        environment: str | None = "prod",
        *,
        emitter: Emitter,
        clock: Clock | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.agent_version = agent_version
        self.environment = environment
        self.emitter = emitter
        self.guard = guard
        self._clock: Clock = clock or utc_now
        self._lock = threading.Lock()
        self._invalid = 0
        self._internal_errors = 0
        self._invalid_log = RateLimiter(60.0)
        self._error_log = RateLimiter(60.0)

    @classmethod
    def to_kafka(
        cls,
        bootstrap: str | Sequence[str],
        topic: str = DEFAULT_TOPIC,
        *,
        agent_id: str,
        agent_version: str | None = None,
        environment: str | None = "prod",
        clock: Clock | None = None,
        guard: Guard | None = None,
        buffer_size: int = 10_000,
        max_batch: int = 500,
        linger_ms: float = 50.0,
        security: KafkaSecurity | None = None,
        **producer_options: Any,
    ) -> Tracer:
        """A tracer sending to Kafka; returns at once, even when the broker is unreachable.

        ``security`` (TLS, SASL) defaults to the ``AGENTWATCH_KAFKA_*`` environment.
        """
        transport = KafkaTransport(bootstrap, topic, security=security, **producer_options)
        emitter = Emitter(
            transport, buffer_size=buffer_size, max_batch=max_batch, linger_ms=linger_ms
        )
        return cls(
            agent_id,
            agent_version,
            environment,
            emitter=emitter,
            clock=clock,
            guard=guard,
        )

    def session(
        self,
        session_id: str | None = None,
        *,
        channel: str | None = None,
        intent: str | None = None,
        user_segment: str | None = None,
        trace_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> Session:
        """A session (one conversation or task); use it as a context manager.

        ``session_id`` defaults to a new random id. ``trace_id`` becomes the default trace
        id of every event in the session.
        """
        return Session(
            self,
            session_id or uuid.uuid4().hex,
            channel=channel,
            intent=intent,
            user_segment=user_segment,
            trace_id=trace_id,
            attributes=attributes,
        )

    def stats(self) -> TracerStats:
        with self._lock:
            invalid, internal = self._invalid, self._internal_errors
        return TracerStats(invalid=invalid, internal_errors=internal, emitter=self.emitter.stats())

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything traced so far is sent (or dropped); False on timeout."""
        return self.emitter.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Send what is buffered and stop; returns whether all of it went out in time."""
        return self.emitter.close(timeout)

    def __enter__(self) -> Tracer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals shared by sessions and calls -----------------------------------------

    def _now(self) -> dt.datetime:
        """The injected clock's time in UTC, truncated to milliseconds; never raises."""
        try:
            now = self._clock()
            if now.tzinfo is None:
                now = now.replace(tzinfo=dt.UTC)
            now = now.astimezone(dt.UTC)
        except Exception:
            self._internal_error("the tracer's clock failed; using the system clock")
            now = utc_now()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def _common(
        self,
        session_id: str,
        ts: dt.datetime,
        *,
        trace_id: str | None,
        span_id: str | None,
        parent_span_id: str | None,
        attributes: dict[str, Any] | None,
        latency_ms: float | None = None,
        error_type: str | None = None,
    ) -> dict[str, Any]:
        """The fields every event carries."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": uuid.uuid4().hex,
            "ts": ts,
            "agent_id": self.agent_id,
            "session_id": session_id,
            "agent_version": self.agent_version,
            "environment": self.environment,
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": parent_span_id,
            "latency_ms": latency_ms,
            "status": None if error_type is None else "error",
            "error_type": error_type,
            "attributes": attributes or None,
        }

    def _send(self, build: Callable[[], Event]) -> None:
        """Build, encode, check and emit one event; every failure is swallowed and counted."""
        try:
            event = build()
            value = _encode(event)
            _DECODER.decode(value)
        except msgspec.ValidationError as exc:
            with self._lock:
                self._invalid += 1
            if self._invalid_log.ready():
                log.warning(
                    "agentwatch tracer: dropped an event that breaks the contract: %s",
                    exc,
                    extra={"agent_id": self.agent_id},
                )
            return
        except Exception:
            self._internal_error("agentwatch tracer: could not build an event")
            return
        try:
            self.emitter.emit(event.session_id.encode(), value)
        except Exception:
            self._internal_error("agentwatch tracer: the emitter failed")

    def _internal_error(self, message: str) -> None:
        with self._lock:
            self._internal_errors += 1
        if self._error_log.ready():
            log.warning(message, exc_info=True, extra={"agent_id": self.agent_id})

    def _check_guard(self, info: CallInfo) -> None:
        guard = self.guard
        if guard is not None:
            guard(info)


class Session:
    """One conversation or task. Emits ``session_start`` on enter and ``session_end`` on exit.

    The end's resolution is what :meth:`resolve` set, else ``resolved``. An exception
    escaping the block makes it ``failed`` (the agent broke, whatever it had decided); a
    cancellation or interrupt (``KeyboardInterrupt``, ``asyncio.CancelledError``, …)
    makes it ``abandoned`` unless a resolution was set.
    """

    def __init__(
        self,
        tracer: Tracer,
        session_id: str,
        *,
        channel: str | None,
        intent: str | None,
        user_segment: str | None,
        trace_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        self.tracer = tracer
        self.session_id = session_id
        self.channel = channel
        self.intent = intent  # may be refined during the session; session_end reports it
        self.user_segment = user_segment
        self.trace_id = trace_id
        self.attributes = attributes
        self.resolution: Resolution | None = None
        self._started_at: dt.datetime | None = None
        self._ended = False

    def start(self) -> Session:
        """Emit ``session_start`` (once); for sessions that do not fit a ``with`` block."""
        if self._started_at is not None:
            return self
        t = self.tracer
        ts = self._started_at = t._now()
        t._send(
            lambda: SessionStart(
                **t._common(
                    self.session_id,
                    ts,
                    trace_id=self.trace_id,
                    span_id=None,
                    parent_span_id=None,
                    attributes=self.attributes,
                ),
                channel=self.channel,
                user_segment=self.user_segment,
                intent=self.intent,
            )
        )
        return self

    def resolve(self, resolution: Resolution) -> None:
        """Set how the session ends: resolved, escalated, abandoned or failed."""
        if resolution not in _RESOLUTIONS:
            log.warning(
                "agentwatch tracer: ignored unknown resolution %r (expected one of %s)",
                resolution,
                ", ".join(sorted(_RESOLUTIONS)),
            )
            return
        self.resolution = resolution

    def end(self, resolution: Resolution | None = None, *, error_type: str | None = None) -> None:
        """Emit ``session_end`` (once); ``error_type`` marks it as ended by an error."""
        if self._ended:
            return
        self._ended = True
        if resolution is not None:
            self.resolve(resolution)
        t = self.tracer
        ts = t._now()
        latency = None if self._started_at is None else _ms_between(self._started_at, ts)
        final: Resolution = self.resolution or "resolved"
        t._send(
            lambda: SessionEnd(
                **t._common(
                    self.session_id,
                    ts,
                    trace_id=self.trace_id,
                    span_id=None,
                    parent_span_id=None,
                    attributes=self.attributes,
                    latency_ms=latency,
                    error_type=error_type,
                ),
                resolution=final,
                intent=self.intent,
            )
        )

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end()
        elif issubclass(exc_type, Exception):
            self.end("failed", error_type=exc_type.__name__)
        else:
            self.end(self.resolution or "abandoned", error_type=exc_type.__name__)

    # -- steps of the session -----------------------------------------------------------

    def llm_call(
        self,
        model: str,
        *,
        provider: str | None = None,
        prompt_id: str | None = None,
        prompt_version: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> LlmCallSpan:
        """Time one model call; set its usage on the returned object inside the block."""
        return LlmCallSpan(
            self,
            model,
            provider=provider,
            prompt_id=prompt_id,
            prompt_version=prompt_version,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_span_id,
            attributes=attributes,
        )

    def tool_call(
        self,
        tool_name: str,
        tool_type: str | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> ToolCallSpan:
        """Time one tool call."""
        return ToolCallSpan(
            self,
            tool_name,
            tool_type,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_span_id,
            attributes=attributes,
        )

    def policy_check(
        self,
        policy_id: str,
        outcome: PolicyOutcome,
        severity: Severity | None = None,
        *,
        latency_ms: float | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        ctx = self._context(trace_id, span_id, parent_span_id, attributes)
        ts = self.tracer._now()
        self.tracer._send(
            lambda: PolicyCheck(
                **self.tracer._common(self.session_id, ts, latency_ms=latency_ms, **ctx),
                policy_id=policy_id,
                outcome=outcome,
                severity=severity,
            )
        )

    def escalate(
        self,
        reason: str | None = None,
        target: str | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Record a hand-off to a human; the session no longer counts as contained.

        Also makes ``escalated`` the session's resolution unless one was set.
        """
        if self.resolution is None:
            self.resolution = "escalated"
        ctx = self._context(trace_id, span_id, parent_span_id, attributes)
        ts = self.tracer._now()
        self.tracer._send(
            lambda: Escalation(
                **self.tracer._common(self.session_id, ts, **ctx), reason=reason, target=target
            )
        )

    def feedback(
        self,
        score: float | None = None,
        label: str | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        ctx = self._context(trace_id, span_id, parent_span_id, attributes)
        ts = self.tracer._now()
        self.tracer._send(
            lambda: Feedback(
                **self.tracer._common(self.session_id, ts, **ctx), score=score, label=label
            )
        )

    def error(
        self,
        error_type: str | BaseException,
        *,
        latency_ms: float | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Record an error the agent handled; an exception stands for its class name."""
        name = type(error_type).__name__ if isinstance(error_type, BaseException) else error_type
        ctx = self._context(trace_id, span_id, parent_span_id, attributes)
        ts = self.tracer._now()
        self.tracer._send(
            lambda: Error(
                **self.tracer._common(
                    self.session_id, ts, latency_ms=latency_ms, error_type=name, **ctx
                )
            )
        )

    def security(
        self,
        category: str,
        action: SecurityAction | None = None,
        severity: Severity | None = None,
        *,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        ctx = self._context(trace_id, span_id, parent_span_id, attributes)
        ts = self.tracer._now()
        self.tracer._send(
            lambda: Security(
                **self.tracer._common(self.session_id, ts, **ctx),
                category=category,
                action=action,
                severity=severity,
            )
        )

    def _context(
        self,
        trace_id: str | None,
        span_id: str | None,
        parent_span_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "trace_id": trace_id or self.trace_id,
            "span_id": span_id,
            "parent_span_id": parent_span_id,
            "attributes": attributes,
        }


class _CallSpan(abc.ABC):
    """Timing, error capture and the guard, shared by llm and tool calls."""

    _kind: Literal["llm_call", "tool_call"]

    def __init__(
        self,
        session: Session,
        *,
        trace_id: str | None,
        span_id: str | None,
        parent_span_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        self.session = session
        self.trace_id = trace_id or session.trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.error_type: str | None = None
        self.started_at: dt.datetime | None = None

    def fail(self, error_type: str | BaseException) -> None:
        """Mark the call failed without raising (e.g. the tool returned an error result)."""
        self.error_type = (
            type(error_type).__name__ if isinstance(error_type, BaseException) else error_type
        )

    def __enter__(self) -> Self:
        t = self.session.tracer
        t._check_guard(CallInfo(self._kind, t.agent_id, self.session.session_id, self._name()))
        self.started_at = t._now()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.error_type = exc_type.__name__
        t = self.session.tracer
        ts = t._now()
        latency = _ms_between(self.started_at or ts, ts)
        t._send(
            lambda: self._event(
                t._common(
                    self.session.session_id,
                    ts,
                    trace_id=self.trace_id,
                    span_id=self.span_id,
                    parent_span_id=self.parent_span_id,
                    attributes=self.attributes,
                    latency_ms=latency,
                    error_type=self.error_type,
                )
            )
        )

    @abc.abstractmethod
    def _name(self) -> str: ...

    @abc.abstractmethod
    def _event(self, common: dict[str, Any]) -> Event: ...


class LlmCallSpan(_CallSpan):
    """One model call; the event is emitted when the block ends, ``ts`` being that moment.

    Token counts default to 0, for calls that failed before any usage was known.
    """

    _kind = "llm_call"

    def __init__(
        self,
        session: Session,
        model: str,
        *,
        provider: str | None,
        prompt_id: str | None,
        prompt_version: str | None,
        trace_id: str | None,
        span_id: str | None,
        parent_span_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        super().__init__(
            session,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_span_id,
            attributes=attributes,
        )
        self.model = model  # may be replaced by the model the provider says answered
        self.provider = provider
        self.prompt_id = prompt_id
        self.prompt_version = prompt_version
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.cost_usd: float | None = None
        self.finish_reason: str | None = None
        self.time_to_first_token_ms: float | None = None

    def _name(self) -> str:
        return self.model

    def first_token(self) -> None:
        """Note that the first streamed token arrived now, for ``time_to_first_token_ms``."""
        if self.started_at is not None and self.time_to_first_token_ms is None:
            self.time_to_first_token_ms = _ms_between(self.started_at, self.session.tracer._now())

    def _event(self, common: dict[str, Any]) -> Event:
        return LlmCall(
            **common,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            provider=self.provider,
            prompt_id=self.prompt_id,
            prompt_version=self.prompt_version,
            cache_read_tokens=self.cache_read_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cost_usd=self.cost_usd,
            finish_reason=self.finish_reason,
            time_to_first_token_ms=self.time_to_first_token_ms,
        )


class ToolCallSpan(_CallSpan):
    """One tool call; the event is emitted when the block ends, ``ts`` being that moment."""

    _kind = "tool_call"

    def __init__(
        self,
        session: Session,
        tool_name: str,
        tool_type: str | None,
        *,
        trace_id: str | None,
        span_id: str | None,
        parent_span_id: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        super().__init__(
            session,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_span_id,
            attributes=attributes,
        )
        self.tool_name = tool_name
        self.tool_type = tool_type

    def _name(self) -> str:
        return self.tool_name

    def _event(self, common: dict[str, Any]) -> Event:
        return ToolCall(**common, tool_name=self.tool_name, tool_type=self.tool_type)
