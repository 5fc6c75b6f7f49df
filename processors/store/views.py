"""Analysts' views: sessions, windowed metrics and their breakdowns.

``metrics_1m``/``1h``/``1d`` read the rollup tier of their width (rollups.py), so their
cost is the range asked at that width; everything else is a view over the raw events,
recomputable from the rows it summarises, and a fix there applies to all history at
once. Definitions live in one place each: a session property (its model, its start,
whether it escalated) is computed by ``sessions`` and joined back, so the metrics cut
by model or prompt version agree with the per-session numbers.

Rules shared by every view:

- Buckets are event time (``ts``), cut in UTC whatever the reader's ``TimeZone``.
- Windowed views leave out ``_late`` rows (arrived after their minute was closed), as
  the live metrics do; ``late_events`` counts them so they are never silently lost.
  A NULL ``_late`` (rows written before the column existed) is not late.
- A cost is ``cost_usd_effective``, falling back to the event's own ``cost_usd`` for
  rows landed before costs were derived; an LLM call without one is *unpriced*: it is
  counted as such and adds nothing to cost sums, which are never a silent 0 for it.
"""

from __future__ import annotations

from typing import Final

from agentwatch.processors.store.definitions import BLOCKED, CONTAINED, ERROR, VIOLATION
from agentwatch.processors.store.histograms import count_sql, merged_sql, quantile_sql, ranks_sql
from agentwatch.processors.store.rollups import TIERS, tier_rows_sql

# The cost of an LLM call, NULL when unpriced (same as cost_source = 'unpriced' on rows
# the processor priced; older rows with neither column are judged by cost_usd alone).
_COST: Final = "coalesce(cost_usd_effective, cost_usd)"
_UNPRICED: Final = f"kind = 'llm_call' AND {_COST} IS NULL"
_NOT_LATE: Final = "NOT coalesce(_late, false)"
# Event order within a session: by event time, then by Kafka position, so that "first"
# is deterministic when two events share a timestamp.
_ORDER: Final = "{'ts': ts, 'partition': _partition, 'offset': _offset}"


def _bucket(width: str) -> str:
    # The timezone argument pins bucket edges to UTC for day (and any) widths.
    return f"time_bucket(INTERVAL '{width}', ts, 'UTC')"


def _first(column: str, condition: str | None = None) -> str:
    """The column's value on the session's first event that has it."""
    where = f"{column} IS NOT NULL" + (f" AND {condition}" if condition else "")
    return f"arg_min({column}, {_ORDER}) FILTER (WHERE {where})"


def _count(condition: str) -> str:
    return f"count(*) FILTER (WHERE {condition})"


def _total(column: str) -> str:
    # sum(BIGINT) is HUGEINT in DuckDB, which many clients read as float.
    return f"coalesce(sum({column}), 0)::BIGINT"


SESSIONS: Final = f"""
CREATE VIEW sessions AS
SELECT
    session_id, agent_id, agent_version, environment, intent, channel,
    started_at, ended_at,
    (epoch_us(ended_at) - epoch_us(started_at)) / 1e6 AS duration_s,
    CASE WHEN ended_at IS NULL THEN 'open' ELSE 'ended' END AS state,
    resolution,
    llm_calls, tool_calls, input_tokens, output_tokens, cache_read_tokens, reasoning_tokens,
    cost_usd, unpriced_llm_calls,
    policy_checks, policy_violations, policy_blocks, security_events, errors,
    escalated,
    CASE WHEN ended_at IS NOT NULL THEN {CONTAINED} END
        AS contained,
    feedback_score, model, prompt_version, first_event_at, last_event_at
FROM (
    SELECT
        session_id,
        {_first("agent_id")} AS agent_id,
        {_first("agent_version")} AS agent_version,
        {_first("environment")} AS environment,
        -- session_end carries the final intent, so the latest value wins.
        arg_max(intent, {_ORDER}) FILTER (WHERE intent IS NOT NULL) AS intent,
        {_first("channel", "kind = 'session_start'")} AS channel,
        coalesce(min(ts) FILTER (WHERE kind = 'session_start'), min(ts)) AS started_at,
        max(ts) FILTER (WHERE kind = 'session_end') AS ended_at,
        arg_max(resolution, {_ORDER}) FILTER (WHERE kind = 'session_end') AS resolution,
        {_count("kind = 'llm_call'")} AS llm_calls,
        {_count("kind = 'tool_call'")} AS tool_calls,
        {_total("input_tokens")} AS input_tokens,
        {_total("output_tokens")} AS output_tokens,
        {_total("cache_read_tokens")} AS cache_read_tokens,
        {_total("reasoning_tokens")} AS reasoning_tokens,
        sum({_COST}) FILTER (WHERE kind = 'llm_call') AS cost_usd,
        {_count(_UNPRICED)} AS unpriced_llm_calls,
        {_count("kind = 'policy_check'")} AS policy_checks,
        {_count(f"kind = 'policy_check' AND {VIOLATION}")} AS policy_violations,
        {_count(f"kind = 'policy_check' AND {BLOCKED}")} AS policy_blocks,
        {_count("kind = 'security'")} AS security_events,
        {_count(ERROR)} AS errors,
        coalesce(bool_or(kind = 'escalation'), false) AS escalated,
        avg(score) FILTER (WHERE kind = 'feedback') AS feedback_score,
        {_first("model", "kind = 'llm_call'")} AS model,
        {_first("prompt_version", "kind = 'llm_call'")} AS prompt_version,
        min(ts) AS first_event_at,
        max(ts) AS last_event_at
    FROM events
    GROUP BY session_id
)
"""


