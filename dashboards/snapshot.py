"""The fleet overview's key panels as data, from Prometheus or from the store.

A snapshot is for people without Grafana (reports, e-mail, a README), so it shows the
panels a product owner reads first: the headline numbers, the trends and the per-agent
table. From Prometheus it runs the panels' own PromQL (every agent, environment and
version); from DuckDB it runs SQL over the analysts' views that computes the same
numbers from the landed events, for a data dir with no Prometheus beside it. Either way
the result is one ``Snapshot``, which ``render`` draws.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb

from agentwatch.clock import utc_now
from agentwatch.dashboards.boards import FLEET
from agentwatch.dashboards.panels import DAILY_BUDGET, PanelSpec
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.definitions import BLOCKED_ACTION, VIOLATION
from agentwatch.processors.store.histograms import quantiles_sql

STAT_KEYS: Final = (
    "sessions", "containment", "spend_today", "budget_used",
    "llm_p95", "error_rate", "violations", "blocked",
)  # fmt: skip
TREND_KEYS: Final = (
    "sessions_by_outcome", "containment_trend", "spend_by_agent", "llm_latency", "safety",
)  # fmt: skip
TABLE_KEY: Final = "agents"
# Points per trend line: enough for a smooth line, few enough to read.
POINTS: Final = 120
# Prometheus has a point per scrape (15 s in the deployment); a rate window spans at
# least four of them. DuckDB's finest view is per minute.
MIN_STEP_S: Final = 15
MIN_RATE_WINDOW_S: Final = 60
MIN_BUCKET_S: Final = 60


class SnapshotError(Exception):
    """The data source could not be read (unreachable, missing, or empty)."""


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> int:
        return max(1, round((self.end - self.start).total_seconds()))

    @property
    def step_s(self) -> int:
        """Seconds between the points of a trend read from Prometheus."""
        return max(MIN_STEP_S, math.ceil(self.seconds / POINTS))

    @property
    def rate_window_s(self) -> int:
        return max(MIN_RATE_WINDOW_S, self.step_s)

    @property
    def bucket_s(self) -> int:
        """Seconds per trend bucket read from DuckDB (whole minutes of ``metrics_1m``)."""
        return max(MIN_BUCKET_S, math.ceil(self.step_s / 60) * 60)

    @property
    def today_start(self) -> dt.datetime:
        """Midnight UTC of the day the window ends in: 'today' for the spend panels."""
        return self.end.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def start_of(self, panel: PanelSpec) -> dt.datetime:
        return self.today_start if panel.today else self.start


@dataclass(frozen=True)
class Line:
    label: str
    times: tuple[dt.datetime, ...]
    values: tuple[float, ...]


@dataclass
class Snapshot:
    window: Window
    source: str
    budget_usd: float
    stats: dict[str, float | None] = field(default_factory=dict)
    trends: dict[str, list[Line]] = field(default_factory=dict)
    # One dict per table row: row-label values, then one value per column title.
    table: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def panels() -> tuple[list[PanelSpec], list[PanelSpec], PanelSpec]:
        """The fleet overview's key panels: stats, trends, and the per-agent table."""
        return (
            [FLEET.panel(k) for k in STAT_KEYS],
            [FLEET.panel(k) for k in TREND_KEYS],
            FLEET.panel(TABLE_KEY),
        )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------- Prometheus


class PrometheusClient:
    """The two query endpoints of the Prometheus HTTP API, nothing more."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, endpoint: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/{endpoint}", data=body)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                doc = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise SnapshotError(f"Prometheus refused {params.get('query')!r}: {detail}") from exc
        except OSError as exc:
            raise SnapshotError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        if doc.get("status") != "success":
            raise SnapshotError(f"Prometheus error for {params.get('query')!r}: {doc}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def instant(self, expr: str, at: dt.datetime) -> list[dict[str, Any]]:
        return self._call("query", {"query": expr, "time": f"{at.timestamp():.3f}"})

    def range(self, expr: str, window: Window, step_s: int | None = None) -> list[dict[str, Any]]:
        return self._call("query_range", {
            "query": expr, "start": f"{window.start.timestamp():.3f}",
            "end": f"{window.end.timestamp():.3f}", "step": f"{step_s or window.step_s}s",
        })  # fmt: skip


def fill_variables(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name`` (and ``${name}``) with ``values[name]``, longest names first."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


def legend(template: str, labels: Mapping[str, str]) -> str:
    """Grafana's legend format: ``{{label}}`` replaced by the series' label value."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__")


def steps() -> int:
    """Queries a snapshot runs (each stat, each trend, the agents table): its progress."""
    stats, trends, _ = Snapshot.panels()
    return len(stats) + len(trends) + 1


