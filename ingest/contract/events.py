"""The trace-event contract (schema version 1) as msgspec types.

One definition serves three readers: the processor validates raw Kafka messages
against it, the SDK builds events that satisfy it, and ``event_schema.json`` is
generated from it (``agentwatch contract schema``), so the three cannot drift apart.
Field names and kinds are fixed by the contract; unknown extra fields are accepted
and ignored, which is how producers may add fields without breaking processors. A field
the contract names is not unknown on any kind: it is checked wherever it appears by the
rules of the kinds that define it (``CHECKED_TYPES``), since the store has one typed
column per field for every kind.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union

import msgspec
from msgspec import Meta

SCHEMA_VERSION: Final = 1

Id128 = Annotated[str, Meta(min_length=1, max_length=128)]
Id256 = Annotated[str, Meta(min_length=1, max_length=256)]
NonNegInt = Annotated[int, Meta(ge=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Timestamp = Annotated[dt.datetime, Meta(tz=True)]

Status = Literal["ok", "error"]
Resolution = Literal["resolved", "escalated", "abandoned", "failed"]
PolicyOutcome = Literal["pass", "violation", "blocked"]
Severity = Literal["low", "medium", "high", "critical"]
SecurityAction = Literal["blocked", "flagged"]

KINDS: Final = (
    "session_start",
    "session_end",
    "llm_call",
    "tool_call",
    "policy_check",
    "escalation",
    "feedback",
    "error",
    "security",
)


class Event(msgspec.Struct, tag_field="kind", kw_only=True, omit_defaults=True):
    """Fields on every event."""

    schema_version: Literal[1]
    event_id: Id128
    ts: Timestamp
    agent_id: Id128
    session_id: Id256
    agent_version: str | None = None
    environment: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    latency_ms: NonNegFloat | None = None
    status: Status | None = None
    error_type: str | None = None
    attributes: dict[str, Any] | None = None


class SessionStart(Event, tag="session_start", kw_only=True, omit_defaults=True):
    channel: str | None = None
    user_segment: str | None = None
    intent: str | None = None


class SessionEnd(Event, tag="session_end", kw_only=True, omit_defaults=True):
    resolution: Resolution
    intent: str | None = None


class LlmCall(Event, tag="llm_call", kw_only=True, omit_defaults=True):
    model: str
    input_tokens: NonNegInt
    output_tokens: NonNegInt
    provider: str | None = None
    prompt_id: str | None = None
    prompt_version: str | None = None
    cache_read_tokens: NonNegInt | None = None
    reasoning_tokens: NonNegInt | None = None
    cost_usd: NonNegFloat | None = None
    finish_reason: str | None = None
    time_to_first_token_ms: NonNegFloat | None = None


class ToolCall(Event, tag="tool_call", kw_only=True, omit_defaults=True):
    tool_name: str
    tool_type: str | None = None


class PolicyCheck(Event, tag="policy_check", kw_only=True, omit_defaults=True):
    policy_id: str
    outcome: PolicyOutcome
    severity: Severity | None = None


class Escalation(Event, tag="escalation", kw_only=True, omit_defaults=True):
    reason: str | None = None
    target: str | None = None


class Feedback(Event, tag="feedback", kw_only=True, omit_defaults=True):
    score: float | None = None
    label: str | None = None


class Error(Event, tag="error", kw_only=True, omit_defaults=True):
    # error_type is optional on every event but required on this kind.
    error_type: str


class Security(Event, tag="security", kw_only=True, omit_defaults=True):
    category: str
    action: SecurityAction | None = None
    severity: Severity | None = None


AnyEvent = (
    SessionStart
    | SessionEnd
    | LlmCall
    | ToolCall
    | PolicyCheck
    | Escalation
    | Feedback
    | Error
    | Security
)

EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    SessionStart,
    SessionEnd,
    LlmCall,
    ToolCall,
    PolicyCheck,
    Escalation,
    Feedback,
    Error,
    Security,
)


def contract_fields() -> dict[str, Any]:
    """Every field the contract names, with its type as the kinds that define it check it.

    Required fields and optional ones are both checked the same way elsewhere (where
    they are optional: ``null`` means absent). Two kinds that define one field define it
    with one type; an ``AssertionError`` here says the contract contradicts itself.
    """
    found: dict[str, Any] = {}
    kinds: tuple[type[Event], ...] = (Event, *EVENT_TYPES)
    for cls in kinds:
        for f in msgspec.structs.fields(cls):
            value_type = _without_none(f.type)
            if found.setdefault(f.name, value_type) != value_type:
                raise AssertionError(f"{f.name} has two types: {found[f.name]}, {value_type}")
    return found


def _without_none(tp: Any) -> Any:
    args = getattr(tp, "__args__", None)
    if args is not None and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return rest[0] if len(rest) == 1 else Union[rest]  # noqa: UP007
    return tp


def _checked(cls: type[Event], fields: dict[str, Any]) -> type[Event]:
    """``cls`` plus, as optional fields, every field the contract names on other kinds."""
    own = {f.name for f in msgspec.structs.fields(cls)}
    extra = [(name, tp | None, None) for name, tp in fields.items() if name not in own]
    checked = msgspec.defstruct(
        cls.__name__,
        extra,
        bases=(cls,),
        tag=cls.__struct_config__.tag,
        kw_only=True,
        omit_defaults=True,
        module=__name__,
    )
    assert issubclass(checked, Event)
    return checked


# What the processor validates against: each kind, with the other kinds' fields checked.
_CONTRACT_FIELDS: Final = contract_fields()  # once: reading annotations is slow at start
CHECKED_TYPES: Final[tuple[type[Event], ...]] = tuple(
    _checked(t, _CONTRACT_FIELDS) for t in EVENT_TYPES
)
CheckedEvent: Any = Union[CHECKED_TYPES]  # noqa: UP007


def json_schema() -> dict[str, Any]:
    """The contract as a JSON Schema (draft 2020-12), the file shipped beside this module."""
    _, components = msgspec.json.schema_components(CHECKED_TYPES, ref_template="#/$defs/{name}")
    for t in EVENT_TYPES:  # each kind's description is its own class's docstring
        doc = (t.__doc__ or "").strip()
        components[t.__name__]["title"] = t.__name__
        if doc:
            components[t.__name__]["description"] = doc
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://agentwatch.dev/schemas/event-v1.json",
        "title": "agentwatch trace event, schema version 1",
        "description": "One event per Kafka message on the events topic, keyed by session_id.",
        "anyOf": [{"$ref": f"#/$defs/{t.__name__}"} for t in EVENT_TYPES],
        "$defs": components,
    }
    return schema


SCHEMA_FILE: Final = Path(__file__).with_name("event_schema.json")


def schema_text() -> str:
    """The JSON Schema as shipped in ``event_schema.json`` (a test keeps the two equal)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
