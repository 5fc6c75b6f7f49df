"""The agent catalog: who owns each agent, what it may use, and what it must deliver.

Governance needs a reference to compare the stream with: an event from an agent the
catalog does not know is shadow AI, a model or tool outside the agent's approved lists
is a policy breach, a prod release other than the pinned one is an unreviewed change,
and a retired agent that still talks is a process that was never switched off. The
catalog is that reference, kept in YAML next to the rules so it is reviewed like code.

Entries decode into typed msgspec structs whose defaults are the field defaults below
(one place). The load validates in full before use: a key the structs do not have (the
message names the file, the agent, the key path and the closest valid key), a status
that is not one of ``active``, ``paused``, ``retired`` or a version written as a number
(YAML would turn ``1.10`` into ``1.1``) stops the load, rather than silently disabling a
check. Every problem of the file is reported at once, one line each.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints

import msgspec
import polars as pl

from agentwatch.settings import ConfigError
from agentwatch.yamlfile import read_yaml

EXAMPLE_CATALOG: Final = Path(__file__).parent / "catalog.yaml"
"""The demo's example fleet: loaded only when named, never by default."""
NO_CATALOG: Final = "<no catalog>"

Status = Literal["active", "paused", "retired"]
RiskTier = Literal["low", "medium", "high", "critical"]
Autonomy = Literal["suggest", "act_with_approval", "act"]
ToolTier = Literal["read", "write", "destructive"]
STATUSES: Final[tuple[str, ...]] = get_args(Status)
RISK_TIERS: Final[tuple[str, ...]] = get_args(RiskTier)
AUTONOMY_LEVELS: Final[tuple[str, ...]] = get_args(Autonomy)
TOOL_TIERS: Final[tuple[str, ...]] = get_args(ToolTier)

# A tool the catalog does not classify counts as one that changes state: an access
# review then asks for its human approvals instead of passing it as harmless.
DEFAULT_TOOL_TIER: Final[ToolTier] = "write"
# How old an agent's last access review may be, by risk tier (``review_interval_days``
# of an entry overrides it); the ``AccessReviewOverdue`` rule compares with it.
REVIEW_INTERVAL_DAYS: Final[Mapping[str, float]] = {
    "low": 180.0,
    "medium": 90.0,
    "high": 30.0,
    "critical": 14.0,
}
# Risk tiers whose releases need an approval before they may run in prod.
APPROVAL_TIERS: Final = frozenset({"high", "critical"})

# Service levels and success metrics an agent can promise; rules compare metrics with
# them by name (``slo.p95_latency_ms``). Values are numbers; each has a sanity range.
SLOS: Final[Mapping[str, str]] = {
    "p95_latency_ms": "95th percentile of LLM call latency, milliseconds",
    "containment_floor": "lowest acceptable share of sessions resolved without a human (0-1)",
    "error_rate_max": "highest acceptable share of events that are errors (0-1)",
    "tool_error_rate_max": "highest acceptable share of failed calls of one tool (0-1)",
    "cost_per_session_usd": "highest acceptable LLM spend per session, USD",
}
_FRACTION_SLOS: Final = frozenset({"containment_floor", "error_rate_max", "tool_error_rate_max"})

# Fields a rule may use as its threshold, per agent (see ``AgentEntry.number``).
CATALOG_FIELDS: Final[tuple[str, ...]] = (
    "daily_budget_usd",
    "review_interval_days",
    *(f"slo.{k}" for k in SLOS),
)
CATALOG_FORMAT_VERSION: Final = 1
_REQUIRED_KEYS: Final = ("agent_id", "owner", "oncall", "risk_tier", "status")


class CatalogError(ConfigError):
    """A catalog that cannot be used; the message names the file, agent and field."""


