"""Reading one trace: each span's role, the agent span it runs under, and the session
and agent its events belong to.

Within a request, spans of a trace share what their agent span knows: the session
(``gen_ai.conversation.id``, then ``session.id``, then the trace id) and the agent
(``gen_ai.agent.id``/``name``/``version``, else the resource's
``service.name``/``service.version``). A trace is read once: each span's table and role,
the trace's session and named agent, and each span's agent as it is first asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentwatch.ingest.otlp.conventions import (
    PLACEHOLDER_NAMES,
    Convention,
    Role,
    detect,
    preferred,
)
from agentwatch.ingest.otlp.spans import Span


@dataclass(slots=True)
class SpanContext:
    """Where the events of a span belong: session, agent and environment."""

    session_id: str
    agent_id: str
    agent_version: str | None
    environment: str | None


@dataclass(frozen=True, slots=True)
class Service:
    """What a resource says about the agent when its spans do not: read once per resource."""

    agent_id: str
    version: str | None
    environment: str | None


def service(resource: Mapping[str, Any]) -> Service:
    version = resource.get("service.version")
    env = resource.get("deployment.environment.name") or resource.get("deployment.environment")
    return Service(
        agent_id=str(resource.get("service.name") or "unknown_service"),
        version=version if isinstance(version, str) else None,
        environment=env if isinstance(env, str) else None,
    )


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


_Agent = tuple[str | None, str | None]


class Trace:
    """The spans of one trace in a request, with what each span's events need from it."""

    __slots__ = ("_agents", "has_agent", "index", "named", "roles", "session", "tables")

    def __init__(self, spans: list[Span]) -> None:
        self.index = {s.span_id: s for s in spans}
        self.tables = {s.span_id: detect(s.attributes) for s in spans}
        tables = self.tables
        self.roles = {s.span_id: span_role(s, tables[s.span_id]) for s in spans}
        self.has_agent = "agent" in self.roles.values()
        self._agents: dict[tuple[int, bool], _Agent] = {}
        self.session = self._first_session(spans) or spans[0].trace_id
        self.named = self._named_agent(spans)

    def context(
        self, span: Span, table: Convention, agent_span: Span | None, service: Service
    ) -> SpanContext:
        """The span's own agent, else its agent span's, else the first named agent of the
        trace, else the resource's service; its own session, else the trace's."""
        agent_id, version = self._agent(span, table, span is agent_span)
        if agent_id is None and agent_span is not None and agent_span is not span:
            agent_table = self.tables[agent_span.span_id]
            if agent_table is not None:
                agent_id, version = self._agent(agent_span, agent_table, True)
        if agent_id is None and self.named is not None:
            agent_id, version = self.named  # an unnamed outer agent span: the agent it runs
        if agent_id is None:
            agent_id = service.agent_id
            if version is None:
                version = service.version
        own_session = preferred(span.attributes, table.session)
        return SpanContext(
            session_id=str(own_session or self.session)[:256],
            agent_id=agent_id[:128],
            agent_version=version,
            environment=service.environment,
        )

    def nearest_agent(self, span: Span) -> Span | None:
        """The span itself or its nearest ancestor that is an agent span."""
        index, roles = self.index, self.roles
        current: Span | None = span
        seen = 0
        while current is not None and seen < 64:
            if roles.get(current.span_id) == "agent":
                return current
            current = index.get(current.parent_span_id) if current.parent_span_id else None
            seen += 1
        return None

    def has_agent_ancestor(self, span: Span) -> bool:
        parent = self.index.get(span.parent_span_id) if span.parent_span_id else None
        return parent is not None and self.nearest_agent(parent) is not None

    def _named_agent(self, spans: list[Span]) -> _Agent | None:
        """The first agent span of the trace that names its agent (for spans whose agent
        span does not, such as openai-agents' ``Agent workflow`` around the agent)."""
        for span in spans:
            table = self.tables[span.span_id]
            if table is not None and self.roles[span.span_id] == "agent":
                agent_id, version = self._agent(span, table, True)
                if agent_id is not None:
                    return agent_id, version
        return None

    def _first_session(self, spans: list[Span]) -> str | None:
        """The first session any span of the trace names."""
        for span in spans:
            table = self.tables[span.span_id]
            if table is not None:
                value = preferred(span.attributes, table.session)
                if isinstance(value, str) and value:
                    return value
        return None

    def _agent(self, span: Span, table: Convention, is_agent: bool) -> _Agent:
        """The agent a span names (id, else name; an agent span's own name where that is
        the convention), and its version: read once per span."""
        key = (id(span), is_agent)
        found = self._agents.get(key)
        if found is None:
            found = self._agents[key] = _named(span, table, is_agent)
        return found


def _named(span: Span, table: Convention, is_agent: bool) -> _Agent:
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
