"""The agent catalog: who owns each agent, what it may use, and what it must deliver.

Governance needs a reference to compare the stream with: an event from an agent the
catalog does not know is shadow AI, a model or tool outside the agent's approved lists
is a policy breach, a prod release other than the pinned one is an unreviewed change,
and a retired agent that still talks is a process that was never switched off. The
catalog is that reference, kept in YAML next to the rules so it is reviewed like code.

It is loaded and validated in full before use: a typo in a key, a status that is not
one of ``active``, ``paused``, ``retired`` or a version written as a number (YAML would
turn ``1.10`` into ``1.1``) stops the load with a message naming the file, the agent and
the field, rather than silently disabling a check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

import polars as pl
import yaml

from agentwatch.settings import ConfigError

EXAMPLE_CATALOG: Final = Path(__file__).parent / "catalog.yaml"
"""The demo's example fleet: loaded only when named, never by default."""
NO_CATALOG: Final = "<no catalog>"

Status = Literal["active", "paused", "retired"]
RiskTier = Literal["low", "medium", "high", "critical"]
STATUSES: Final[tuple[str, ...]] = get_args(Status)
RISK_TIERS: Final[tuple[str, ...]] = get_args(RiskTier)

# Service levels an agent can promise; rules compare metrics with them by name
# (``slo.p95_latency_ms``). Values are numbers; each has a sanity range.
SLOS: Final[Mapping[str, str]] = {
    "p95_latency_ms": "95th percentile of LLM call latency, milliseconds",
    "containment_floor": "lowest acceptable share of sessions resolved without a human (0-1)",
    "error_rate_max": "highest acceptable share of events that are errors (0-1)",
    "tool_error_rate_max": "highest acceptable share of failed calls of one tool (0-1)",
}
_FRACTION_SLOS: Final = frozenset({"containment_floor", "error_rate_max", "tool_error_rate_max"})

# Fields a rule may use as its threshold, per agent (see ``AgentEntry.number``).
CATALOG_FIELDS: Final[tuple[str, ...]] = ("daily_budget_usd", *(f"slo.{k}" for k in SLOS))

_AGENT_KEYS: Final = frozenset(
    {
        "agent_id",
        "description",
        "owner",
        "oncall",
        "risk_tier",
        "status",
        "approved_models",
        "approved_tools",
        "pinned",
        "daily_budget_usd",
        "slo",
    }
)
_REQUIRED_KEYS: Final = ("agent_id", "owner", "oncall", "risk_tier", "status")
_PINNED_KEYS: Final = frozenset({"agent_version", "prompt_version", "model"})
_TOP_KEYS: Final = frozenset({"version", "agents"})
CATALOG_FORMAT_VERSION: Final = 1


class CatalogError(ConfigError):
    """A catalog that cannot be used; the message names the file, agent and field."""


