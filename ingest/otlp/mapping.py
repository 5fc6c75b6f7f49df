"""Spans in, contract events out: the one mapping both OTLP paths use.

Which attributes mean what is in ``conventions`` (a table per convention); this module
applies a table to the spans of one export request, trace by trace: ``traces`` tells
each span's role and the session and agent it belongs to, ``events`` makes its contract
events, and every event is checked against the contract before it leaves.

Nothing is lost silently: every span is counted with an outcome (``mapped``, ``skipped``
when the table understands it but the contract has nothing to record, ``unmapped``,
``rejected``), unmapped spans are sampled, and attributes are counted as kept, dropped
content, redacted content, or over the limit.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from agentwatch.ingest.contract.events import AnyEvent
from agentwatch.ingest.otlp.conventions import CONVENTIONS, detect
from agentwatch.ingest.otlp.events import MAX_ATTRIBUTE_CHARS, emit, timestamp
from agentwatch.ingest.otlp.redact import Redactor, redact_text
from agentwatch.ingest.otlp.spans import Span
from agentwatch.ingest.otlp.traces import (
    first_in_trace,
    named_agent,
    nearest_agent,
    span_context,
    span_role,
)

_VALIDATOR: Final = msgspec.json.Decoder(AnyEvent)
_BATCH_VALIDATOR: Final = msgspec.json.Decoder(list[AnyEvent])
_ENCODER: Final = msgspec.json.Encoder()


@dataclass(frozen=True)
class MappingConfig:
    keep_content: bool = False  # message content is dropped unless this is set
    max_content_chars: int = 4096
    redact: Redactor = redact_text
    escalation_tools: frozenset[str] = frozenset({"escalate_to_human", "handoff_to_human"})
    max_attributes: int = 32  # extra attributes copied into an event, beyond are counted
    samples_per_reason: int = 3  # unmapped spans sampled per reason and scope per request


@dataclass
class Mapped:
    """What one request became: events (JSON-ready) and the account of everything else."""

    events: list[dict[str, Any]] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)  # the events, JSON-encoded and checked
    spans: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # outcome, reason, scope
    attributes: Counter[tuple[str, str]] = field(default_factory=Counter)  # outcome, scope
    unmapped: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def encoded(self) -> list[tuple[bytes, bytes]]:
        """(key, value) per event: keyed by session id like the SDK."""
        return [
            (e["session_id"].encode(), v) for e, v in zip(self.events, self.values, strict=True)
        ]


def map_spans(spans: Iterable[Span], config: MappingConfig = MappingConfig()) -> Mapped:
    out = Mapped()
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    samples: Counter[tuple[str, str]] = Counter()
    produced: list[tuple[Span, str, int, int]] = []  # span, role, its events' range
    for trace in by_trace.values():
        _map_trace(trace, config, out, samples, produced)
    _check(out, produced)
    return out


def _check(out: Mapped, produced: list[tuple[Span, str, int, int]]) -> None:
    """Encode every event once and check the lot against the contract in one call.

    Only when the batch fails is each event checked alone, to reject the spans whose
    events break the contract (and only those).
    """
    values = [_ENCODER.encode(e) for e in out.events]
    try:
        _BATCH_VALIDATOR.decode(b"[" + b",".join(values) + b"]")
    except msgspec.ValidationError:
        pass
    else:
        out.values = values
        return
    events: list[dict[str, Any]] = []
    kept: list[bytes] = []
    for span, role, start, end in produced:
        problem = next(filter(None, (_invalid(v) for v in values[start:end])), None)
        if problem is None:
            events += out.events[start:end]
            kept += values[start:end]
            continue
        key = ("mapped", role, span.scope)
        out.spans[key] -= 1
        if not out.spans[key]:
            del out.spans[key]
        _reject(out, span, "invalid_event", f"span {span.name!r}: {problem}")
    out.events, out.values = events, kept


def _map_trace(
    trace: list[Span],
    config: MappingConfig,
    out: Mapped,
    samples: Counter[tuple[str, str]],
    produced: list[tuple[Span, str, int, int]],
) -> None:
    index = {s.span_id: s for s in trace}
    tables = {s.span_id: detect(s.attributes) for s in trace}
    roles = {s.span_id: span_role(s, tables[s.span_id]) for s in trace}
    session = first_in_trace(trace, tables, "session") or trace[0].trace_id
    named = named_agent(trace, tables, roles)
    for span in trace:
        if not _valid_ids(span):
            _reject(out, span, "invalid_ids", f"span {span.name!r}: trace or span id malformed")
            continue
        table = tables[span.span_id]
        role = roles[span.span_id]
        if table is None or role is None:
            _unmapped(out, span, "not_genai" if table is None else "unknown_operation",
                      config, samples)  # fmt: skip
            continue
        agent_span = nearest_agent(span, index, roles)
        ctx = span_context(span, agent_span, tables, session, named)
        before = len(out.events)
        reason = emit(span, table, role, ctx, index, roles, config, out)
        if reason is not None:
            _unmapped(out, span, reason, config, samples)
            continue
        after = len(out.events)
        if after > before:
            produced.append((span, role, before, after))
            out.spans[("mapped", role, span.scope)] += 1
        else:
            out.spans[("skipped", role, span.scope)] += 1


def _unmapped(
    out: Mapped, span: Span, reason: str, config: MappingConfig, samples: Counter[tuple[str, str]]
) -> None:
    out.spans[("unmapped", reason, span.scope)] += 1
    key = (reason, span.scope)
    samples[key] += 1
    if samples[key] <= config.samples_per_reason:
        sample = {k: v for k, v in span.attributes.items() if not _is_content(k)}
        out.unmapped.append(
            {
                "ts": timestamp(span.end_ns),
                "reason": reason,
                "scope": span.scope,
                "span_name": span.name[:MAX_ATTRIBUTE_CHARS],
                "service_name": str(span.resource.get("service.name") or ""),
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "attributes": json.dumps(sample, default=str)[:4096],
            }
        )


def _is_content(key: str) -> bool:
    return any(key in t.content or key.startswith(t.content_prefixes) for t in CONVENTIONS)


def _reject(out: Mapped, span: Span, reason: str, message: str) -> None:
    out.spans[("rejected", reason, span.scope)] += 1
    out.rejected += 1
    if len(out.errors) < 5:
        out.errors.append(message)


def _invalid(value: bytes) -> str | None:
    try:
        _VALIDATOR.decode(value)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def _valid_ids(span: Span) -> bool:
    return len(span.trace_id) == 32 and len(span.span_id) == 16 and span.end_ns > 0