_GROUP: Final = (
    "window_start",
    "agent_id",
    "agent_version",
    "environment",
    "model",
    "prompt_version",
)
# Distributions of the metrics views: name, histogram column, the kind of row it is of.
_HISTOGRAMS: Final = (
    ("llm", "latency_ms", "llm_call"),
    ("tool", "latency_ms", "tool_call"),
    ("ttft", "ttft_ms", "llm_call"),
    ("duration", "duration_s", "session_end"),
)
# The views' quantile columns, in order: name, histogram, quantile.
_QUANTILES: Final = tuple(
    (f"{label}_p{round(q * 100)}_{unit}", h, q)
    for h, label, unit, qs in (
        ("llm", "llm_latency", "ms", (0.5, 0.95, 0.99)),
        ("tool", "tool_latency", "ms", (0.5, 0.95, 0.99)),
        ("duration", "session_duration", "s", (0.5, 0.95, 0.99)),
        ("ttft", "ttft", "ms", (0.5, 0.95)),
    )
    for q in qs
)


def _sum(condition: str | None = None, column: str = "events") -> str:
    # sum(BIGINT) is HUGEINT in DuckDB, which many clients read as float.
    where = f" FILTER (WHERE {condition})" if condition else ""
    return f"coalesce(sum({column}){where}, 0)::BIGINT"


def metrics_view(name: str, table: str) -> str:
    """One metrics view over a rollup tier: the 1m, 1h and 1d views differ only in it.

    They read the rollup ``table`` of their width (rollups.py), whose ``window_start`` is
    the bucket already, and the minute rows it does not hold yet, never the raw events,
    so a query costs what its range holds and what landed since the last tiering. An
    event is attributed to its session's model and prompt version when it has none itself,
    so session outcomes (containment, escalations) can be cut by both. Quantiles come from
    the merged histograms (histograms.py), within 1 % of the exact ``quantile_cont`` of the
    raw values; docs/sql.md shows the exact query over ``events`` for short ranges.
    """
    rows = (
        # A tier's window_start is its period already: a filter on it reaches the scan.
        "SELECT window_start, agent_id, agent_version, environment, "
        "coalesce(model, session_model) AS model, "
        "coalesce(prompt_version, session_prompt_version) AS prompt_version, * "
        "EXCLUDE (window_start, agent_id, agent_version, environment, model, prompt_version) "
        f"FROM ({tier_rows_sql(table)}) WHERE NOT late"
    )
    # Each step of a quantile is a projection of its own over the totals, so a query that
    # selects no quantile drops them all, down to the histograms' scan (EXPLAIN shows it).
    counts = ", ".join(f"{count_sql(f'_{h}')} AS _{h}_n" for h, _, _ in _HISTOGRAMS)
    ranks = ", ".join(f"{ranks_sql(f'_{h}', f'_{h}_n', q)} AS _r_{c}" for c, h, q in _QUANTILES)
    quantiles = ", ".join(
        f"{quantile_sql(f'_r_{c}', f'_{h}_n', q)} AS {c}" for c, h, q in _QUANTILES
    )
    return f"""
CREATE VIEW {name} AS
SELECT
    window_start, agent_id, agent_version, environment, model, prompt_version,
    events, sessions_started, sessions_ended, llm_calls, tool_calls, errors,
    errors / events AS error_rate,
    {quantiles},
    input_tokens, output_tokens, cache_read_tokens, reasoning_tokens,
    -- 0 without LLM calls; NULL when every call was unpriced (see unpriced_llm_calls).
    coalesce(priced_cost, CASE WHEN llm_calls = 0 THEN 0.0 END) AS cost_usd,
    unpriced_llm_calls,
    policy_checks, policy_violations, policy_blocks, security_events, escalations,
    contained_sessions,
    contained_sessions / nullif(sessions_ended, 0) AS containment_rate,
    resolved_sessions, escalated_sessions, abandoned_sessions, failed_sessions,
    feedback_count, feedback_mean
FROM (SELECT *, {ranks} FROM (SELECT *, {counts} FROM ({_totals(rows)})))
"""


