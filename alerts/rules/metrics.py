"""The metrics rules test: each one SQL query over the store, registered by name.

The metrics of counts, sums, latencies and times read the window's rows of the minute
rollups, with the window's partial minutes at each end aggregated from the raw events
(processors/store/rollups.py): the same numbers as counting the events, at a cost that
grows with the window, not with the history. Latency percentiles come from the merged
histograms, within 1 % of the exact value (processors/store/histograms.py). Metrics that
need each session or each event (containment, sessions with a security event) read
the raw events of their window.

Each metric carries beside its SQL what it reads in Prometheus (``promql``, over the
series of processors/metrics/series.py), or why it has no equivalent there: the
Prometheus rule export writes its rules from that.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Final

from agentwatch.alerts.governance.signals import LIFECYCLE_SIGNALS
from agentwatch.alerts.rules.sql_metric import (
    SHARE,
    Metric,
    MetricRegistry,
    Sample,
    SqlMetric,
    Window,
)
from agentwatch.processors.metrics import series
from agentwatch.processors.metrics.promql import (
    CONTAINMENT,
    ERROR_RATE,
    EVENTS,
    FAILED_CHECKS,
    LLM_CALLS,
    LLM_P95,
    POLICY_CHECKS,
    CatalogSelected,
    Count,
    Counter,
    Exported,
    Promql,
    Quantile,
    Ratio,
    StoreOnly,
    in_ms,
)
from agentwatch.processors.store.definitions import CONTAINED
from agentwatch.processors.store.histograms import quantiles_sql
from agentwatch.processors.store.rollups import WINDOW_MEASURES, window_sql

_IN_WINDOW: Final = "ts >= $start AND ts < $end"
# An agent is silent when it has said nothing for longer than this many times its
# longest gap in the rule's window, and at least the floor.
SILENCE_FACTOR: Final = 1.5
SILENCE_FLOOR_S: Final = 600
# Gaps are measured between minutes of the rollups, so gaps inside one minute are not
# seen; they are under 60 s, which the floor makes irrelevant as long as this holds.
assert SILENCE_FLOOR_S >= SILENCE_FACTOR * 60


def _rows(*sql: str) -> str:
    """The window's rows (rollups.window_sql) as ``e``, with the measures ``sql`` uses."""
    used = set(re.findall(r"\be\.(\w+)", " ".join(sql)))
    return f"{window_sql([m for m in WINDOW_MEASURES if m in used or m == 'events'])} AS e"


def _n(condition: str = "true") -> str:
    """How many of the window's events meet the condition (0 when none)."""
    return f"coalesce(sum(e.events) FILTER (WHERE {condition}), 0)"


def _grouped(
    name: str,
    help: str,
    value: str,
    samples: str = "sum(e.events)",
    where: str = "true",
    by: tuple[str, ...] = ("agent_id",),
    unit: str = "",
    promql: Exported | None = None,
) -> SqlMetric:
    """An aggregate over the window's rows, per group."""
    keys = ", ".join(f"e.{k}" for k in by)
    sql = (
        f"SELECT {keys}, ({value})::DOUBLE AS value, ({samples})::BIGINT AS samples "
        f"FROM {_rows(value, samples, where)} WHERE ({where}) "
        + " ".join(f"AND e.{k} IS NOT NULL" for k in by)
        + f" GROUP BY {keys}"
    )
    return SqlMetric(name, help, by, sql, unit, promql=promql)


def _percentile(
    name: str, help: str, q: float, kind: str, by: tuple[str, ...], promql: Exported
) -> SqlMetric:
    """A latency percentile of one kind of event, from the window's merged histograms."""
    rows = (
        f"(SELECT e.* FROM {_rows('e.latency_ms')} WHERE e.kind = '{kind}' "
        + " ".join(f"AND e.{k} IS NOT NULL" for k in by)
        + ") AS r"
    )
    names = ", ".join(by)
    sql = (
        f"SELECT {names}, q0 AS value, samples FROM ({quantiles_sql(rows, by, 'latency_ms', [q])})"
    )
    return SqlMetric(name, help, by, sql, "ms", promql=promql)


def _governance(
    name: str, help: str, where: str, promql: Exported, by: tuple[str, ...] = ("agent_id",)
) -> SqlMetric:
    """Events of catalogued agents that break a catalog rule; value = samples = the count."""
    keys = ", ".join(f"e.{k}" for k in by)
    sql = (
        f"SELECT {keys}, sum(e.events)::DOUBLE AS value, sum(e.events)::BIGINT AS samples "
        f"FROM {_rows()} JOIN agent_catalog c ON c.agent_id = e.agent_id "
        f"WHERE ({where}) GROUP BY {keys}"
    )
    return SqlMetric(name, help, by, sql, "events", promql=promql)