def from_prometheus(
    url: str,
    span: dt.timedelta,
    budget_usd: float,
    progress: Callable[[int], None] = lambda n: None,
) -> Snapshot:
    """The key panels over the last ``span``, all agents, from their own PromQL."""
    end = utc_now().replace(microsecond=0)
    window = Window(end - span, end)
    client = PrometheusClient(url)
    snap = Snapshot(window, f"Prometheus at {url}", budget_usd)
    stats, trends, agents = Snapshot.panels()

    def fill(expr: str, seconds: int) -> str:
        return fill_variables(expr, {
            "environment": ".*", "agent": ".*", "version": ".*",
            DAILY_BUDGET.name: repr(float(budget_usd)),
            "__range": f"{seconds}s",
            "__rate_interval": f"{window.rate_window_s}s",
        })  # fmt: skip

    for panel in stats:
        seconds = round((end - window.start_of(panel)).total_seconds())
        result = client.instant(fill(panel.queries[0].expr, max(seconds, 1)), end)
        snap.stats[panel.key] = _finite(result[0]["value"][1]) if result else None
        progress(1)
    for panel in trends:
        lines = []
        for query in panel.queries:
            for series in client.range(fill(query.expr, window.seconds), window):
                points = [(float(t), _finite(v)) for t, v in series["values"]]
                kept = [(t, v) for t, v in points if v is not None]
                lines.append(Line(
                    legend(query.legend, series["metric"]),
                    tuple(dt.datetime.fromtimestamp(t, dt.UTC) for t, _ in kept),
                    tuple(v for _, v in kept if v is not None),
                ))  # fmt: skip
        snap.trends[panel.key] = sorted(lines, key=lambda line: line.label)
        progress(1)
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for query in agents.queries:
        for series in client.instant(fill(query.expr, window.seconds), end):
            key = tuple(series["metric"].get(label, "") for label in agents.row_labels)
            row = rows.setdefault(key, dict(zip(agents.row_labels, key, strict=True)))
            row[query.column] = _finite(series["value"][1])
    snap.table = sorted(rows.values(), key=lambda r: -(r.get(agents.queries[0].column) or 0))
    progress(1)
    return snap


# --------------------------------------------------------------------------- DuckDB

# The same numbers from the analysts' views (docs/sql.md): metrics_1m for counts and
# sums, the minute rollups' merged histograms for latency quantiles (quantiles do not
# add up across minutes; histograms do, within 1 %), events for blocked actions.
# Parameters: $start, $end (TIMESTAMPTZ); {step} is the bucket width in seconds.
_IN_WINDOW: Final = "window_start >= $start AND window_start < $end"
_EVENTS_IN_WINDOW: Final = "ts >= $start AND ts < $end"


def _llm_latency(keys: Sequence[str], columns: str, quantiles: Sequence[float]) -> str:
    """LLM call latency quantiles (q0, q1, ...) per ``keys``, from the minute rollups."""
    rows = (
        f"(SELECT {columns}latency_ms FROM minute_rollups WHERE kind = 'llm_call' AND {_IN_WINDOW})"
    )
    return quantiles_sql(rows, keys, "latency_ms", quantiles)


_BY_AGENT: Final = ("agent_id", "agent_version", "environment")

STAT_SQL: Final[Mapping[str, str]] = {
    "sessions": f"SELECT sum(sessions_started) FROM metrics_1m WHERE {_IN_WINDOW}",
    "containment": "SELECT sum(contained_sessions) / nullif(sum(sessions_ended), 0) "
    f"FROM metrics_1m WHERE {_IN_WINDOW}",
    "spend_today": f"SELECT sum(cost_usd) FROM metrics_1m WHERE {_IN_WINDOW}",
    "budget_used": f"SELECT sum(cost_usd) / $budget FROM metrics_1m WHERE {_IN_WINDOW}",
    "llm_p95": f"SELECT q0 / 1000 FROM ({_llm_latency((), '', (0.95,))})",
    "error_rate": f"SELECT sum(errors) / nullif(sum(events), 0) FROM metrics_1m WHERE {_IN_WINDOW}",
    "violations": "SELECT 100 * sum(policy_violations) / nullif(sum(sessions_started), 0) "
    f"FROM metrics_1m WHERE {_IN_WINDOW}",
    "blocked": f"SELECT count(*) FROM events WHERE {BLOCKED_ACTION} AND {_EVENTS_IN_WINDOW}",
}


def _buckets(source: str, columns: Sequence[str], aggregates: str, where: str) -> str:
    """Long-format trend rows (t, series, value): one series per named aggregate column."""
    time_column = "window_start" if source == "metrics_1m" else "ts"
    names = ", ".join(f'"{c}"' for c in columns)
    return f"""
    SELECT t, series, value FROM (
        UNPIVOT (
            SELECT time_bucket(INTERVAL '{{step}} seconds', {time_column}, $start) AS t,
                   {aggregates}
            FROM {source} WHERE {where} GROUP BY t
        ) ON {names} INTO NAME series VALUE value
    ) ORDER BY t
    """


