"""The metrics rules test: each one SQL query over the store, registered by name.

The metrics of counts, sums, latencies and times read the window's rows of the minute
rollups, with the window's partial minutes at each end aggregated from the raw events
(processors/store/rollups.py): the same numbers as counting the events, at a cost that
grows with the window, not with the history. Latency percentiles come from the merged
histograms, within 1 % of the exact value (processors/store/histograms.py). Metrics that
need each session or each event (containment, sessions with a security event) read
the raw events of their window.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import duckdb
import polars as pl

from agentwatch.alerts.governance.signals import LIFECYCLE_SIGNALS
from agentwatch.processors.store.histograms import quantiles_sql
from agentwatch.processors.store.rollups import WINDOW_MEASURES, window_sql


@dataclass(frozen=True)
class Window:
    """The half-open span of event time ``[start, end)`` a metric is computed over."""

    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class Sample:
    """One group's measurement: its labels (the metric's ``by`` columns), value, basis."""

    labels: Mapping[str, str]
    value: float | None
    samples: int


class Metric(Protocol):
    """What a rule can test. ``by`` names the label columns of each group; ``unit`` says
    what a value counts (:data:`SHARE` for a share of the samples, "" when unsaid)."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...

    @property
    def by(self) -> tuple[str, ...]: ...

    @property
    def unit(self) -> str: ...

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]: ...


# The unit of a metric whose value is a share of its samples (a rule on one may ask for
# a confidence, see confidence.py).
SHARE: Final = "share"

# The parameters of a metric's query (measure_windows puts columns in their place).
_PARAMETER: Final = re.compile(r"\$(start|end)\b")


@dataclass(frozen=True)
class SqlMetric:
    """A metric computed by one query with ``$start`` and ``$end`` parameters.

    The query returns the ``by`` columns, ``value`` (DOUBLE, may be NULL) and ``samples``
    (how many observations the value rests on: policy checks for a violation rate, LLM
    calls for a latency percentile, ended sessions for containment). ``before`` is how
    much event time before ``$start`` the query also reads: the evaluator's shared read
    of recent events must reach back that far.
    """

    name: str
    help: str
    by: tuple[str, ...]
    sql: str
    unit: str = ""
    before: dt.timedelta = dt.timedelta(0)

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
        rows = con.execute(self.sql, {"start": window.start, "end": window.end}).fetchall()
        return [self._sample(row) for row in rows]

    def measure_windows(
        self, con: duckdb.DuckDBPyConnection, windows: Sequence[Window]
    ) -> dict[Window, list[Sample]]:
        """What :meth:`measure` gives for each of ``windows``, in one query: this metric's
        own SQL as a lateral subquery of a table of the windows, so a replay of many
        instants costs one catalog-free scan instead of one query per window. The same
        rows; sums of doubles may differ in their last bits (another summation order)."""
        frame = pl.DataFrame(
            {
                "_aw_i": range(len(windows)),
                "_aw_start": [w.start for w in windows],
                "_aw_end": [w.end for w in windows],
            },
            schema={
                "_aw_i": pl.Int64,
                "_aw_start": pl.Datetime("us", "UTC"),
                "_aw_end": pl.Datetime("us", "UTC"),
            },
        )
        inner = _PARAMETER.sub(lambda m: f"_aw_w._aw_{m[1]}", self.sql)
        con.register("_aw_windows", frame.to_arrow())
        try:
            rows = con.execute(
                f"SELECT _aw_q.*, _aw_w._aw_i FROM _aw_windows AS _aw_w, LATERAL ({inner}) AS _aw_q"
            ).fetchall()
        finally:
            con.unregister("_aw_windows")
        out: dict[Window, list[Sample]] = {w: [] for w in windows}
        for row in rows:
            out[windows[row[-1]]].append(self._sample(row))
        return out

    def _sample(self, row: tuple[Any, ...]) -> Sample:
        n = len(self.by)
        return Sample(
            labels={k: "" if v is None else str(v) for k, v in zip(self.by, row[:n], strict=True)},
            value=None if row[n] is None or not math.isfinite(row[n]) else float(row[n]),
            samples=int(row[n + 1] or 0),
        )


class MetricRegistry(Mapping[str, Metric]):
    """The metrics rules may name, by name. There is no process-wide one: the rule loader
    and the evaluator are given a registry (the built-in metrics unless told otherwise)."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._by_name: dict[str, Metric] = {}
        for metric in metrics:
            self.register(metric)

    def register(self, metric: Metric, *, replace: bool = False) -> Metric:
        """Make ``metric`` available by name; refuses to shadow one by accident."""
        if metric.name in self._by_name and not replace:
            raise ValueError(f"a metric named {metric.name!r} is already registered")
        self._by_name[metric.name] = metric
        return metric

    def unregister(self, name: str) -> None:
        """Remove a metric; rules naming it then fail to load."""
        self._by_name.pop(name, None)

    def __getitem__(self, name: str) -> Metric:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


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
) -> SqlMetric:
    """An aggregate over the window's rows, per group."""
    keys = ", ".join(f"e.{k}" for k in by)
    sql = (
        f"SELECT {keys}, ({value})::DOUBLE AS value, ({samples})::BIGINT AS samples "
        f"FROM {_rows(value, samples, where)} WHERE ({where}) "
        + " ".join(f"AND e.{k} IS NOT NULL" for k in by)
        + f" GROUP BY {keys}"
    )
    return SqlMetric(name, help, by, sql, unit)


def _percentile(name: str, help: str, q: float, kind: str, by: tuple[str, ...]) -> SqlMetric:
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
    return SqlMetric(name, help, by, sql, "ms")