class Pinned(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The release reviewed for prod. ``None`` pins nothing for that field."""

    agent_version: str | None = None
    prompt_version: str | None = None
    model: str | None = None


class AgentEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One agent as governance knows it.

    ``approved_models`` / ``approved_tools`` of ``None`` mean "not governed" (no check),
    while an empty set means "nothing approved": every call is a breach. ``tool_tiers``
    classifies tools as read, write or destructive (others: ``DEFAULT_TOOL_TIER``).
    ``credentials`` names the service accounts and secrets revoked when it is retired.
    """

    agent_id: str
    owner: str
    oncall: str
    risk_tier: RiskTier
    status: Status
    description: str = ""
    purpose: str = ""
    business_owner: str | None = None
    technical_owner: str | None = None
    autonomy: Autonomy | None = None
    data_sources: tuple[str, ...] = ()
    approved_models: frozenset[str] | None = None
    approved_tools: frozenset[str] | None = None
    tool_tiers: dict[str, ToolTier] = {}
    pinned: Pinned = Pinned()
    daily_budget_usd: float | None = None
    slo: dict[str, float] = {}
    review_interval_days: float | None = None
    credentials: tuple[str, ...] = ()
    retired_on: dt.date | None = None

    def number(self, name: str) -> float | None:
        """A numeric field by its rule name: ``daily_budget_usd`` or ``slo.<key>``."""
        if name == "daily_budget_usd":
            return self.daily_budget_usd
        if name == "review_interval_days":
            return self.review_interval()
        if name.startswith("slo."):
            return self.slo.get(name[4:])
        raise KeyError(f"unknown catalog field {name!r}; known: {', '.join(CATALOG_FIELDS)}")

    def review_interval(self) -> float:
        """Days an access review stays valid: the entry's own, else its risk tier's."""
        if self.review_interval_days is not None:
            return self.review_interval_days
        return REVIEW_INTERVAL_DAYS[self.risk_tier]

    def tool_tier(self, tool: str) -> ToolTier:
        return self.tool_tiers.get(tool, DEFAULT_TOOL_TIER)

    def needs_release_approval(self) -> bool:
        return self.risk_tier in APPROVAL_TIERS


def entry_doc(entry: AgentEntry) -> dict[str, Any]:
    """An entry as plain JSON-able data with sets sorted, so equal entries compare equal."""
    doc: dict[str, Any] = json.loads(msgspec.json.encode(entry, order="deterministic"))
    for key in ("approved_models", "approved_tools"):
        if doc.get(key) is not None:
            doc[key] = sorted(doc[key])
    return doc


def entry_from_doc(doc: Mapping[str, Any]) -> AgentEntry:
    """The inverse of :func:`entry_doc` (registry history stores entries as JSON)."""
    return msgspec.convert(dict(doc), AgentEntry)


@dataclass(frozen=True)
class Catalog:
    """All catalogued agents by id, and where they were read from."""

    agents: Mapping[str, AgentEntry]
    source: str = "<memory>"

    def get(self, agent_id: str) -> AgentEntry | None:
        return self.agents.get(agent_id)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self.agents

    def __iter__(self) -> Iterator[AgentEntry]:
        return iter(self.agents.values())

    def __len__(self) -> int:
        return len(self.agents)

    def with_status(self, status: Status) -> list[AgentEntry]:
        return [a for a in self.agents.values() if a.status == status]

    def frame(self) -> pl.DataFrame:
        """One row per agent, for joining with events in SQL (``agent_catalog``).

        Lists are NULL where the catalog does not govern them, so SQL can tell "no
        check" from "nothing approved" exactly as :class:`AgentEntry` does.
        """
        rows = [
            {
                "agent_id": a.agent_id,
                "owner": a.owner,
                "oncall": a.oncall,
                "risk_tier": a.risk_tier,
                "status": a.status,
                "approved_models": None if a.approved_models is None else sorted(a.approved_models),
                "approved_tools": None if a.approved_tools is None else sorted(a.approved_tools),
                "pinned_agent_version": a.pinned.agent_version,
                "pinned_prompt_version": a.pinned.prompt_version,
                "pinned_model": a.pinned.model,
                "daily_budget_usd": a.daily_budget_usd,
                **{f"slo_{k}": a.slo.get(k) for k in SLOS},
                "business_owner": a.business_owner,
                "technical_owner": a.technical_owner,
                "autonomy": a.autonomy,
                "review_interval_days": a.review_interval(),
                "needs_release_approval": a.needs_release_approval(),
            }
            for a in self.agents.values()
        ]
        return pl.DataFrame(rows, schema=CATALOG_FRAME_SCHEMA)


CATALOG_FRAME_SCHEMA: Final[dict[str, pl.DataType]] = {
    "agent_id": pl.String(),
    "owner": pl.String(),
    "oncall": pl.String(),
    "risk_tier": pl.String(),
    "status": pl.String(),
    "approved_models": pl.List(pl.String()),
    "approved_tools": pl.List(pl.String()),
    "pinned_agent_version": pl.String(),
    "pinned_prompt_version": pl.String(),
    "pinned_model": pl.String(),
    "daily_budget_usd": pl.Float64(),
    **{f"slo_{k}": pl.Float64() for k in SLOS},
    "business_owner": pl.String(),
    "technical_owner": pl.String(),
    "autonomy": pl.String(),
    "review_interval_days": pl.Float64(),
    "needs_release_approval": pl.Boolean(),
}


# --------------------------------------------------------------------------- loading


def load_catalog(path: Path | None) -> Catalog:
    """Read and validate a catalog file; ``None`` (no catalog configured) is an empty one."""
    if path is None:
        return Catalog({}, source=NO_CATALOG)
    return parse_catalog(read_yaml(path, CatalogError), str(path))


def parse_catalog(doc: Any, source: str = "<memory>") -> Catalog:
    """Validate a parsed catalog document; every problem found is reported at once."""
    if not isinstance(doc, Mapping):
        raise CatalogError(f"{source}: a catalog is a mapping with an `agents` list")
    problems: list[str] = []
    # `x-...` keys hold YAML anchors shared by several agents, as in compose files.
    unknown = sorted(str(k) for k in doc if k not in ("version", "agents"))
    unknown = [k for k in unknown if not k.startswith("x-")]
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; expected version, agents, x-*")
    version = doc.get("version", CATALOG_FORMAT_VERSION)
    if version != CATALOG_FORMAT_VERSION:
        problems.append(f"version must be {CATALOG_FORMAT_VERSION}, got {version!r}")
    raw_agents = doc.get("agents")
    if not isinstance(raw_agents, list):
        problems.append("`agents` must be a list of agent entries")
        raw_agents = []
    agents: dict[str, AgentEntry] = {}
    for index, raw in enumerate(raw_agents):
        where = f"agents[{index}]"
        if isinstance(raw, Mapping) and isinstance(raw.get("agent_id"), str):
            where = f"agent {raw['agent_id']}"
        entry = _parse_agent(raw, where, problems)
        if entry is None:
            continue
        if entry.agent_id in agents:
            problems.append(f"{where}: agent_id is listed twice")
            continue
        agents[entry.agent_id] = entry
    if problems:
        raise CatalogError(f"{source}: invalid catalog:\n  " + "\n  ".join(problems))
    return Catalog(agents, source)


def _parse_agent(raw: Any, where: str, problems: list[str]) -> AgentEntry | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: an agent entry must be a mapping")
        return None
    start = len(problems)
    _unknown_keys(raw, AgentEntry, "", where, problems)
    for key in _REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"{where}: `{key}` is required")
    for key in ("approved_models", "approved_tools", "data_sources", "credentials"):
        value = raw.get(key)
        if isinstance(value, list) and len(set(map(str, value))) != len(value):
            problems.append(f"{where}: `{key}` lists a name twice")
    if len(problems) > start:
        return None
    try:
        entry = msgspec.convert(dict(raw), AgentEntry, strict=True)
    except msgspec.ValidationError as exc:
        problems.append(f"{where}: {_explain(exc, raw)}")
        return None
    problems.extend(f"{where}: {p}" for p in _check(entry))
    return None if len(problems) > start else entry