TREND_SQL: Final[Mapping[str, str]] = {
    "sessions_by_outcome": _buckets(
        "metrics_1m", ("resolved", "escalated", "abandoned", "failed"),
        ", ".join(f'sum({r}_sessions) * 60 / {{step}} AS "{r}"'
                  for r in ("resolved", "escalated", "abandoned", "failed")),
        _IN_WINDOW,
    ),
    "containment_trend": _buckets(
        "metrics_1m", ("containment",),
        "sum(contained_sessions) / nullif(sum(sessions_ended), 0) AS containment", _IN_WINDOW,
    ),
    "spend_by_agent": f"""
        SELECT time_bucket(INTERVAL '{{step}} seconds', window_start, $start) AS t,
               agent_id AS series, sum(cost_usd) * 3600 / {{step}} AS value
        FROM metrics_1m WHERE {_IN_WINDOW} GROUP BY t, series ORDER BY t
    """,
    "llm_latency": f"""
        SELECT t, series, value FROM (
            UNPIVOT (
                SELECT t, q0 / 1000 AS p50, q1 / 1000 AS p95 FROM ({_llm_latency(
                    ("t",),
                    "time_bucket(INTERVAL '{step} seconds', window_start, $start) AS t, ",
                    (0.5, 0.95),
                )})
            ) ON p50, p95 INTO NAME series VALUE value
        ) ORDER BY t
    """,
    "safety": _buckets(
        "events", ("violations", "blocked actions"),
        f"count(*) FILTER (WHERE {VIOLATION}) * 60 / {{step}} AS violations, "
        f"count(*) FILTER (WHERE {BLOCKED_ACTION}) * 60 / {{step}} AS \"blocked actions\"",
        _EVENTS_IN_WINDOW,
    ),
}  # fmt: skip

# Column titles are the fleet table's own (catalog.AGENTS_TABLE).
TABLE_SQL: Final = f"""
    WITH m AS (
        SELECT agent_id, agent_version, environment,
               sum(sessions_started) AS "Sessions",
               sum(contained_sessions) / nullif(sum(sessions_ended), 0) AS "Containment",
               sum(cost_usd) AS "Spend",
               sum(errors) / nullif(sum(events), 0) AS "Error rate",
               100 * sum(policy_violations) / nullif(sum(sessions_started), 0)
                   AS "Violations / 100 sessions"
        FROM metrics_1m WHERE {_IN_WINDOW} GROUP BY ALL
    ), latency AS (
        SELECT agent_id, agent_version, environment, q0 / 1000 AS "LLM p95"
        FROM ({_llm_latency(_BY_AGENT, "agent_id, agent_version, environment, ", (0.95,))})
    )
    SELECT m.agent_id, m.agent_version, m.environment, "Sessions", "Containment", "Spend",
           "LLM p95", "Error rate", "Violations / 100 sessions"
    FROM m LEFT JOIN latency USING (agent_id, agent_version, environment)
    ORDER BY "Sessions" DESC NULLS LAST, m.agent_id
"""


def from_duckdb(
    db: Path,
    span: dt.timedelta,
    budget_usd: float,
    progress: Callable[[int], None] = lambda n: None,
) -> Snapshot:
    """The key panels over the ``span`` that ends with the newest landed event."""
    if not db.exists():
        raise SnapshotError(f"{db} does not exist: run `agentwatch process --db {db}` first")
    con = connect_lake(db)
    try:
        newest = con.execute("SELECT max(ts) FROM events").fetchone()
        if newest is None or newest[0] is None:
            raise SnapshotError(f"{db} has no events yet")
        end = newest[0].astimezone(dt.UTC).replace(second=0, microsecond=0)
        end += dt.timedelta(minutes=1)
        window = Window(end - span, end)
        snap = Snapshot(window, f"store {db}", budget_usd)
        stats, trends, _ = Snapshot.panels()
        for panel in stats:
            params: dict[str, object] = {"start": window.start_of(panel), "end": end}
            if "$budget" in STAT_SQL[panel.key]:
                params["budget"] = budget_usd
            row = con.execute(STAT_SQL[panel.key], params).fetchone()
            snap.stats[panel.key] = _finite(row[0]) if row else None
            progress(1)
        for panel in trends:
            sql = TREND_SQL[panel.key].replace("{step}", str(window.bucket_s))
            rows = con.execute(sql, {"start": window.start, "end": end}).fetchall()
            snap.trends[panel.key] = _lines(rows)
            progress(1)
        cursor = con.execute(TABLE_SQL, {"start": window.start, "end": end})
        names = [d[0] for d in cursor.description or []]
        snap.table = [
            {k: v if isinstance(v, str) else _finite(v) for k, v in zip(names, r, strict=True)}
            for r in cursor.fetchall()
        ]
        progress(1)
        return snap
    except duckdb.Error as exc:
        raise SnapshotError(f"{db}: {exc}") from exc
    finally:
        con.close()


def _lines(rows: Sequence[tuple[Any, ...]]) -> list[Line]:
    by_series: dict[str, list[tuple[dt.datetime, float]]] = {}
    for t, series, value in rows:
        number = _finite(value)
        if number is not None:
            by_series.setdefault(str(series), []).append((t.astimezone(dt.UTC), number))
    return [
        Line(name, tuple(t for t, _ in points), tuple(v for _, v in points))
        for name, points in sorted(by_series.items())
    ]
