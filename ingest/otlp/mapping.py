"""Spans in, contract events out: the one mapping both OTLP paths use.

Which attributes mean what is in ``conventions`` (a table per convention); this module
applies a table to the spans of one export request. Within a request, spans of a trace
share what their agent span knows: the session (``gen_ai.conversation.id``, then
``session.id``, then the trace id) and the agent (``gen_ai.agent.id``/``name``/``version``,
else the resource's ``service.name``/``service.version``). Event ids derive from the
trace and span ids, so a span sent twice (an exporter's retry) lands once.

Tokens are normalised to the contract's definition: ``input_tokens`` counts every input
token including cache reads and cache writes, and ``cache_read_tokens`` is the part read
from cache. An emitter whose input count is smaller than its cache counts evidently left
them out, and they are added; cached tokens are never counted twice.

Nothing is lost silently: every span is counted with an outcome (``mapped``, ``skipped``
when the table understands it but the contract has nothing to record, ``unmapped``,
``rejected``), unmapped spans are sampled, and attributes are counted as kept, dropped
content, redacted content, or over the limit.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from agentwatch.ingest.contract.events import AnyEvent
from agentwatch.ingest.otlp.conventions import (
    CONTENT_EVENT_PREFIXES,
    CONVENTIONS,
    EVALUATION_EVENT,
    EXCEPTION_EVENT,
    PLACEHOLDER_NAMES,
    RESOLUTION_ATTRIBUTE,
    Convention,
    Role,
    detect,
)
from agentwatch.ingest.otlp.redact import Redactor, redact_text
from agentwatch.ingest.otlp.spans import STATUS_ERROR, Span

_VALIDATOR: Final = msgspec.json.Decoder(AnyEvent)
_BATCH_VALIDATOR: Final = msgspec.json.Decoder(list[AnyEvent])
_ENCODER: Final = msgspec.json.Encoder()
_RESOLUTIONS: Final = frozenset({"resolved", "escalated", "abandoned", "failed"})
MAX_ATTRIBUTE_CHARS: Final = 256


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


@dataclass(slots=True)
class _Context:
    session_id: str
    agent_id: str
    agent_version: str | None
    environment: str | None


def _map_trace(
    trace: list[Span],
    config: MappingConfig,
    out: Mapped,
    samples: Counter[tuple[str, str]],
    produced: list[tuple[Span, str, int, int]],
) -> None:
    index = {s.span_id: s for s in trace}
    tables = {s.span_id: detect(s.attributes) for s in trace}
    roles = {s.span_id: _role(s, tables[s.span_id]) for s in trace}
    session = _first(trace, tables, "session") or trace[0].trace_id
    named = _named_agent(trace, tables, roles)
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
        agent_span = _nearest_agent(span, index, roles)
        ctx = _context(span, agent_span, tables, session, named)
        before = len(out.events)
        reason = _emit(span, table, role, ctx, index, roles, config, out)
        if reason is not None:
            _unmapped(out, span, reason, config, samples)
            continue
        after = len(out.events)
        if after > before:
            produced.append((span, role, before, after))
            out.spans[("mapped", role, span.scope)] += 1
        else:
            out.spans[("skipped", role, span.scope)] += 1


def _role(span: Span, table: Convention | None) -> Role | None:
    if table is None:
        return None
    op = _get(span.attributes, table.operation)
    if isinstance(op, str) and op.lower() in table.roles:
        return table.roles[op.lower()]
    if op is None and _get(span.attributes, table.model) is not None:
        return "llm"  # before operation names existed, a model meant an inference span
    return None


def _emit(
    span: Span,
    table: Convention,
    role: Role,
    ctx: _Context,
    index: Mapping[str, Span],
    roles: Mapping[str, Role | None],
    config: MappingConfig,
    out: Mapped,
) -> str | None:
    """Append the span's events; a reason when the span cannot be mapped."""
    a = span.attributes
    base = _base(span, ctx, table, config, out)
    error_type = base.get("error_type")
    # A root chain (OpenInference) bounds the session only when no agent span does.
    root_chain = role == "chain" and span.parent_span_id is None
    if role == "agent" or (root_chain and "agent" not in roles.values()):
        if role == "agent" and _has_agent_ancestor(span, index, roles):
            return None  # a nested agent: its calls belong to the outer agent's session
        start = {**base, "kind": "session_start", "event_id": _eid(span, "start")}
        start["ts"] = _ts(span.start_ns)
        for key in ("latency_ms", "status", "error_type"):
            start.pop(key, None)
        explicit = a.get(RESOLUTION_ATTRIBUTE)
        if explicit in _RESOLUTIONS:
            resolution = explicit
        else:
            resolution = "failed" if error_type else "resolved"
        out.events.append(start)
        out.events.append({**base, "kind": "session_end", "resolution": resolution})
    elif role == "llm":
        model = _get(a, table.model)
        if not isinstance(model, str) or not model:
            return "no_model"
        event = {**base, "kind": "llm_call", "model": model}
        provider = _get(a, table.provider)
        if isinstance(provider, str):
            event["provider"] = provider
        event.update(_tokens(a, table))
        finish = _get(a, table.finish_reason)
        if isinstance(finish, list) and finish:
            finish = finish[0]
        if isinstance(finish, str):
            event["finish_reason"] = finish
        out.events.append(event)
    elif role == "tool":
        name = _get(a, table.tool_name)
        if not isinstance(name, str) and table.name_is_entity:
            name = span.name
        if not isinstance(name, str) or not name:
            return "no_tool_name"
        event = {**base, "kind": "tool_call", "tool_name": name}
        tool_type = _get(a, table.tool_type)
        if isinstance(tool_type, str):
            event["tool_type"] = tool_type
        out.events.append(event)
        if name in config.escalation_tools and not error_type:
            out.events.append(
                {**_strip(base), "kind": "escalation", "event_id": _eid(span, "escalation"),
                 "reason": f"tool {name}"}
            )  # fmt: skip
    elif role == "guardrail":
        outcome = "blocked" if error_type else "pass"
        out.events.append(
            {**base, "kind": "policy_check", "policy_id": span.name, "outcome": outcome}
        )
    _span_events(span, base, out)
    return None


