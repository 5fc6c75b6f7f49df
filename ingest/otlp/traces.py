"""Reading one trace: each span's role, the agent span it runs under, and the session
and agent its events belong to.

Within a request, spans of a trace share what their agent span knows: the session
(``gen_ai.conversation.id``, then ``session.id``, then the trace id) and the agent
(``gen_ai.agent.id``/``name``/``version``, else the resource's
``service.name``/``service.version``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentwatch.ingest.otlp.conventions import PLACEHOLDER_NAMES, Convention, Role, preferred
from agentwatch.ingest.otlp.spans import Span


@dataclass(slots=True)
class SpanContext:
    """Where the events of a span belong: session, agent and environment."""

    session_id: str
    agent_id: str
    agent_version: str | None
    environment: str | None


def span_role(span: Span, table: Convention | None) -> Role | None:
    """The role ``span`` plays under its table; None when the table knows no such operation."""
    if table is None:
        return None
    op = preferred(span.attributes, table.operation)
    if isinstance(op, str) and op.lower() in table.roles:
        return table.roles[op.lower()]
    if op is None and preferred(span.attributes, table.model) is not None:
        return "llm"  # before operation names existed, a model meant an inference span
    return None


def span_context(
    span: Span,
    agent_span: Span | None,
    tables: Mapping[str, Convention | None],
    session: str,
    named: tuple[str, str | None] | None,
) -> SpanContext:
    """The span's own agent, else its agent span's, else the first named agent of the
    trace, else the resource's service; its own session, else the trace's."""
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
    own_session = preferred(span.attributes, own.session) if own else None
    return SpanContext(
        session_id=str(own_session or session)[:256],
        agent_id=agent_id[:128],
        agent_version=version,
        environment=env if isinstance(env, str) else None,
    )


def named_agent(
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
        value = preferred(a, keys)
        if isinstance(value, str) and value not in PLACEHOLDER_NAMES:
            agent_id = value
            break
    if agent_id is None and is_agent and table.name_is_entity:
        agent_id = span.name if span.name not in PLACEHOLDER_NAMES else None
    version = preferred(a, table.agent_version)
    return agent_id, version if isinstance(version, str) else None


def first_in_trace(
    trace: list[Span], tables: Mapping[str, Convention | None], what: str
) -> str | None:
    """The first value of a table field on any span of the trace."""
    for span in trace:
        table = tables[span.span_id]
        if table is not None:
            value = preferred(span.attributes, getattr(table, what))
            if isinstance(value, str) and value:
                return value
    return None


def nearest_agent(
    span: Span, index: Mapping[str, Span], roles: Mapping[str, Role | None]
) -> Span | None:
    """The span itself or its nearest ancestor that is an agent span."""
    current: Span | None = span
    seen = 0
    while current is not None and seen < 64:
        if roles.get(current.span_id) == "agent":
            return current
        current = index.get(current.parent_span_id) if current.parent_span_id else None
        seen += 1
    return None


def has_agent_ancestor(
    span: Span, index: Mapping[str, Span], roles: Mapping[str, Role | None]
) -> bool:
    parent = index.get(span.parent_span_id) if span.parent_span_id else None
    return parent is not None and nearest_agent(parent, index, roles) is not None