def _unpinned_sql() -> str:
    parts = []
    for fld, extra in (
        ("agent_version", "true"),
        ("prompt_version", "e.kind = 'llm_call'"),
        ("model", "e.kind = 'llm_call'"),
    ):
        parts.append(
            f"SELECT e.agent_id, '{fld}' AS field, coalesce(e.{fld}, '(unset)') AS version, "
            "e.events FROM w AS e JOIN agent_catalog c ON c.agent_id = e.agent_id "
            f"WHERE coalesce(e.environment, 'prod') = 'prod' AND {extra} "
            f"AND c.pinned_{fld} IS NOT NULL AND e.{fld} IS DISTINCT FROM c.pinned_{fld}"
        )
    union = " UNION ALL ".join(parts)
    return (
        # The window's rows read once for the three fields, only the columns they compare.
        "WITH w AS MATERIALIZED (SELECT e.agent_id, e.environment, e.kind, e.agent_version, "
        f"e.prompt_version, e.model, e.events FROM {_rows()}) "
        "SELECT agent_id, field, version, sum(events)::DOUBLE AS value, "
        f"sum(events)::BIGINT AS samples FROM ({union}) GROUP BY agent_id, field, version"
    )


# Policy checks that failed (definitions.FAILED_CHECK), from the rollups' counts of its
# two parts.
_FAILED_CHECKS: Final = "sum(e.violations + e.blocked)"

