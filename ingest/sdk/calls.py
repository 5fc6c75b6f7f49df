"""The model and tool calls of a session: timed, their errors captured, guarded first."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from agentwatch.ingest.contract.events import Event, LlmCall, ToolCall

if TYPE_CHECKING:
    from agentwatch.ingest.sdk.session import Session


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


def ms_between(start: dt.datetime, end: dt.datetime) -> float:
    # A wall clock can step backwards; the contract wants durations >= 0.
    return max(0.0, round((end - start).total_seconds() * 1000, 3))


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
        latency = ms_between(self.started_at or ts, ts)
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
            self.time_to_first_token_ms = ms_between(self.started_at, self.session.tracer._now())

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
