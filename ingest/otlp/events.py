"""One span's contract events: the fields the contract has, the attributes it has not.

Event ids derive from the trace and span ids, so a span sent twice (an exporter's retry)
lands once.

Tokens are normalised to the contract's definition: ``input_tokens`` counts every input
token including cache reads and cache writes, and ``cache_read_tokens`` is the part read
from cache. An emitter whose input count is smaller than its cache counts evidently left
them out, and they are added; cached tokens are never counted twice.

Attributes the contract has no field for are kept up to a limit, message content is
dropped unless kept (then redacted), and each is counted with its outcome.

Events are valid by construction, so they are encoded once and not decoded again to
check them: ids and timestamps are built from a span whose ids and end time were checked,
agent and session ids are non-empty strings cut to the contract's lengths, every optional
field is set only from a value of its type, counts are clamped at zero, and enumerations
take one of their values. A token count that is not a finite number is the one value a
span may carry that the contract cannot hold: it raises ``InvalidEvent`` and the span is
rejected. A property test holds the mapping to this over arbitrary attribute values.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from agentwatch.ingest.otlp.conventions import (
    CONTENT_EVENT_PREFIXES,
    EVALUATION_EVENT,
    EXCEPTION_EVENT,
    RESOLUTION_ATTRIBUTE,
    Convention,
    Role,
    preferred,
)
from agentwatch.ingest.otlp.spans import STATUS_ERROR, Span
from agentwatch.ingest.otlp.traces import SpanContext, Trace

if TYPE_CHECKING:
    from agentwatch.ingest.otlp.mapping import Mapped, MappingConfig

_RESOLUTIONS: Final = frozenset({"resolved", "escalated", "abandoned", "failed"})
MAX_ATTRIBUTE_CHARS: Final = 256


class InvalidEvent(ValueError):
    """A span carrying a value the contract cannot hold: the span is rejected."""


def emit(
    span: Span,
    table: Convention,
    role: Role,
    ctx: SpanContext,
    trace: Trace,
    config: MappingConfig,
    out: Mapped,
) -> str | None:
    """Append the span's events; a reason when the span cannot be mapped."""
    a = span.attributes
    base = _base(span, ctx, table, config, out)
    error_type = base.get("error_type")
    # the fields of events derived from the span, before ``base`` becomes its own event
    common = _strip(base) if span.events else None
    events = out.events
    # A root chain (OpenInference) bounds the session only when no agent span does.
    root_chain = role == "chain" and span.parent_span_id is None
    if role == "agent" or (root_chain and not trace.has_agent):
        if role == "agent" and trace.has_agent_ancestor(span):
            return None  # a nested agent: its calls belong to the outer agent's session
        start = {**base, "kind": "session_start", "event_id": _eid(span, "start")}
        start["ts"] = timestamp(span.start_ns)
        for key in ("latency_ms", "status", "error_type"):
            start.pop(key, None)
        explicit = a.get(RESOLUTION_ATTRIBUTE)
        if isinstance(explicit, str) and explicit in _RESOLUTIONS:
            resolution = explicit
        else:
            resolution = "failed" if error_type else "resolved"
        events.append(start)
        base["kind"] = "session_end"
        base["resolution"] = resolution
        events.append(base)
    elif role == "llm":
        model = preferred(a, table.model)
        if not isinstance(model, str) or not model:
            return "no_model"
        tokens = _tokens(a, table)
        base["kind"] = "llm_call"
        base["model"] = model
        provider = preferred(a, table.provider)
        if isinstance(provider, str):
            base["provider"] = provider
        base.update(tokens)
        finish = preferred(a, table.finish_reason)
        if isinstance(finish, list) and finish:
            finish = finish[0]
        if isinstance(finish, str):
            base["finish_reason"] = finish
        events.append(base)
    elif role == "tool":
        name = preferred(a, table.tool_name)
        if not isinstance(name, str) and table.name_is_entity:
            name = span.name
        if not isinstance(name, str) or not name:
            return "no_tool_name"
        escalation = name in config.escalation_tools and not error_type
        derived = _strip(base) if escalation else None
        base["kind"] = "tool_call"
        base["tool_name"] = name
        tool_type = preferred(a, table.tool_type)
        if isinstance(tool_type, str):
            base["tool_type"] = tool_type
        events.append(base)
        if derived is not None:
            derived["kind"] = "escalation"
            derived["event_id"] = _eid(span, "escalation")
            derived["reason"] = f"tool {name}"
            events.append(derived)
    elif role == "guardrail":
        base["kind"] = "policy_check"
        base["policy_id"] = span.name
        base["outcome"] = "blocked" if error_type else "pass"
        events.append(base)
    if common is not None:
        _span_events(span, common, "error_type" in base, out)
    return None


def _span_events(span: Span, common: dict[str, Any], failed: bool, out: Mapped) -> None:
    """Handled exceptions become ``error`` events, evaluation results ``feedback``."""
    for n, ev in enumerate(span.events):
        if ev.name == EXCEPTION_EVENT and not failed:
            # a handled exception; a failed span's own event already says error
            etype = ev.attributes.get("exception.type") or "exception"
            out.events.append(
                {**common, "ts": timestamp(ev.time_ns or span.end_ns), "kind": "error",
                 "event_id": _eid(span, f"exc{n}"), "error_type": str(etype)}
            )  # fmt: skip
        elif ev.name == EVALUATION_EVENT:
            fb: dict[str, Any] = {**common, "ts": timestamp(ev.time_ns or span.end_ns),
                                  "kind": "feedback",
                                  "event_id": _eid(span, f"eval{n}")}  # fmt: skip
            score = ev.attributes.get("gen_ai.evaluation.score.value")
            if isinstance(score, int | float) and not isinstance(score, bool):
                fb["score"] = float(score)
            label = ev.attributes.get("gen_ai.evaluation.score.label")
            if isinstance(label, str):
                fb["label"] = label
            name = ev.attributes.get("gen_ai.evaluation.name")
            if isinstance(name, str):
                fb["attributes"] = {"evaluation": name}
            out.events.append(fb)


