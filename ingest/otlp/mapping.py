"""Spans in, contract events out: the one mapping both OTLP paths use.

Which attributes mean what is in ``conventions`` (a table per convention); this module
applies a table to the spans of one export request, trace by trace: ``traces`` tells
each span's role and the session and agent it belongs to, and ``events`` makes its
contract events, each encoded once. The events are valid by construction (``events``
says how); the one thing a span can carry that the contract cannot hold, a token count
that is not a finite number, rejects the span.

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

from agentwatch.ingest.otlp.conventions import CONVENTIONS
from agentwatch.ingest.otlp.events import MAX_ATTRIBUTE_CHARS, InvalidEvent, emit, timestamp
from agentwatch.ingest.otlp.redact import Redactor, redact_text
from agentwatch.ingest.otlp.spans import Span
from agentwatch.ingest.otlp.traces import Service, Trace, service

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
    values: list[bytes] = field(default_factory=list)  # the events, JSON-encoded
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
    services: dict[int, Service] = {}  # by resource: a request's spans share a few
    for trace in by_trace.values():
        _map_trace(trace, config, out, samples, services)
    encode = _ENCODER.encode
    out.values = [encode(e) for e in out.events]
    return out


def _map_trace(
    spans: list[Span],
    config: MappingConfig,
    out: Mapped,
    samples: Counter[tuple[str, str]],
    services: dict[int, Service],
) -> None:
    trace = Trace(spans)
    tables, roles = trace.tables, trace.roles
    counts = out.spans
    for span in spans:
        if not _valid_ids(span):
            _reject(out, span, "invalid_ids", f"span {span.name!r}: trace or span id malformed")
            continue
        table = tables[span.span_id]
        role = roles[span.span_id]
        if table is None or role is None:
            _unmapped(out, span, "not_genai" if table is None else "unknown_operation",
                      config, samples)  # fmt: skip
            continue
        resource = span.resource
        found = services.get(id(resource))
        if found is None:
            found = services[id(resource)] = service(resource)
        ctx = trace.context(span, table, trace.nearest_agent(span), found)
        before = len(out.events)
        try:
            reason = emit(span, table, role, ctx, trace, config, out)
        except InvalidEvent as exc:
            _reject(out, span, "invalid_event", f"span {span.name!r}: {exc}")
            continue
        if reason is not None:
            _unmapped(out, span, reason, config, samples)
        elif len(out.events) > before:
            counts[("mapped", role, span.scope)] += 1
        else:
            counts[("skipped", role, span.scope)] += 1


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


def _valid_ids(span: Span) -> bool:
    return len(span.trace_id) == 32 and len(span.span_id) == 16 and span.end_ns > 0
