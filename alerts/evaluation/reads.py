"""What rules read: one read of the lake, shared by the rules measured over it.

A query through the lake costs a metadata database round trip (tens to hundreds of milliseconds
under load), however little it reads. So rules never query the lake themselves: a
:class:`RuleRead` opens one snapshot of the lake and copies, once, what a set of rules
needs of it (the tables their queries name, only the columns they name, only the event
time they reach back to) into temporary tables of the same names, which hide the lake's
on that read's own connection. The rules are then measured over those tables. Of the raw
events, a rule whose metric reads them only for its windows' partial minutes (the whole
minutes come from the rollups) gets only those minutes copied (:func:`event_spans`).

The evaluator takes one read per evaluation for all its rules and, on a live clock, a
fresh small read per round for the urgent ones (their runbooks contain agents), so each
round sees the events landed since the last at the cost of only what they need. A
backtest takes one per batch of instants (:func:`snapshot_rule_tables`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb

from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.rules import Metric, Rule, Sample, SqlMetric, metrics
from agentwatch.frames import register
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.rollups import EDGE_READS
from agentwatch.processors.store.tables import TABLE_SCHEMAS

# The lake tables rule metrics read, and the time column by which only the time before an
# evaluation is read (None: the whole table). Most metrics read their windows' whole
# minutes from the minute rollups and the partial minutes at each end from events. The
# registry's logs are small, and read whole.
RULE_TABLES: Final[dict[str, str | None]] = {
    "events": "ts",
    "minute_rollups": "window_start",
    "drift_scores": "ts",
    "releases": None,
    "catalog_changes": None,
    "access_reviews": None,
}
# How far before its window a metric that is not one query may read (escalations are
# looked up to an hour before the window).
UNKNOWN_BEFORE: Final = dt.timedelta(hours=1)

# Table -> the columns to copy (None: all of them).
Needs = Mapping[str, tuple[str, ...] | None]
Cache = dict[tuple[str, dt.datetime, dt.datetime], list[Sample]]
# A closed span of event time [first, last].
Span = tuple[dt.datetime, dt.datetime]
_MINUTE: Final = dt.timedelta(minutes=1)


def reach(rule: Rule, metric: Metric) -> dt.timedelta:
    """How far before its evaluation time ``rule`` reads events: its window (three for a
    change rule) plus what its metric reads before a window."""
    before = metric.before if isinstance(metric, SqlMetric) else UNKNOWN_BEFORE
    return rule.window * (3 if rule.change else 1) + before


def lookback(rules: Sequence[Rule], registry: Mapping[str, Metric] | None = None) -> dt.timedelta:
    """How much event time before an instant its rules read, together."""
    registry = registry if registry is not None else metrics()
    return max((reach(r, registry[r.metric]) for r in rules), default=dt.timedelta(0))


def reads_raw_events(metric: Metric) -> bool:
    """Whether ``metric`` reads events other than its window's partial minutes
    (``rollups.EDGE_READS``): every table read of ``events`` in its parsed query is
    counted, so a query that reads them any other way, or cannot be parsed, reads them
    raw (as does a metric that is not one query)."""
    if not isinstance(metric, SqlMetric):
        return True
    reads = _events_reads(metric.sql)
    edges = sum(metric.sql.count(read) for read in EDGE_READS)
    return reads is None or (reads > 0 and reads != edges)


@functools.cache
def _parsed(sql: str) -> Any:
    """The statement tree of ``sql`` as DuckDB parses it (None: it does not parse)."""
    with duckdb.connect() as con:
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    return None if tree.get("error") else tree


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def _events_reads(sql: str) -> int | None:
    """How many times ``sql`` reads the table ``events`` (None: it does not parse)."""
    tree = _parsed(sql)
    if tree is None:
        return None
    return sum(
        1
        for n in _nodes(tree)
        if n.get("type") == "BASE_TABLE" and str(n.get("table_name", "")).lower() == "events"
    )


def _starred(sql: str) -> set[str] | None:
    """The tables a ``SELECT *`` of ``sql`` reads directly (joined or not), all of whose
    columns it needs; None when it does not parse. A star over a subquery or a CTE
    needs only what that names."""
    tree = _parsed(sql)
    if tree is None:
        return None
    starred: set[str] = set()
    for node in _nodes(tree):
        if node.get("type") == "SELECT_NODE" and any(
            n.get("class") == "STAR" for n in _nodes(node.get("select_list"))
        ):
            starred |= set(_relations(node.get("from_table")))
    return starred


def _relations(ref: Any) -> Iterator[str]:
    if isinstance(ref, dict) and ref.get("type") == "BASE_TABLE":
        yield str(ref.get("table_name", "")).lower()
    elif isinstance(ref, dict) and ref.get("type") == "JOIN":
        yield from _relations(ref.get("left"))
        yield from _relations(ref.get("right"))


def event_spans(
    rules: Sequence[Rule], registry: Mapping[str, Metric], at: dt.datetime
) -> list[Span]:
    """The raw events ``rules`` read at ``at``, as merged spans of event time: a rule's
    whole reach when its metric reads them raw, else only the partial minutes at each
    end of each window it measures (the current one, and the two before for a change
    rule): what the windows' edge reads (``rollups.window_sql``) select, and a little
    more at most (the spans are closed), never less."""
    spans: list[Span] = []
    for rule in rules:
        metric = registry[rule.metric]
        if reads_raw_events(metric):
            spans.append((at - reach(rule, metric), at))
            continue
        if isinstance(metric, SqlMetric) and _events_reads(metric.sql) == 0:
            continue  # no events at all (drift verdicts, the registry's logs)
        for k in range(1, 4 if rule.change else 2):
            start, end = at - k * rule.window, at - (k - 1) * rule.window
            spans += [(start, min(end, _ceil_minute(start))), (_floor_minute(end), end)]
    merged: list[Span] = []
    for first, last in sorted(s for s in spans if s[0] < s[1]):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _floor_minute(t: dt.datetime) -> dt.datetime:
    t = t.astimezone(dt.UTC)
    return t - dt.timedelta(seconds=t.second, microseconds=t.microsecond)


def _ceil_minute(t: dt.datetime) -> dt.datetime:
    floor = _floor_minute(t)
    return floor if floor == t else floor + _MINUTE


def needs(used: Iterable[Metric]) -> dict[str, tuple[str, ...] | None]:
    """The rule tables ``used`` metrics name and the columns of each they name: every
    column of a table a query reads with ``*`` (or of every table for a metric that is
    not one query). A column left out fails its query, loudly, never silently."""
    wanted: dict[str, set[str] | None] = {}
    for metric in used:
        if not isinstance(metric, SqlMetric):
            return dict.fromkeys(RULE_TABLES)
        words = set(re.findall(r"\w+", metric.sql))
        starred = _starred(metric.sql)
        for table in RULE_TABLES:
            if table not in words:
                continue
            columns = {c for c in TABLE_SCHEMAS[table] if c in words}
            have = wanted.get(table, set())
            star = starred is None or table in starred
            wanted[table] = None if star or have is None else have | columns
    return {
        table: None
        if columns is None
        else tuple(c for c in TABLE_SCHEMAS[table] if c in columns or c == RULE_TABLES[table])
        for table, columns in wanted.items()
    }


def snapshot_rule_tables(
    con: duckdb.DuckDBPyConnection,
    at: dt.datetime,
    back: dt.timedelta,
    until: dt.datetime | None = None,
    tables: Needs | None = None,
    events: Sequence[Span] | None = None,
) -> None:
    """Copy ``tables`` (default: every rule table, whole rows) from ``back`` before ``at``
    (and up to ``until``) into temporary tables of the same names, which hide the lake's
    on ``con``: each table is read from the lake once. ``events``, when given, are the
    only spans of the events table copied."""
    row = con.execute("SELECT current_database()").fetchone()
    assert row is not None
    lake = row[0]
    since = at - back
    for table, columns in (tables if tables is not None else dict.fromkeys(RULE_TABLES)).items():
        column = RULE_TABLES[table]
        where, params = (f" WHERE {column} >= ?", [since]) if column else ("", [])
        if column and until is not None:
            where, params = where + f" AND {column} <= ?", [since, until]
        names = "*" if columns is None else ", ".join(columns)
        source = f"SELECT {names} FROM {lake}.main.{table}"
        if table == "events" and events is not None:
            # One plain range per span (not one OR): each scan skips the rest by statistics.
            select = " UNION ALL ".join(f"{source} WHERE ts >= ? AND ts <= ?" for _ in events)
            select, params = select or f"{source} WHERE false", [t for s in events for t in s]
        else:
            select = source + where
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {select}", params)


@dataclass
class RuleRead:
    """One snapshot of what some rules read, taken at ``at`` (the evaluation time of the
    rules measured over it), on a connection of its own; the rules measured over it so
    far, and their samples by metric and window."""

    at: dt.datetime
    con: duckdb.DuckDBPyConnection
    measured: set[str] = field(default_factory=set)
    cache: Cache = field(default_factory=dict)

    @classmethod
    def take(
        cls,
        db: Path,
        at: dt.datetime,
        rules: Sequence[Rule],
        registry: Mapping[str, Metric],
        catalog: Catalog,
    ) -> RuleRead:
        """Read what ``rules`` need at ``at``; raises what opening or reading the lake
        raises (:class:`~agentwatch.processors.store.lake.StoreMissing`, ``duckdb.Error``)."""
        con = connect_lake(db)
        try:
            con.execute("BEGIN TRANSACTION")  # one snapshot of the lake for every table
            used = [registry[r.metric] for r in rules]
            back, spans = lookback(rules, registry), event_spans(rules, registry, at)
            snapshot_rule_tables(con, at, back, tables=needs(used), events=spans)
            # The copies outlive the transaction: no lake transaction stays open while
            # the rules are measured and their transitions written.
            con.execute("COMMIT")
            register(con, "agent_catalog", catalog.frame())
        except BaseException:
            con.close()
            raise
        return cls(at, con)

    def close(self) -> None:
        self.con.close()
