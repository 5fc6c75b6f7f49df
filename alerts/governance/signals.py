"""The lifecycle's governance signals: traffic held to registered releases, reviews on time.

Each is one SQL query over ``events``, the registry's log tables (``releases``,
``catalog_changes``, ``access_reviews``) and the catalog (``agent_catalog``), with the
window as ``$start`` / ``$end``, returning the label columns, ``value`` and ``samples``
like every rule metric (alerts/rules). They are plain data here so the rule registry
can wrap them without this module importing it.

- ``unregistered_release_events``: prod events of an agent that has registered releases,
  carrying an ``agent_version`` none of them has. Agents without any registered release
  are not checked: registering the first release opts an agent in.
- ``unapproved_release_events``: prod events of a registered release that needs an
  approval (the agent's risk tier is high or critical) and has none.
- ``off_release_calls``: LLM calls to a model, or tool calls to a tool, that the release
  the event carries was not registered with (any environment).
- ``review_age_days``: days since the agent's last access review (or since the registry
  first recorded it, if never reviewed), for active agents the registry knows.
- ``retired_agent_events``: events of an agent the catalog lists as retired, or of one
  retired through the registry (``agents retire``) after its retirement, whatever the
  catalog file says.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class SignalSql(NamedTuple):
    name: str
    help: str
    by: tuple[str, ...]
    sql: str
    unit: str


_WINDOW: Final = "e.ts >= $start AND e.ts < $end"
_PROD: Final = "coalesce(e.environment, 'prod') = 'prod'"
_REGISTERED: Final = (
    "SELECT agent_id, version, arg_max(models, ts) AS models, arg_max(tools, ts) AS tools "
    "FROM releases WHERE event = 'registered' GROUP BY agent_id, version"
)

LIFECYCLE_SIGNALS: Final[tuple[SignalSql, ...]] = (
    SignalSql(
        "unregistered_release_events",
        "prod events of an agent with registered releases whose agent_version is not one of them",
        ("agent_id", "version"),
        "SELECT e.agent_id, coalesce(e.agent_version, '(unset)') AS version, "
        "count(*)::DOUBLE AS value, count(*) AS samples FROM events e "
        f"WHERE {_WINDOW} AND {_PROD} AND e.agent_id IN "
        "(SELECT agent_id FROM releases WHERE event = 'registered') "
        "AND NOT EXISTS (SELECT 1 FROM releases r WHERE r.event = 'registered' "
        "AND r.agent_id = e.agent_id AND r.version = e.agent_version) "
        "GROUP BY ALL",
        "events",
    ),
    SignalSql(
        "unapproved_release_events",
        "prod events of a registered release that needs an approval (high or critical risk) "
        "and has none",
        ("agent_id", "version"),
        "SELECT e.agent_id, e.agent_version AS version, count(*)::DOUBLE AS value, "
        "count(*) AS samples FROM events e JOIN agent_catalog c ON c.agent_id = e.agent_id "
        f"WHERE {_WINDOW} AND {_PROD} AND c.needs_release_approval "
        "AND EXISTS (SELECT 1 FROM releases r WHERE r.event = 'registered' "
        "AND r.agent_id = e.agent_id AND r.version = e.agent_version) "
        "AND NOT EXISTS (SELECT 1 FROM releases r WHERE r.event = 'approved' "
        "AND r.agent_id = e.agent_id AND r.version = e.agent_version) "
        "GROUP BY ALL",
        "events",
    ),
    SignalSql(
        "off_release_calls",
        "LLM or tool calls to a model or tool the release was not registered with, per "
        "agent, version, what (model or tool) and name",
        ("agent_id", "version", "what", "name"),
        f"WITH reg AS ({_REGISTERED}) "
        "SELECT agent_id, version, what, name, count(*)::DOUBLE AS value, count(*) AS samples "
        "FROM (SELECT e.agent_id, e.agent_version AS version, 'model' AS what, e.model AS name "
        "FROM events e JOIN reg r ON r.agent_id = e.agent_id AND r.version = e.agent_version "
        f"WHERE {_WINDOW} AND e.kind = 'llm_call' AND e.model IS NOT NULL "
        "AND NOT list_contains(r.models, e.model) "
        "UNION ALL SELECT e.agent_id, e.agent_version, 'tool', e.tool_name "
        "FROM events e JOIN reg r ON r.agent_id = e.agent_id AND r.version = e.agent_version "
        f"WHERE {_WINDOW} AND e.kind = 'tool_call' AND e.tool_name IS NOT NULL "
        "AND NOT list_contains(r.tools, e.tool_name)) GROUP BY ALL",
        "calls",
    ),
    SignalSql(
        "review_age_days",
        "days since the agent's last access review (or since the registry first recorded "
        "it), per active agent the registry knows",
        ("agent_id",),
        "SELECT c.agent_id, (epoch_us($end::TIMESTAMPTZ) - epoch_us(coalesce(r.last, a.first))) "
        "/ 86400e6 AS value, 1 AS samples FROM agent_catalog c "
        "LEFT JOIN (SELECT agent_id, max(ts) AS last FROM access_reviews GROUP BY ALL) r "
        "ON r.agent_id = c.agent_id "
        "LEFT JOIN (SELECT agent_id, min(ts) AS first FROM catalog_changes GROUP BY ALL) a "
        "ON a.agent_id = c.agent_id "
        "WHERE c.status = 'active' AND coalesce(r.last, a.first) IS NOT NULL AND $start < $end "
        "AND NOT EXISTS (SELECT 1 FROM catalog_changes x WHERE x.change = 'retired' "
        "AND x.agent_id = c.agent_id)",
        "days",
    ),
    SignalSql(
        "retired_agent_events",
        "events from an agent the catalog lists as retired, or from one retired through "
        "the registry (agents retire) after its retirement",
        ("agent_id",),
        "SELECT e.agent_id, count(*)::DOUBLE AS value, count(*) AS samples FROM events e "
        "LEFT JOIN agent_catalog c ON c.agent_id = e.agent_id "
        "LEFT JOIN (SELECT agent_id, min(ts) AS retired FROM catalog_changes "
        "WHERE change = 'retired' GROUP BY ALL) x ON x.agent_id = e.agent_id "
        f"WHERE {_WINDOW} AND (c.status = 'retired' OR e.ts > x.retired) GROUP BY ALL",
        "events",
    ),
)