BUILTIN_METRICS: Final[tuple[Metric, ...]] = (
    _grouped(
        "events",
        "events of the agent",
        "sum(e.events)",
        unit="events",
        promql=Promql(Count(EVENTS), Count(EVENTS)),
    ),
    _grouped(
        "failed_checks",
        "policy checks with outcome violation or blocked (samples: all checks)",
        _FAILED_CHECKS,
        where="e.kind = 'policy_check'",
        unit="checks",
        promql=Promql(Count(FAILED_CHECKS), Count(POLICY_CHECKS)),
    ),
    _grouped(
        "failed_check_rate",
        "share of policy checks with outcome violation or blocked",
        f"{_FAILED_CHECKS} / sum(e.events)",
        where="e.kind = 'policy_check'",
        unit=SHARE,
        promql=Promql(Ratio(FAILED_CHECKS, POLICY_CHECKS), Count(POLICY_CHECKS)),
    ),
    _grouped(
        "security_events",
        "security events: prompt injection, jailbreak, exfiltration attempts (samples: events)",
        _n("e.kind = 'security'"),
        unit="events",
        promql=Promql(Count(Counter(series.SECURITY_EVENTS)), Count(EVENTS)),
    ),
    _grouped(
        "error_rate",
        "share of events that are errors",
        "sum(e.errors) / sum(e.events)",
        unit=SHARE,
        promql=Promql(ERROR_RATE, Count(EVENTS)),
    ),
    _grouped(
        "tool_error_rate",
        "share of a tool's calls that failed, per agent and tool",
        # A tool call is an error when its status is (definitions.ERROR).
        "sum(e.errors) / sum(e.events)",
        where="e.kind = 'tool_call'",
        by=("agent_id", "tool_name"),
        unit=SHARE,
        promql=StoreOnly("tool call failures are not exported per tool (only per agent)"),
    ),
    _percentile(
        "llm_latency_p95_ms",
        "95th percentile of LLM call latency (within 1 %)",
        0.95,
        "llm_call",
        ("agent_id",),
        in_ms(LLM_P95),
    ),
    _percentile(
        "tool_latency_p95_ms",
        "95th percentile of a tool's call latency, per agent and tool (within 1 %)",
        0.95,
        "tool_call",
        ("agent_id", "tool_name"),
        in_ms(Quantile(0.95, series.TOOL_LATENCY)),
    ),
    SqlMetric(
        "containment_rate",
        "share of the sessions ended in the window that were resolved without escalation "
        "(samples: ended sessions; escalations looked up to an hour before the window)",
        ("agent_id",),
        "WITH x AS (SELECT DISTINCT session_id FROM events WHERE kind = 'escalation' "
        "AND ts >= $start - INTERVAL 1 HOUR AND ts < $end), "
        "ends AS (SELECT e.agent_id, e.resolution, x.session_id IS NOT NULL AS escalated "
        "FROM events e LEFT JOIN x ON x.session_id = e.session_id "
        f"WHERE e.kind = 'session_end' AND e.{_IN_WINDOW}) "
        f"SELECT agent_id, avg(CASE WHEN {CONTAINED} THEN 1.0 ELSE 0.0 END) AS value, "
        "count(*) AS samples FROM ends GROUP BY agent_id",
        unit=SHARE,
        before=dt.timedelta(hours=1),
        promql=Promql(CONTAINMENT, Count(CONTAINMENT.den)),
    ),
    _grouped(
        "cost_usd",
        "LLM spend of priced calls (samples: LLM calls; NULL when none was priced)",
        "CASE WHEN sum(e.priced_calls) > 0 THEN sum(e.cost_usd) END",
        where="e.kind = 'llm_call'",
        unit="USD",
        promql=Promql(Count(Counter(series.COST)), Count(LLM_CALLS)),
    ),
    _grouped(
        "unpriced_llm_calls",
        "LLM calls with no cost (no cost_usd and no price), per agent and model",
        "sum(e.events - e.priced_calls)",
        where="e.kind = 'llm_call'",
        by=("agent_id", "model"),
        unit="calls",
        promql=Promql(Count(Counter(series.UNPRICED)), Count(LLM_CALLS)),
    ),
    SqlMetric(
        "shadow_agent_events",
        "events from an agent_id the catalog does not list (shadow AI); none without a "
        "catalog, where there is no inventory to be missing from",
        ("agent_id",),
        "SELECT e.agent_id, sum(e.events)::DOUBLE AS value, sum(e.events)::BIGINT AS samples "
        f"FROM {_rows()} WHERE e.agent_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM agent_catalog c WHERE c.agent_id = e.agent_id) "
        "AND EXISTS (SELECT 1 FROM agent_catalog) GROUP BY e.agent_id",
        "events",
        promql=CatalogSelected(EVENTS, "unlisted"),
    ),
    _governance(
        "unapproved_model_calls",
        "LLM calls to a model outside the agent's approved_models",
        "e.kind = 'llm_call' AND e.model IS NOT NULL AND c.approved_models IS NOT NULL "
        "AND NOT list_contains(c.approved_models, e.model)",
        CatalogSelected(LLM_CALLS, "unapproved", "model", "approved_models"),
        by=("agent_id", "model"),
    ),
    _governance(
        "unapproved_tool_calls",
        "tool calls to a tool outside the agent's approved_tools",
        "e.kind = 'tool_call' AND e.tool_name IS NOT NULL AND c.approved_tools IS NOT NULL "
        "AND NOT list_contains(c.approved_tools, e.tool_name)",
        CatalogSelected(Counter(series.TOOL_CALLS), "unapproved", "tool_name", "approved_tools"),
        by=("agent_id", "tool_name"),
    ),
    SqlMetric(
        "unpinned_prod_events",
        "prod events whose agent_version, prompt_version or model differs from the pinned one, "
        "per agent, field and version found",
        ("agent_id", "field", "version"),
        _unpinned_sql(),
        "events",
        promql=StoreOnly("prompt_version is not an exported label"),
    ),
    _governance(
        "paused_agent_events",
        "events from an agent the catalog lists as paused",
        "c.status = 'paused'",
        CatalogSelected(EVENTS, "paused"),
    ),
    SqlMetric(
        "security_session_share",
        "share of the agent's sessions in the window with a security event of a category, "
        "per agent and security_category (samples: the agent's sessions)",
        ("agent_id", "security_category"),
        "WITH s AS (SELECT agent_id, count(DISTINCT session_id) AS sessions FROM events "
        f"WHERE {_IN_WINDOW} AND agent_id IS NOT NULL GROUP BY agent_id) "
        "SELECT e.agent_id, e.category AS security_category, "
        "count(DISTINCT e.session_id)::DOUBLE / s.sessions AS value, s.sessions AS samples "
        "FROM events e JOIN s ON s.agent_id = e.agent_id "
        f"WHERE e.{_IN_WINDOW} AND e.kind = 'security' AND e.category IS NOT NULL "
        "GROUP BY e.agent_id, e.category, s.sessions",
        SHARE,
        promql=StoreOnly("sessions are not exported per security category"),
    ),
    SqlMetric(
        "silence_ratio",
        "seconds since the last event of an active catalogued agent, over its normal "
        "silence: 1.5 times the longest gap between its events in the window, at least "
        "600 s (an agent not seen in the whole window has no data)",
        ("agent_id",),
        "WITH m AS (SELECT e.agent_id, e.window_start, min(e.first_ts) AS lo, "
        f"max(e.last_ts) AS hi, sum(e.events) AS n FROM {_rows('e.first_ts e.last_ts')} "
        # A filter, not a join: the minute's rows are grouped without carrying the catalog.
        "WHERE e.agent_id IN (SELECT agent_id FROM agent_catalog WHERE status = 'active') "
        "GROUP BY ALL), "
        "g AS (SELECT agent_id, hi, n, epoch_us(lo) - epoch_us(lag(hi) OVER "
        "(PARTITION BY agent_id ORDER BY window_start)) AS gap_us FROM m) "
        "SELECT agent_id, (epoch_us($end::TIMESTAMPTZ) - epoch_us(max(hi))) / "
        f"greatest({SILENCE_FLOOR_S}e6, {SILENCE_FACTOR} * coalesce(max(gap_us), 0)) AS value, "
        "sum(n)::BIGINT AS samples FROM g GROUP BY agent_id",
        promql=StoreOnly(
            "an agent's gaps between events are not exported; a silence_s rule with a fixed "
            "threshold exports"
        ),
    ),
    SqlMetric(
        "silence_s",
        "seconds since the last event of an active catalogued agent seen in the window "
        "(an agent not seen in the whole window has no data)",
        ("agent_id",),
        "SELECT e.agent_id, (epoch_us($end::TIMESTAMPTZ) - epoch_us(max(e.last_ts))) / 1e6 "
        f"AS value, sum(e.events)::BIGINT AS samples FROM {_rows('e.last_ts')} "
        "JOIN agent_catalog c ON c.agent_id = e.agent_id AND c.status = 'active' "
        "GROUP BY e.agent_id",
        "s",
        promql=CatalogSelected(EVENTS, "silent"),
    ),
)