def _base(
    span: Span, ctx: SpanContext, table: Convention, config: MappingConfig, out: Mapped
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": _eid(span, "span"),
        "ts": timestamp(span.end_ns),
        "agent_id": ctx.agent_id,
        "session_id": ctx.session_id,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "latency_ms": max(0, span.end_ns - span.start_ns) / 1e6,
    }
    if span.parent_span_id:
        event["parent_span_id"] = span.parent_span_id
    if ctx.agent_version:
        event["agent_version"] = ctx.agent_version
    if ctx.environment:
        event["environment"] = ctx.environment
    error_type = _error_type(span)
    if error_type:
        event["status"] = "error"
        event["error_type"] = error_type
    attrs = _attributes(span, table, config, out)
    if attrs:
        event["attributes"] = attrs
    return event


def _attributes(
    span: Span, table: Convention, config: MappingConfig, out: Mapped
) -> dict[str, Any]:
    """The span's attributes the contract has no field for: kept (bounded), content redacted."""
    known = _known_keys(table)
    kept: dict[str, Any] = {
        "otel.scope": span.scope,
        "otel.span_name": span.name[:MAX_ATTRIBUTE_CHARS],
    }
    content: dict[str, str] = {}
    dropped = over = n_kept = 0
    exact, prefixes = table.content, table.content_prefixes
    for key, value in span.attributes.items():
        if key in known:
            continue
        if key in exact or key.startswith(prefixes):
            if not config.keep_content:
                dropped += 1
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            content[key] = config.redact(text[: config.max_content_chars])
        elif len(kept) - 2 >= config.max_attributes:
            over += 1
        else:
            kept[key] = value[:MAX_ATTRIBUTE_CHARS] if isinstance(value, str) else value
            n_kept += 1
    for ev in span.events:
        if ev.name.startswith(CONTENT_EVENT_PREFIXES):
            dropped += 1
    counts, scope = out.attributes, span.scope
    for outcome, n in (
        ("content_dropped", dropped),
        ("content_redacted", len(content)),
        ("over_limit", over),
        ("kept", n_kept),
    ):
        if n:
            counts[(outcome, scope)] += n
    if content:
        kept["content"] = content
    return kept


_KNOWN_CACHE: dict[str, frozenset[str]] = {}


def _known_keys(table: Convention) -> frozenset[str]:
    known = _KNOWN_CACHE.get(table.name)
    if known is None:
        names = (
            "operation", "model", "provider", "input_tokens", "output_tokens",
            "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "finish_reason",
            "tool_name", "tool_type", "agent_id", "agent_name", "agent_version", "session",
            "also_read",
        )  # fmt: skip
        keys = {k for n in names for k in getattr(table, n)}
        keys.update(table.markers)
        keys.update(("error.type", RESOLUTION_ATTRIBUTE))
        known = _KNOWN_CACHE[table.name] = frozenset(keys)
    return known


def _tokens(a: Mapping[str, Any], table: Convention) -> dict[str, int]:
    def count(keys: tuple[str, ...]) -> int | None:
        v = preferred(a, keys)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidEvent(f"{keys[0]} is {v}, not a number of tokens")
        return max(0, int(v))

    inp = count(table.input_tokens) or 0
    cache_read = count(table.cache_read_tokens)
    cache_write = count(table.cache_write_tokens)
    cached = (cache_read or 0) + (cache_write or 0)
    if inp < cached:
        inp += cached  # this emitter counts uncached input only
    tokens = {"input_tokens": inp, "output_tokens": count(table.output_tokens) or 0}
    if cache_read is not None:
        tokens["cache_read_tokens"] = cache_read
    reasoning = count(table.reasoning_tokens)
    if reasoning is not None:
        tokens["reasoning_tokens"] = reasoning
    return tokens


def _error_type(span: Span) -> str | None:
    etype = span.attributes.get("error.type")
    if isinstance(etype, str) and etype:
        return etype
    if span.status_code != STATUS_ERROR:
        return None
    for ev in span.events:
        if ev.name == EXCEPTION_EVENT and ev.attributes.get("exception.type"):
            return str(ev.attributes["exception.type"])
    return "error"


def _eid(span: Span, part: str) -> str:
    return f"otel-{span.trace_id}-{span.span_id}-{part}"


_SECONDS: dict[int, str] = {}


def timestamp(ns: int) -> str:
    """RFC 3339 in UTC to the microsecond; the date part is formatted once per second."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        prefix = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECONDS[seconds] = prefix
    return f"{prefix}.{micros:06d}Z"


def _strip(base: dict[str, Any]) -> dict[str, Any]:
    """The common fields without the span's own measurements (for derived events)."""
    return {k: v for k, v in base.items() if k not in ("latency_ms", "status", "error_type")}