@dataclass(frozen=True)
class Pinned:
    """The release reviewed for prod. ``None`` pins nothing for that field."""

    agent_version: str | None = None
    prompt_version: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class AgentEntry:
    """One agent as governance knows it.

    ``approved_models`` / ``approved_tools`` of ``None`` mean "not governed" (no check),
    while an empty set means "nothing approved": every call is a breach.
    """

    agent_id: str
    owner: str
    oncall: str
    risk_tier: RiskTier
    status: Status
    description: str = ""
    approved_models: frozenset[str] | None = None
    approved_tools: frozenset[str] | None = None
    pinned: Pinned = field(default_factory=Pinned)
    daily_budget_usd: float | None = None
    slo: Mapping[str, float] = field(default_factory=dict)

    def number(self, name: str) -> float | None:
        """A numeric field by its rule name: ``daily_budget_usd`` or ``slo.<key>``."""
        if name == "daily_budget_usd":
            return self.daily_budget_usd
        if name.startswith("slo."):
            return self.slo.get(name[4:])
        raise KeyError(f"unknown catalog field {name!r}; known: {', '.join(CATALOG_FIELDS)}")


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
}


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice: PyYAML would keep the last silently."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Keys written twice are refused; keys merged in with `<<: *anchor` may be overridden.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, error: type[ConfigError]) -> Any:
    """Parse one YAML file safely, with duplicate keys refused; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None


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
    unknown = sorted(k for k in set(doc) - _TOP_KEYS if not str(k).startswith("x-"))
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
    unknown = sorted(set(raw) - _AGENT_KEYS)
    if unknown:
        problems.append(f"{where}: unknown key(s) {unknown}; known: {sorted(_AGENT_KEYS)}")
    for key in _REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"{where}: `{key}` is required")
    strings = {k: _string(raw, k, where, problems) for k in ("agent_id", "owner", "oncall")}
    description = _string(raw, "description", where, problems, required=False) or ""
    status = _choice(raw, "status", STATUSES, where, problems)
    risk_tier = _choice(raw, "risk_tier", RISK_TIERS, where, problems)
    models = _name_set(raw, "approved_models", where, problems)
    tools = _name_set(raw, "approved_tools", where, problems)
    pinned = _pinned(raw.get("pinned"), where, problems)
    budget = _number(raw.get("daily_budget_usd"), f"{where}: daily_budget_usd", problems)
    if budget is not None and budget <= 0:
        problems.append(f"{where}: daily_budget_usd must be positive, got {budget}")
    slo = _slo(raw.get("slo"), where, problems)
    if len(problems) > start:
        return None
    return AgentEntry(
        agent_id=cast(str, strings["agent_id"]),
        owner=cast(str, strings["owner"]),
        oncall=cast(str, strings["oncall"]),
        risk_tier=cast(RiskTier, risk_tier),
        status=cast(Status, status),
        description=description,
        approved_models=models,
        approved_tools=tools,
        pinned=pinned,
        daily_budget_usd=budget,
        slo=slo,
    )


def _string(
    raw: Mapping[str, Any], key: str, where: str, problems: list[str], *, required: bool = True
) -> str | None:
    value = raw.get(key)
    if value is None:
        return None  # a missing required key is reported once, by the caller
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: `{key}` must be a non-empty string, got {value!r}")
        return None
    return value


def _choice(
    raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str, problems: list[str]
) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if value not in allowed:
        problems.append(f"{where}: `{key}` must be one of {', '.join(allowed)}, got {value!r}")
        return None
    return cast(str, value)


def _name_set(
    raw: Mapping[str, Any], key: str, where: str, problems: list[str]
) -> frozenset[str] | None:
    if key not in raw:
        return None
    value = raw[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: `{key}` must be a list of names, got {value!r}")
        return None
    if len(set(value)) != len(value):
        problems.append(f"{where}: `{key}` lists a name twice")
    return frozenset(value)


def _pinned(value: Any, where: str, problems: list[str]) -> Pinned:
    if value is None:
        return Pinned()
    if not isinstance(value, Mapping):
        problems.append(f"{where}: `pinned` must be a mapping of {sorted(_PINNED_KEYS)}")
        return Pinned()
    unknown = sorted(set(value) - _PINNED_KEYS)
    if unknown:
        problems.append(f"{where}: pinned: unknown key(s) {unknown}; known: {sorted(_PINNED_KEYS)}")
    fields: dict[str, str] = {}
    for key in sorted(_PINNED_KEYS & set(value)):
        v = value[key]
        if isinstance(v, str) and v:
            fields[key] = v
        else:
            problems.append(
                f"{where}: pinned.{key} must be a string, got {v!r} (quote versions: '1.10')"
            )
    return Pinned(**fields)


def _number(value: Any, what: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{what} must be a number, got {value!r}")
        return None
    return float(value)


def _slo(value: Any, where: str, problems: list[str]) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{where}: `slo` must be a mapping of {', '.join(SLOS)}")
        return {}
    out: dict[str, float] = {}
    for key, raw in value.items():
        if key not in SLOS:
            problems.append(f"{where}: slo.{key} is not a known SLO; known: {', '.join(SLOS)}")
            continue
        number = _number(raw, f"{where}: slo.{key}", problems)
        if number is None:
            continue
        if key in _FRACTION_SLOS and not 0.0 <= number <= 1.0:
            problems.append(f"{where}: slo.{key} is a share between 0 and 1, got {number}")
        elif key not in _FRACTION_SLOS and number <= 0:
            problems.append(f"{where}: slo.{key} must be positive, got {number}")
        else:
            out[key] = number
    return out


def catalog_from_entries(entries: Iterable[AgentEntry], source: str = "<memory>") -> Catalog:
    """A catalog built in code (tests, tools), with the same duplicate check as the file."""
    agents: dict[str, AgentEntry] = {}
    for entry in entries:
        if entry.agent_id in agents:
            raise CatalogError(f"{source}: agent {entry.agent_id}: agent_id is listed twice")
        agents[entry.agent_id] = entry
    return Catalog(agents, source)