def _governance(name: str, help: str, where: str, by: tuple[str, ...] = ("agent_id",)) -> SqlMetric:
    """Events of catalogued agents that break a catalog rule; value = samples = the count."""
    keys = ", ".join(f"e.{k}" for k in by)
    sql = (
        f"SELECT {keys}, sum(e.events)::DOUBLE AS value, sum(e.events)::BIGINT AS samples "
        f"FROM {_rows()} JOIN agent_catalog c ON c.agent_id = e.agent_id "
        f"WHERE ({where}) GROUP BY {keys}"
    )
    return SqlMetric(name, help, by, sql, "events")


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


BUILTIN_METRICS: Final[tuple[Metric, ...]] = (
    _grouped("events", "events of the agent", "sum(e.events)", unit="events"),
    _grouped(
        "policy_violations",
        "policy checks with outcome violation or blocked (samples: all checks)",
        "sum(e.violations + e.blocked)",
        where="e.kind = 'policy_check'",
        unit="checks",
    ),
    _grouped(
        "violation_rate",
        "share of policy checks with outcome violation or blocked",
        "sum(e.violations + e.blocked) / sum(e.events)",
        where="e.kind = 'policy_check'",
        unit=SHARE,
    ),
    _grouped(
        "security_events",
        "security events: prompt injection, jailbreak, exfiltration attempts (samples: events)",
        _n("e.kind = 'security'"),
        unit="events",
    ),
    _grouped(
        "error_rate",
        "share of events that are errors",
        "sum(e.errors) / sum(e.events)",
        unit=SHARE,
    ),
    _grouped(
        "tool_error_rate",
        "share of a tool's calls that failed, per agent and tool",
        # A tool call is an error when its status is (definitions.ERROR).
        "sum(e.errors) / sum(e.events)",
        where="e.kind = 'tool_call'",
        by=("agent_id", "tool_name"),
        unit=SHARE,
    ),
    _percentile(
        "llm_latency_p95_ms",
        "95th percentile of LLM call latency (within 1 %)",
        0.95,
        "llm_call",
        ("agent_id",),
    ),
    _percentile(
        "tool_latency_p95_ms",
        "95th percentile of a tool's call latency, per agent and tool (within 1 %)",
        0.95,
        "tool_call",
        ("agent_id", "tool_name"),
    ),
    SqlMetric(
        "containment_rate",
        "share of the sessions ended in the window that were resolved without escalation "
        "(samples: ended sessions; escalations looked up to an hour before the window)",
        ("agent_id",),
        "WITH escalated AS (SELECT DISTINCT session_id FROM events WHERE kind = 'escalation' "
        "AND ts >= $start - INTERVAL 1 HOUR AND ts < $end) "
        "SELECT e.agent_id, avg(CASE WHEN e.resolution = 'resolved' AND x.session_id IS NULL "
        "THEN 1.0 ELSE 0.0 END) AS value, count(*) AS samples "
        "FROM events e LEFT JOIN escalated x ON x.session_id = e.session_id "
        f"WHERE e.kind = 'session_end' AND e.{_IN_WINDOW} GROUP BY e.agent_id",
        unit=SHARE,
        before=dt.timedelta(hours=1),
    ),
    _grouped(
        "cost_usd",
        "LLM spend of priced calls (samples: LLM calls; NULL when none was priced)",
        "CASE WHEN sum(e.priced_calls) > 0 THEN sum(e.cost_usd) END",
        where="e.kind = 'llm_call'",
        unit="USD",
    ),
    _grouped(
        "unpriced_llm_calls",
        "LLM calls with no cost (no cost_usd and no price), per agent and model",
        "sum(e.events - e.priced_calls)",
        where="e.kind = 'llm_call'",
        by=("agent_id", "model"),
        unit="calls",
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
    ),
    _governance(
        "unapproved_model_calls",
        "LLM calls to a model outside the agent's approved_models",
        "e.kind = 'llm_call' AND e.model IS NOT NULL AND c.approved_models IS NOT NULL "
        "AND NOT list_contains(c.approved_models, e.model)",
        by=("agent_id", "model"),
    ),
    _governance(
        "unapproved_tool_calls",
        "tool calls to a tool outside the agent's approved_tools",
        "e.kind = 'tool_call' AND e.tool_name IS NOT NULL AND c.approved_tools IS NOT NULL "
        "AND NOT list_contains(c.approved_tools, e.tool_name)",
        by=("agent_id", "tool_name"),
    ),
    SqlMetric(
        "unpinned_prod_events",
        "prod events whose agent_version, prompt_version or model differs from the pinned one, "
        "per agent, field and version found",
        ("agent_id", "field", "version"),
        _unpinned_sql(),
        "events",
    ),
    _governance(
        "paused_agent_events",
        "events from an agent the catalog lists as paused",
        "c.status = 'paused'",
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
    )


DRIFT_METRICS: tuple[Metric, ...] = (
    _drift("rolling", "1 when a signal of the agent drifted from its reference period"),
    _drift("release", "1 when a canary release differs from the stable one on a signal"),
)


# The agent lifecycle's signals (alerts/governance/signals.py): releases, reviews, retirement.
LIFECYCLE_METRICS: tuple[Metric, ...] = tuple(SqlMetric(*s) for s in LIFECYCLE_SIGNALS)


def metrics() -> MetricRegistry:
    """A new registry of the built-in metrics (SQL over the store, drift verdicts, lifecycle)."""
    return MetricRegistry((*BUILTIN_METRICS, *DRIFT_METRICS, *LIFECYCLE_METRICS))