def _drift(comparison: str, help: str) -> SqlMetric:
    """1 when the latest drift verdict of a signal in the window is `drift`, else 0.

    Reads ``drift_scores`` (written by ``agentwatch drift run``); samples are the
    current window's observations, so min_samples applies as for any metric.
    """
    return SqlMetric(
        f"drift_{comparison}",
        help,
        ("agent_id", "signal"),
        "SELECT agent_id, signal, "
        "CASE WHEN arg_max(verdict, window_end) = 'drift' THEN 1.0 ELSE 0.0 END AS value, "
        "arg_max(n_cur, window_end) AS samples FROM drift_scores "
        "WHERE window_end > $start AND window_end <= $end "
        f"AND comparison = '{comparison}' AND verdict <> 'insufficient_data' "
        "GROUP BY agent_id, signal",
        "verdict",
        promql=StoreOnly(
            "drift gauges do not say which comparison found the drift; "
            f"alert on {series.DRIFT_DETECTED.name} from `agentwatch drift run --metrics-port`"
        ),
    )


DRIFT_METRICS: tuple[Metric, ...] = (
    _drift("rolling", "1 when a signal of the agent drifted from its reference period"),
    _drift("release", "1 when a canary release differs from the stable one on a signal"),
)


# The agent lifecycle's signals (alerts/governance/signals.py): releases, reviews, retirement.
# Only retirement is in the catalog that the rule export reads.
_LIFECYCLE_PROMQL: Final[Mapping[str, Exported]] = {
    "retired_agent_events": CatalogSelected(EVENTS, "retired")
}
LIFECYCLE_METRICS: tuple[Metric, ...] = tuple(
    SqlMetric(
        *s,
        promql=_LIFECYCLE_PROMQL.get(
            s.name,
            StoreOnly("the agent registry (releases, reviews) is not exported to Prometheus"),
        ),
    )
    for s in LIFECYCLE_SIGNALS
)


def metrics() -> MetricRegistry:
    """A new registry of the built-in metrics (SQL over the store, drift verdicts, lifecycle)."""
    return MetricRegistry((*BUILTIN_METRICS, *DRIFT_METRICS, *LIFECYCLE_METRICS))


__all__ = [
    "BUILTIN_METRICS",
    "DRIFT_METRICS",
    "LIFECYCLE_METRICS",
    "SHARE",
    "SILENCE_FACTOR",
    "SILENCE_FLOOR_S",
    "Metric",
    "MetricRegistry",
    "Sample",
    "SqlMetric",
    "Window",
    "metrics",
]
