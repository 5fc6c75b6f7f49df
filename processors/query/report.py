"""The fleet summary: a few SQL questions over the store, rendered as terminal tables.

Every figure is a query over the stored tables, so the summary shows what an analyst
would get from ``agentwatch sql``, not counters kept on the side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from agentwatch.processors.query.sql import query
from agentwatch.processors.store.definitions import BLOCKED, ERROR, FAILED_CHECK, VIOLATION
from agentwatch.terminal import Table


@dataclass(frozen=True)
class Section:
    title: str
    sql: str


SECTIONS: tuple[Section, ...] = (
    Section(
        "Events by kind",
        "SELECT kind, count(*) AS events FROM events GROUP BY kind ORDER BY events DESC",
    ),
    Section(
        "Per agent: health, cost and safety",
        f"""
        WITH per_agent AS (
            SELECT agent_id, round(100 * avg(contained::INT), 1) AS containment_pct,
                   count(*) AS sessions_ended
            FROM sessions WHERE ended_at IS NOT NULL GROUP BY agent_id
        )
        SELECT agent_id AS agent,
               count(*) AS events,
               any_value(p.sessions_ended) AS ended,
               any_value(p.containment_pct) AS "contained %",
               round(sum(cost_usd_effective), 4) AS "cost $",
               count(*) FILTER (cost_source = 'unpriced') AS unpriced,
               quantile_cont(latency_ms, 0.95) FILTER (kind = 'llm_call')::BIGINT AS "p95 ms",
               count(*) FILTER ({VIOLATION}) AS violations,
               count(*) FILTER ({BLOCKED}) AS blocked,
               count(*) FILTER (kind = 'escalation') AS escalated,
               count(*) FILTER (kind = 'security') AS security,
               count(*) FILTER ({ERROR}) AS errors
        FROM events LEFT JOIN per_agent p USING (agent_id)
        GROUP BY agent_id ORDER BY agent_id
        """,
    ),
    Section(
        "Sessions by resolution",
        """
        SELECT coalesce(resolution, '(still open)') AS resolution, count(*) AS sessions
        FROM (
            SELECT session_id, max(resolution) AS resolution
            FROM events WHERE kind IN ('session_start', 'session_end') GROUP BY session_id
        ) GROUP BY 1 ORDER BY sessions DESC
        """,
    ),
    Section(
        "Dead letters by reason",
        "SELECT reason_code, count(*) AS messages FROM dead_letters GROUP BY 1 ORDER BY 2 DESC",
    ),
)

TRY_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "Slowest LLM models (p95 latency)",
        "SELECT model, count(*) AS calls, round(quantile_cont(latency_ms, 0.95)) AS p95_ms "
        "FROM events WHERE kind = 'llm_call' GROUP BY model ORDER BY p95_ms DESC",
    ),
    (
        "Which policies are violated, and how badly",
        "SELECT policy_id, severity, count(*) AS n FROM events "
        f"WHERE {FAILED_CHECK} GROUP BY ALL ORDER BY n DESC",
    ),
    (
        "Sessions that escalated to a human, by intent",
        "SELECT s.intent, count(*) AS escalated FROM events s JOIN events e USING (session_id) "
        "WHERE s.kind = 'session_start' AND e.kind = 'escalation' GROUP BY 1 ORDER BY 2 DESC",
    ),
)


def render(db: Path, console: Console, sections: tuple[Section, ...] = SECTIONS) -> None:
    for section in sections:
        columns, rows = query(db, section.sql)
        console.print(_table(section.title, columns, rows))


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, name in enumerate(columns):
        numeric = bool(rows) and isinstance(rows[0][i], int | float)
        # The first column names the row (an agent, a kind): never cut it.
        table.add_column(
            name, justify="right" if numeric else "left", no_wrap=i == 0, min_width=len(name)
        )
    for row in rows:
        table.add_row(
            *("" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row)
        )
    if not rows:
        table.add_row(*("-" for _ in columns))
    return table