def _span_events(span: Span, base: dict[str, Any], out: Mapped) -> None:
    """Handled exceptions become ``error`` events, evaluation results ``feedback``."""
    for n, ev in enumerate(span.events):
        common = {**_strip(base), "ts": _ts(ev.time_ns or span.end_ns)}
        if ev.name == EXCEPTION_EVENT and "error_type" not in base:
            # a handled exception; a failed span's own event already says error
            etype = ev.attributes.get("exception.type") or "exception"
            out.events.append(
                {**common, "kind": "error", "event_id": _eid(span, f"exc{n}"),
                 "error_type": str(etype)}
            )  # fmt: skip
        elif ev.name == EVALUATION_EVENT:
            fb: dict[str, Any] = {**common, "kind": "feedback", "event_id": _eid(span, f"eval{n}")}
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
    span: Span, ctx: _Context, table: Convention, config: MappingConfig, out: Mapped
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": _eid(span, "span"),
        "ts": _ts(span.end_ns),
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
    scope = span.scope
    for key, value in span.attributes.items():
        if key in known:
            continue
        if key in table.content or key.startswith(table.content_prefixes):
            if not config.keep_content:
                out.attributes[("content_dropped", scope)] += 1
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            content[key] = config.redact(text[: config.max_content_chars])
            out.attributes[("content_redacted", scope)] += 1
        elif len(kept) - 2 >= config.max_attributes:
            out.attributes[("over_limit", scope)] += 1
        else:
            if isinstance(value, str):
                value = value[:MAX_ATTRIBUTE_CHARS]
            kept[key] = value
            out.attributes[("kept", scope)] += 1
    for ev in span.events:
        if ev.name.startswith(CONTENT_EVENT_PREFIXES):
            out.attributes[("content_dropped", scope)] += 1
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
        v = _get(a, keys)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
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