def _totals(rows: str) -> str:
    """The counts and sums of a metrics view: one row per window and keys of ``rows``."""
    end = "kind = 'session_end'"
    histograms = ", ".join(
        merged_sql(column, f"kind = '{kind}'") + f" AS _{h}" for h, column, kind in _HISTOGRAMS
    )
    return f"""
    SELECT
        {", ".join(_GROUP)},
        {_sum()} AS events,
        {_sum("kind = 'session_start'")} AS sessions_started,
        {_sum(end)} AS sessions_ended,
        {_sum("kind = 'llm_call'")} AS llm_calls,
        {_sum("kind = 'tool_call'")} AS tool_calls,
        {_sum(column="errors")} AS errors,
        {_sum(column="input_tokens")} AS input_tokens,
        {_sum(column="output_tokens")} AS output_tokens,
        {_sum(column="cache_read_tokens")} AS cache_read_tokens,
        {_sum(column="reasoning_tokens")} AS reasoning_tokens,
        -- NULL unless a call was priced (a reprice's corrections may sum to 0).
        CASE WHEN sum(priced_calls) FILTER (WHERE kind = 'llm_call') > 0
            THEN sum(cost_usd) FILTER (WHERE kind = 'llm_call') END AS priced_cost,
        {_sum("kind = 'llm_call'", "events - priced_calls")} AS unpriced_llm_calls,
        {_sum("kind = 'policy_check'")} AS policy_checks,
        {_sum("kind = 'policy_check'", "violations")} AS policy_violations,
        {_sum("kind = 'policy_check'", "blocked")} AS policy_blocks,
        {_sum("kind = 'security'")} AS security_events,
        {_sum("kind = 'escalation'")} AS escalations,
        {_sum(end, "contained")} AS contained_sessions,
        {_sum(f"{end} AND resolution = 'resolved'")} AS resolved_sessions,
        {_sum(f"{end} AND resolution = 'escalated'")} AS escalated_sessions,
        {_sum(f"{end} AND resolution = 'abandoned'")} AS abandoned_sessions,
        {_sum(f"{end} AND resolution = 'failed'")} AS failed_sessions,
        {_sum("kind = 'feedback'")} AS feedback_count,
        sum(score_sum) FILTER (WHERE kind = 'feedback')
            / nullif(sum(scored) FILTER (WHERE kind = 'feedback'), 0) AS feedback_mean,
        {histograms}
    FROM ({rows})
    GROUP BY ALL
"""


def _breakdown(name: str, keys: str, condition: str, aggregates: str, columns: str = "*") -> str:
    """A 1-minute view of one kind of event by its own keys, late rows left out."""
    return f"""
CREATE VIEW {name} AS
SELECT {columns}
FROM (
    SELECT
        {_bucket("1 minute")} AS window_start, agent_id, agent_version, environment, {keys},
        {aggregates}
    FROM events
    WHERE {_NOT_LATE} AND {condition}
    GROUP BY ALL
)
"""


TOOL_METRICS: Final = _breakdown(
    "tool_metrics_1m",
    "tool_name",
    "kind = 'tool_call'",
    f"count(*) AS calls, {_count(ERROR)} AS errors, "
    "quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS q",
    "window_start, agent_id, agent_version, environment, tool_name, calls, errors, "
    "q[1] AS latency_p50_ms, q[2] AS latency_p95_ms, q[3] AS latency_p99_ms",
)
POLICY_METRICS: Final = _breakdown(
    "policy_metrics_1m",
    "policy_id, severity, outcome",
    "kind = 'policy_check'",
    "count(*) AS checks",
)
SECURITY_METRICS: Final = _breakdown(
    "security_metrics_1m", "category, action, severity", "kind = 'security'", "count(*) AS events"
)
ERROR_METRICS: Final = _breakdown(
    "error_metrics_1m", "error_type, kind", ERROR, "count(*) AS errors"
)

LATE_EVENTS: Final = f"""
CREATE VIEW late_events AS
SELECT
    {_bucket("1 minute")} AS window_start, agent_id,
    count(*) AS late_events,
    -- How far behind event time the worst of them reached Kafka.
    max(epoch_us(_kafka_ts) - epoch_us(ts)) / 1e6 AS max_delay_s
FROM events
WHERE _late
GROUP BY ALL
"""

UNPRICED_MODELS: Final = f"""
CREATE VIEW unpriced_models AS
SELECT
    model, provider,
    count(*) AS llm_calls,
    min(ts) AS first_seen,
    max(ts) AS last_seen
FROM events
WHERE {_UNPRICED}
GROUP BY ALL
"""


def view_statements() -> list[str]:
    """CREATE VIEW statements, run after ``events`` and ``dead_letters`` exist.

    ``sessions`` comes first: the metrics views join it for session properties.
    """
    return [
        SESSIONS,
        *(metrics_view(f"metrics_{every}", table) for table, every in TIERS.items()),
        TOOL_METRICS,
        POLICY_METRICS,
        SECURITY_METRICS,
        ERROR_METRICS,
        LATE_EVENTS,
        UNPRICED_MODELS,
    ]
