"""One conversation or task of an agent, and the events of its steps."""

from __future__ import annotations

import datetime as dt
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, get_args

from agentwatch.ingest.contract.events import (
    Error,
    Escalation,
    Feedback,
    PolicyCheck,
    PolicyOutcome,
    Resolution,
    Security,
    SecurityAction,
    SessionEnd,
    SessionStart,
    Severity,
)
from agentwatch.ingest.sdk.calls import LlmCallSpan, ToolCallSpan, ms_between

if TYPE_CHECKING:
    from agentwatch.ingest.sdk.tracer import Tracer

log = logging.getLogger(__name__)

_RESOLUTIONS: Final = frozenset(get_args(Resolution))


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
        latency = None if self._started_at is None else ms_between(self._started_at, ts)
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
