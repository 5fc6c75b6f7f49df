"""The API an agent calls to report what it does, built so that reporting cannot hurt it.

Events are the contract's own Structs, checked against the contract before they leave,
so the processor never has to dead-letter what this SDK produced. Failures of the SDK
itself are logged and counted, never raised; exceptions from the agent's own code pass
through the context managers unchanged, after being recorded.

A :class:`Tracer` is one agent's handle: it stamps, checks and sends events. Its
:class:`~agentwatch.ingest.sdk.session.Session` records one conversation, whose
model and tool calls are timed by :mod:`agentwatch.ingest.sdk.calls`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import msgspec

from agentwatch.clock import Clock, utc_now
from agentwatch.ingest.contract.events import SCHEMA_VERSION, AnyEvent, Event
from agentwatch.ingest.contract.wire import DEFAULT_TOPIC
from agentwatch.ingest.sdk.calls import CallInfo, Guard
from agentwatch.ingest.sdk.emitter import Emitter, EmitterStats, KafkaTransport, RateLimiter
from agentwatch.ingest.sdk.session import Session
from agentwatch.kafka import KafkaSecurity

log = logging.getLogger(__name__)

_DECODER: Final = msgspec.json.Decoder(AnyEvent)
_ENCODER: Final = msgspec.json.Encoder(enc_hook=str)  # odd attribute values become strings


@dataclass(frozen=True)
class TracerStats:
    invalid: int  # events refused because they broke the contract (an agent-side bug: see logs)
    internal_errors: int  # SDK failures swallowed so the agent keeps running
    emitter: EmitterStats


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
    Its underscored methods are the SDK's own plumbing, shared with sessions and calls.
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
