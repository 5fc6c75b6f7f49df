"""One table per convention the mapping understands: a new convention version is a new table.

A table names, for each thing the contract records, the span attributes that carry it in
that convention, in order of preference, and which operation names mean which role.
``detect`` picks the table of a span: the first table one of whose ``markers`` the span
carries. Keys of older versions stay in the newer tables' lists as fallbacks, because
emitters mix versions (an instrumentation on v1.37 still sending ``gen_ai.system``).

Roles: ``agent`` (a session's boundary: start, end, outcome), ``llm`` (an ``llm_call``),
``tool`` (a ``tool_call``), ``guardrail`` (a ``policy_check``), ``chain`` (a session
boundary only when it is the trace's root), ``skip`` (understood, records nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Role = Literal["agent", "llm", "tool", "guardrail", "chain", "skip"]


@dataclass(frozen=True)
class Convention:
    name: str
    markers: tuple[str, ...]  # any of these attributes selects the table
    operation: tuple[str, ...]  # attributes naming the operation
    roles: Mapping[str, Role]  # operation value (lower case) -> role
    model: tuple[str, ...]
    provider: tuple[str, ...]
    input_tokens: tuple[str, ...]
    output_tokens: tuple[str, ...]
    cache_read_tokens: tuple[str, ...]
    cache_write_tokens: tuple[str, ...]
    reasoning_tokens: tuple[str, ...]
    finish_reason: tuple[str, ...]
    tool_name: tuple[str, ...]
    tool_type: tuple[str, ...]
    agent_id: tuple[str, ...]
    agent_name: tuple[str, ...]
    agent_version: tuple[str, ...]
    session: tuple[str, ...]
    # Message content: dropped unless configured, then redacted (exact names and prefixes).
    content: tuple[str, ...]
    content_prefixes: tuple[str, ...] = ()
    # Attributes read for other reasons, so not copied into the event's attributes.
    also_read: tuple[str, ...] = ()
    # The span's name is the agent's or tool's name (OpenInference agent and tool spans).
    name_is_entity: bool = False


_GENAI_ROLES: Final[Mapping[str, Role]] = {
    "invoke_agent": "agent",
    "invoke_workflow": "agent",
    "create_agent": "skip",
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "llm",
    "execute_tool": "tool",
}

_GENAI_CONTENT: Final = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "pydantic_ai.all_messages",  # pydantic-ai
    "tool_arguments",
    "tool_response",
    "final_result",
    "all_messages_events",
    "events",
)

# GenAI semantic conventions from v1.37 to the current semantic-conventions-genai:
# gen_ai.provider.name, cache usage, input/output messages as attributes.
GENAI_CURRENT: Final = Convention(
    name="gen_ai",
    markers=("gen_ai.provider.name",),
    operation=("gen_ai.operation.name",),
    roles=_GENAI_ROLES,
    model=("gen_ai.response.model", "gen_ai.request.model"),
    provider=("gen_ai.provider.name", "gen_ai.system"),
    input_tokens=("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    output_tokens=("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    cache_read_tokens=(
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.details.cache_read_tokens",
    ),
    cache_write_tokens=(
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "gen_ai.usage.details.cache_write_tokens",
    ),
    reasoning_tokens=(
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "gen_ai.usage.details.reasoning_tokens",
    ),
    finish_reason=("gen_ai.response.finish_reasons",),
    tool_name=("gen_ai.tool.name",),
    tool_type=("gen_ai.tool.type",),
    agent_id=("gen_ai.agent.id",),
    agent_name=("gen_ai.agent.name", "agent_name"),
    agent_version=("gen_ai.agent.version",),
    session=("gen_ai.conversation.id", "session.id"),
    content=_GENAI_CONTENT,
    also_read=(
        "gen_ai.system",
        "gen_ai.tool.call.id",
        "gen_ai.response.id",
        "gen_ai.aggregated_usage.input_tokens",
        "gen_ai.aggregated_usage.output_tokens",
        "gen_ai.aggregated_usage.cache_read.input_tokens",
        "gen_ai.aggregated_usage.cache_write.input_tokens",
        "gen_ai.aggregated_usage.cache_creation.input_tokens",
        "logfire.msg",
        "logfire.json_schema",
        "logfire.span_type",
    ),
)

# GenAI semantic conventions v1.36: gen_ai.system names the provider; content arrives
# as span events (gen_ai.user.message, gen_ai.choice, ...), dropped the same way.
GENAI_V1_36: Final = Convention(
    name="gen_ai_v1_36",
    markers=("gen_ai.system", "gen_ai.operation.name", "gen_ai.request.model"),
    operation=("gen_ai.operation.name", "llm.request.type"),
    roles={**_GENAI_ROLES, "completion": "llm"},
    model=GENAI_CURRENT.model,
    provider=("gen_ai.system", "gen_ai.provider.name"),
    input_tokens=("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    output_tokens=("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    cache_read_tokens=GENAI_CURRENT.cache_read_tokens,
    cache_write_tokens=GENAI_CURRENT.cache_write_tokens,
    reasoning_tokens=GENAI_CURRENT.reasoning_tokens,
    finish_reason=GENAI_CURRENT.finish_reason,
    tool_name=GENAI_CURRENT.tool_name,
    tool_type=GENAI_CURRENT.tool_type,
    agent_id=GENAI_CURRENT.agent_id,
    agent_name=GENAI_CURRENT.agent_name,
    agent_version=GENAI_CURRENT.agent_version,
    session=GENAI_CURRENT.session,
    content=_GENAI_CONTENT,
    content_prefixes=("gen_ai.prompt.", "gen_ai.completion.", "llm.request.functions."),
    also_read=GENAI_CURRENT.also_read,
)

# The names before v1.36 and OpenLLMetry's: prompt_tokens/completion_tokens,
# cache_creation/cache_write, llm.request.type and traceloop.span.kind.
GENAI_OLD: Final = Convention(
    name="gen_ai_old",
    markers=("llm.request.type", "traceloop.span.kind", "llm.usage.total_tokens"),
    operation=("gen_ai.operation.name", "llm.request.type", "traceloop.span.kind"),
    roles={
        **_GENAI_ROLES,
        "completion": "llm",
        "agent": "agent",
        "workflow": "agent",
        "tool": "tool",
        "task": "skip",
    },
    model=("gen_ai.response.model", "gen_ai.request.model", "llm.response.model"),
    provider=("gen_ai.system", "gen_ai.provider.name", "llm.vendor"),
    input_tokens=("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
    output_tokens=("gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"),
    cache_read_tokens=GENAI_CURRENT.cache_read_tokens,
    cache_write_tokens=GENAI_CURRENT.cache_write_tokens,
    reasoning_tokens=GENAI_CURRENT.reasoning_tokens,
    finish_reason=GENAI_CURRENT.finish_reason,
    tool_name=("gen_ai.tool.name", "traceloop.entity.name"),
    tool_type=GENAI_CURRENT.tool_type,
    agent_id=GENAI_CURRENT.agent_id,
    agent_name=("gen_ai.agent.name", "traceloop.entity.name"),
    agent_version=GENAI_CURRENT.agent_version,
    session=("gen_ai.conversation.id", "session.id", "traceloop.association.properties.session_id"),
    content=(*_GENAI_CONTENT, "traceloop.entity.input", "traceloop.entity.output"),
    content_prefixes=("gen_ai.prompt.", "gen_ai.completion.", "llm.request.functions."),
    also_read=(*GENAI_CURRENT.also_read, "llm.usage.total_tokens", "traceloop.workflow.name"),
)

# OpenInference (Arize Phoenix's conventions): span kinds and llm.token_count.*.
OPENINFERENCE: Final = Convention(
    name="openinference",
    markers=("openinference.span.kind",),
    operation=("openinference.span.kind",),
    roles={
        "agent": "agent",
        "llm": "llm",
        "tool": "tool",
        "chain": "chain",
        "guardrail": "guardrail",
        "embedding": "skip",
        "retriever": "skip",
        "reranker": "skip",
        "evaluator": "skip",
        "prompt": "skip",
    },
    model=("llm.model_name", "gen_ai.response.model", "gen_ai.request.model"),
    provider=("llm.provider", "llm.system", "gen_ai.system"),
    input_tokens=("llm.token_count.prompt",),
    output_tokens=("llm.token_count.completion",),
    cache_read_tokens=("llm.token_count.prompt_details.cache_read",),
    cache_write_tokens=("llm.token_count.prompt_details.cache_write",),
    reasoning_tokens=("llm.token_count.completion_details.reasoning",),
    finish_reason=(),
    tool_name=("tool.name",),
    tool_type=(),
    agent_id=(),
    agent_name=("agent.name", "graph.node.id"),
    agent_version=(),
    session=("session.id", "gen_ai.conversation.id"),
    content=("input.value", "output.value", "tool.parameters", "tool.description"),
    content_prefixes=(
        "llm.input_messages.",
        "llm.output_messages.",
        "llm.prompts.",
        "llm.prompt_template.",
        "llm.tools.",
        "message.",
        "retrieval.documents.",
    ),
    also_read=(
        "llm.token_count.total",
        "llm.token_count.prompt_details.audio",
        "llm.token_count.completion_details.audio",
        "llm.invocation_parameters",
        "input.mime_type",
        "output.mime_type",
        "graph.node.parent_id",
    ),
    name_is_entity=True,
)

# In order of detection: the most specific marker first.
CONVENTIONS: Final = (OPENINFERENCE, GENAI_OLD, GENAI_CURRENT, GENAI_V1_36)

# Span events the mapping reads on any span.
EXCEPTION_EVENT: Final = "exception"
EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
# v1.36 content events and OpenLLMetry's: content, dropped with the attributes.
CONTENT_EVENT_PREFIXES: Final = (
    "gen_ai.user.",
    "gen_ai.system.",
    "gen_ai.assistant.",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.client.inference",
)

# Agent names some emitters use when the application named none: never an agent id
# ("Agent workflow" is openai-agents' default name for the run around its agents).
PLACEHOLDER_NAMES: Final = frozenset(
    {"", "unknown", "agent", "Agent", "unknown_service", "Agent workflow"}
)

# An explicit outcome an agent span may carry (resolved, escalated, abandoned, failed).
RESOLUTION_ATTRIBUTE: Final = "agentwatch.session.resolution"


def detect(attributes: Mapping[str, object]) -> Convention | None:
    for table in CONVENTIONS:
        for marker in table.markers:
            if marker in attributes:
                return table
    return None


def preferred(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first of ``keys`` (a table's attributes, in order of preference)
    that ``attributes`` carry."""
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None