def _context(
    span: Span,
    agent_span: Span | None,
    tables: Mapping[str, Convention | None],
    session: str,
    named: tuple[str, str | None] | None,
) -> _Context:
    own = tables[span.span_id]
    agent_id, version = _agent(span, own, span is agent_span) if own else (None, None)
    if agent_id is None and agent_span is not None and agent_span is not span:
        agent_table = tables[agent_span.span_id]
        if agent_table is not None:
            agent_id, version = _agent(agent_span, agent_table, True)
    res = span.resource
    if agent_id is None and named is not None:
        agent_id, version = named  # an unnamed outer agent span: the agent it runs
    if agent_id is None:
        agent_id = str(res.get("service.name") or "unknown_service")
        service_version = res.get("service.version")
        if version is None and isinstance(service_version, str):
            version = service_version
    env = res.get("deployment.environment.name") or res.get("deployment.environment")
    own_session = _get(span.attributes, own.session) if own else None
    return _Context(
        session_id=str(own_session or session)[:256],
        agent_id=agent_id[:128],
        agent_version=version,
        environment=env if isinstance(env, str) else None,
    )


def _named_agent(
    trace: list[Span], tables: Mapping[str, Convention | None], roles: Mapping[str, Role | None]
) -> tuple[str, str | None] | None:
    """The first agent span of the trace that names its agent (for spans whose agent
    span does not, such as openai-agents' ``Agent workflow`` around the agent)."""
    for span in trace:
        table = tables[span.span_id]
        if table is not None and roles[span.span_id] == "agent":
            agent_id, version = _agent(span, table, True)
            if agent_id is not None:
                return agent_id, version
    return None


def _agent(span: Span, table: Convention, is_agent: bool) -> tuple[str | None, str | None]:
    """The agent a span names (id, else name; an agent span's own name where that is the
    convention), and its version."""
    a = span.attributes
    agent_id = None
    for keys in (table.agent_id, table.agent_name):
        value = _get(a, keys)
        if isinstance(value, str) and value not in PLACEHOLDER_NAMES:
            agent_id = value
            break
    if agent_id is None and is_agent and table.name_is_entity:
        agent_id = span.name if span.name not in PLACEHOLDER_NAMES else None
    version = _get(a, table.agent_version)
    return agent_id, version if isinstance(version, str) else None


def _first(trace: list[Span], tables: Mapping[str, Convention | None], what: str) -> str | None:
    """The first value of a table field on any span of the trace."""
    for span in trace:
        table = tables[span.span_id]
        if table is not None:
            value = _get(span.attributes, getattr(table, what))
            if isinstance(value, str) and value:
                return value
    return None


def _nearest_agent(
    span: Span, index: Mapping[str, Span], roles: Mapping[str, Role | None]
) -> Span | None:
    current: Span | None = span
    seen = 0
    while current is not None and seen < 64:
        if roles.get(current.span_id) == "agent":
            return current
        current = index.get(current.parent_span_id) if current.parent_span_id else None
        seen += 1
    return None


def _has_agent_ancestor(
    span: Span, index: Mapping[str, Span], roles: Mapping[str, Role | None]
) -> bool:
    parent = index.get(span.parent_span_id) if span.parent_span_id else None
    return parent is not None and _nearest_agent(parent, index, roles) is not None


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
                "ts": _ts(span.end_ns),
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


def _get(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _eid(span: Span, part: str) -> str:
    return f"otel-{span.trace_id}-{span.span_id}-{part}"


_SECONDS: dict[int, str] = {}


def _ts(ns: int) -> str:
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