def _unknown_keys(raw: Any, kind: Any, prefix: str, where: str, problems: list[str]) -> None:
    """Keys a struct does not have, each with the closest valid one; nested structs too."""
    if not isinstance(raw, Mapping):
        return
    hints = get_type_hints(kind)
    known = list(msgspec.structs.fields(kind))
    for key in raw:
        if key not in hints:
            close = difflib.get_close_matches(str(key), [f.name for f in known], n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            problems.append(
                f"{where}: unknown key `{prefix}{key}`{hint} "
                f"(known: {', '.join(f.name for f in known)})"
            )
        elif isinstance(hints[key], type) and issubclass(hints[key], msgspec.Struct):
            _unknown_keys(raw[key], hints[key], f"{prefix}{key}.", where, problems)


_STEP: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
"""One step of msgspec's error path: ``.key``, ``[index]``, or ``[...]`` (a mapping's value)."""


def _explain(exc: msgspec.ValidationError, raw: Mapping[str, Any]) -> str:
    """msgspec's first type error as the catalog's message: the key path, what it takes
    and the value given (``approved_models[0]`` must be a string, got 1)."""
    message, _, at = str(exc).partition(" - at `")
    at = at.rstrip("`")
    at = at.partition("` in `")[2] or at  # a mapping's key: the mapping is named
    if not at.startswith("$."):
        return message
    kind: Any = AgentEntry
    value: Any = raw
    name = last = ""
    for key, index in _STEP.findall(at[1:]):
        kind = _bare(kind)
        if key:
            hints = get_type_hints(kind) if isinstance(kind, type) else {}
            kind = hints.get(key)
            value = value.get(key) if isinstance(value, Mapping) else None
            name, last = f"{name}.{key}" if name else key, key
        elif index:
            kind = (get_args(kind) or (None,))[0]
            i = int(index)
            value = value[i] if isinstance(value, list) and i < len(value) else None
            name += f"[{index}]"
        else:  # the first value of the mapping that is not of its type
            kind = (get_args(kind) or (None, None))[1]
            items = value.items() if isinstance(value, Mapping) else []
            wrong = [(k, v) for k, v in items if not _fits(v, kind)]
            if not wrong:
                return f"`{name}`: {message}"
            key, value = wrong[0]
            name = f"{name}.{key}"
        if kind is None:
            return f"`{name}`: {message}"
    return f"`{name}` must be {_field_hint(kind, last)}, got {value!r}"


def _bare(kind: Any) -> Any:
    """``kind`` without ``| None``."""
    args = [a for a in get_args(kind) if a is not type(None)]
    return args[0] if len(args) == 1 and len(get_args(kind)) == 2 else kind


def _fits(value: Any, kind: Any) -> bool:
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def _field_hint(kind: Any, key: str) -> str:
    """What a field of ``kind`` (named ``key``) takes, in words."""
    args = [a for a in get_args(kind) if a is not type(None)]
    origin = get_origin(kind)
    if kind is RiskTier or kind is Status or origin is Literal:
        return "one of " + ", ".join(get_args(kind))
    if origin is dict:
        if get_args(kind)[1] is ToolTier:
            return "a mapping of tool name to " + " | ".join(TOOL_TIERS)
        return "a mapping of names to numbers"
    if any(get_origin(a) is Literal for a in args):
        choices = [c for a in args if get_origin(a) is Literal for c in get_args(a)]
        return "one of " + ", ".join(choices)
    if origin in (tuple, frozenset) or any(get_origin(a) in (tuple, frozenset) for a in args):
        return "a list of names"
    if kind is str or str in args:
        return "a string (quote versions: '1.10')" if "version" in key else "a string"
    if kind is dt.date or dt.date in args:
        return "a date (YYYY-MM-DD)"
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return "a mapping"
    return "a number"


def _check(entry: AgentEntry) -> list[str]:
    """What the types cannot say: empty names, ranges, known SLOs, tiers of approved tools."""
    problems = [
        f"`{k}` must be a non-empty string"
        for k in ("agent_id", "owner", "oncall")
        if not getattr(entry, k).strip()
    ]
    for key in ("daily_budget_usd", "review_interval_days"):
        number = getattr(entry, key)
        if number is not None and (not math.isfinite(number) or number <= 0):
            problems.append(f"{key} must be positive, got {number}")
    for key, number in entry.slo.items():
        if key not in SLOS:
            close = difflib.get_close_matches(key, list(SLOS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"slo.{key} is not a known SLO{hint}; known: {', '.join(SLOS)}")
        elif key in _FRACTION_SLOS and not 0.0 <= number <= 1.0:
            problems.append(f"slo.{key} is a share between 0 and 1, got {number}")
        elif key not in _FRACTION_SLOS and not number > 0:
            problems.append(f"slo.{key} must be positive, got {number}")
    if entry.approved_tools is not None:
        stray = sorted(set(entry.tool_tiers) - entry.approved_tools)
        if stray:
            problems.append(f"tool_tiers names tools that are not approved: {stray}")
    if entry.retired_on is not None and entry.status != "retired":
        problems.append(f"retired_on is set but status is {entry.status}")
    return problems


def catalog_from_entries(entries: Iterable[AgentEntry], source: str = "<memory>") -> Catalog:
    """A catalog built in code (tests, tools), with the same duplicate check as the file."""
    agents: dict[str, AgentEntry] = {}
    for entry in entries:
        if entry.agent_id in agents:
            raise CatalogError(f"{source}: agent {entry.agent_id}: agent_id is listed twice")
        agents[entry.agent_id] = entry
    return Catalog(agents, source)
