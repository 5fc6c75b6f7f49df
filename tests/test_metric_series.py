"""processors/metrics/series.py is the one list of exported series: everything that
names a series (the /metrics endpoints, the dashboards, the Prometheus rule export) is
checked against it, and what it says a series counts in the store against what the
exporter counts."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.alerts.alertmanager.export import Ctx
from agentwatch.alerts.response.runbooks import step_failures_counter
from agentwatch.alerts.rules import DEFAULT_RULES_DIR, load_rules
from agentwatch.alerts.rules.metrics import SqlMetric, metrics
from agentwatch.dashboards import numbers
from agentwatch.frames import register
from agentwatch.processors.drift.signals import SIGNALS
from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.metrics import series
from agentwatch.processors.metrics.exporter import (
    COUNTERS,
    HISTOGRAMS,
    CounterDelta,
    FleetCollector,
    Source,
    batch_deltas,
)
from agentwatch.processors.metrics.promql import CatalogSelected, Promql, StoreOnly
from agentwatch.processors.metrics.series import BY_NAME, SERIES, Series
from agentwatch.processors.store.definitions import ERROR, IS_BLOCKED, VIOLATION
from agentwatch.processors.store.tables import DEAD_LETTERS_SCHEMA
from agentwatch.processors.store.views import ERROR_METRICS, POLICY_METRICS, SESSIONS
from tests.frames import at, events
from tests.test_dashboards import MODELS, expositions, expressions

ROOT = Path(__file__).resolve().parents[1]
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")
_NAME = re.compile(r"agentwatch_\w+")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def listed(name: str) -> Series:
    """The entry of a name as PromQL writes it (a histogram's parts included)."""
    if name in BY_NAME:
        return BY_NAME[name]
    for part in HISTOGRAM_PARTS:
        base = name.removesuffix(part)
        if base != name and base in BY_NAME and BY_NAME[base].kind == "histogram":
            return BY_NAME[base]
    raise AssertionError(f"{name} is not in processors/metrics/series.py")


def labels_of(name: str) -> set[str]:
    return set(listed(name).labels) | ({"le"} if name.endswith("_bucket") else set())


def check_promql(expr: str) -> None:
    """Every series ``expr`` names is listed; every label it matches on, groups or joins
    by is one of that series' labels (grouping labels: of a series it names)."""
    names = _NAME.findall(expr)
    assert names, expr
    for name, matchers in re.findall(r"(agentwatch_\w+)\{([^}]*)\}", expr):
        assert set(_MATCHER.findall(matchers)) <= labels_of(name), (name, expr)
    known = set().union(*(labels_of(n) for n in names))
    for group in _GROUPING.findall(expr):
        used = {label.strip() for label in group.split(",") if label.strip()}
        assert used <= known, (used - known, expr)


# --------------------------------------------------------------------------- the list


def test_each_series_is_listed_once_under_a_prometheus_name() -> None:
    assert len(BY_NAME) == len(SERIES)
    for each in SERIES:
        assert re.fullmatch(r"agentwatch_[a-z0-9_]+", each.name), each.name
        assert each.name.endswith("_total") == (each.kind == "counter"), each.name
        assert each.help and each.unit, each.name
        assert len(set(each.labels)) == len(each.labels), each.name


def test_no_module_but_the_list_spells_a_series_name() -> None:
    spelled = re.compile(r"""["'](agentwatch_\w+)["']""")
    found = []
    for package in ("agentwatch", "ingest", "processors", "alerts", "dashboards"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "processors" / "metrics" / "series.py":
                continue
            for name in spelled.findall(path.read_text()):
                if name.removesuffix("_total") in {s.family for s in SERIES}:
                    found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == []


# --------------------------------------------------------------------------- the endpoints


def families(text: str) -> dict[str, set[str]]:
    """Each exposed series (as the list names it) and the label names its samples carry;
    a counter's ``_created`` timestamps (prometheus_client's) belong to the counter."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = {k for sample in family.samples for k in sample.labels if k != "le"}
    return {k: v for k, v in out.items() if k.removesuffix("_created") + "_total" not in out}


def test_the_exporter_declares_exactly_the_processors_series() -> None:
    declared = {spec.name for spec in COUNTERS} | {spec.name for spec in HISTOGRAMS}
    health = {s.name for s in SERIES if s.endpoint == "processor" and s.counts is None}
    health -= {series.REDACTIONS.name}
    processor = {s.name for s in SERIES if s.endpoint == "processor"}
    assert declared | health == processor
    assert declared & health == set()
    for spec in COUNTERS:
        assert (*spec.labels, *(k for k, _ in spec.const)) == spec.series.labels


def test_every_endpoint_exposes_listed_series_with_their_labels() -> None:
    step_failures = CollectorRegistry()
    step_failures.register(step_failures_counter())
    texts = (*expositions(), generate_latest(step_failures).decode())
    exposed: dict[str, set[str]] = {}
    for text in texts:
        for name, labels in families(text).items():
            if name.startswith("agentwatch_"):
                exposed[name] = labels
    for name, labels in exposed.items():
        assert name in BY_NAME, name
        assert labels in (set(), set(BY_NAME[name].labels)), name


def test_every_listed_series_is_exposed_by_some_endpoint() -> None:
    counter = step_failures_counter()
    counter.labels(runbook="r", action="open_breaker").inc()
    collector = FleetCollector("t")
    collector.apply(batch_deltas(landed()[0]))
    registry = CollectorRegistry()
    registry.register(counter)
    registry.register(collector)
    texts = (*expositions(), generate_latest(registry).decode())
    exposed = set().union(*(families(text) for text in texts))
    # Redactions show only once a batch had something to redact.
    assert {s.name for s in SERIES} - exposed <= {series.REDACTIONS.name}


# --------------------------------------------------------------------------- the dashboards


def panel_queries() -> list[Any]:
    found = {e for model in MODELS.values() for e in expressions(model)}
    for model in MODELS.values():
        found |= {
            v["query"] for v in model["templating"]["list"] if "label_values" in str(v["query"])
        }
    return sorted(found)


@pytest.mark.parametrize("expr", panel_queries())
def test_every_series_a_dashboard_queries_is_listed_with_the_labels_it_uses(expr: str) -> None:
    check_promql(expr)
    picker = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
    if picker:
        assert all(picker[2] in labels_of(n) for n in _NAME.findall(picker[1])), expr


# --------------------------------------------------------------------------- the rules


def rule_promql(name: str) -> tuple[SqlMetric, Promql | CatalogSelected | StoreOnly]:
    metric = metrics()[name]
    assert isinstance(metric, SqlMetric) and metric.promql is not None, name
    return metric, metric.promql


@pytest.mark.parametrize("name", sorted(metrics()))
def test_every_rule_metric_reads_listed_series_or_says_why_it_cannot(name: str) -> None:
    metric, exported = rule_promql(name)
    if isinstance(exported, StoreOnly):
        assert exported.reason
    elif isinstance(exported, CatalogSelected):
        assert exported.counter.series in SERIES
        assert {exported.label} - {""} <= set(exported.counter.series.labels)
    else:
        ctx = Ctx(metric.by, "5m")
        for expr in (ctx.value(exported), ctx.samples(exported)):
            check_promql(expr)
        assert all(set(metric.by) <= labels_of(n) for n in _NAME.findall(ctx.value(exported)))


# A dashboard number and the rule metric of the same quantity, and what each reads.
SAME_QUANTITY = {
    "error_rate": numbers.error_rate(),
    "containment_rate": numbers.containment(),
    "llm_latency_p95_ms": numbers.llm_p95(),
}


@pytest.mark.parametrize("name", sorted(SAME_QUANTITY))
def test_a_dashboard_number_reads_the_series_its_rule_metric_reads(name: str) -> None:
    metric, exported = rule_promql(name)
    assert isinstance(exported, Promql)
    rule = Ctx(metric.by, "5m").value(exported)
    assert set(_NAME.findall(SAME_QUANTITY[name])) == set(_NAME.findall(rule))


def test_every_metric_a_shipped_rule_names_is_registered() -> None:
    registered = set(metrics())
    assert {rule.metric for rule in load_rules(DEFAULT_RULES_DIR)} <= registered


# A drift rate signal and the series counting the same events share one predicate.
SAME_EVENTS = {
    "error_rate": (ERROR, series.ERRORS),
    "violation_rate": (VIOLATION, series.POLICY_VIOLATIONS),
    "security_rate": ("kind = 'security'", series.SECURITY_EVENTS),
}


@pytest.mark.parametrize("signal", sorted(SAME_EVENTS))
def test_a_drift_signal_counts_with_the_predicate_of_its_series(signal: str) -> None:
    predicate, each = SAME_EVENTS[signal]
    assert each.counts is not None
    assert SIGNALS[signal].expr == each.counts.where == predicate


def test_the_block_rate_signal_counts_the_checks_a_blocked_matcher_selects() -> None:
    """Policy blocks only: agentwatch_blocked_actions_total adds security blocks."""
    assert SIGNALS["block_rate"].expr == IS_BLOCKED.sql
    assert SIGNALS["block_rate"].family == "policy"
    check_promql(
        f"{series.POLICY_CHECKS.name}{{{IS_BLOCKED.matcher(series.POLICY_CHECKS.labels)}}}"
    )


# --------------------------------------------------------------------------- the store

LLM: dict[str, Any] = {
    "kind": "llm_call", "model": "m", "input_tokens": 10, "output_tokens": 3,
    "cost_usd_effective": 0.01, "cost_source": "pricing",
}  # fmt: skip
BATCH: list[dict[str, Any]] = [
    {"kind": "session_start", "session_id": "s1", "ts": at(0)},
    LLM | {"session_id": "s1", "latency_ms": 800.0, "time_to_first_token_ms": 200.0,
           "ts": at(1)},
    LLM | {"session_id": "s1", "status": "error", "error_type": "RateLimit", "latency_ms": 90.0,
           "cost_source": "unpriced", "cost_usd_effective": None, "ts": at(2)},
    {"kind": "tool_call", "session_id": "s1", "tool_name": "kb", "latency_ms": 300.0,
     "status": "error", "error_type": "Timeout", "ts": at(3)},
    {"kind": "error", "session_id": "s1", "error_type": "Crash", "ts": at(4)},
    {"kind": "policy_check", "session_id": "s1", "policy_id": "pii", "outcome": "violation",
     "severity": "high", "ts": at(5)},
    {"kind": "policy_check", "session_id": "s1", "policy_id": "pii", "outcome": "blocked",
     "severity": "high", "ts": at(6)},
    {"kind": "policy_check", "session_id": "s1", "policy_id": "tone", "outcome": "pass",
     "severity": "low", "ts": at(7)},
    {"kind": "security", "session_id": "s1", "category": "injection", "action": "blocked",
     "severity": "high", "ts": at(8)},
    {"kind": "feedback", "session_id": "s1", "score": 4.0, "ts": at(9)},
    {"kind": "feedback", "session_id": "s1", "score": -1.0, "ts": at(10)},
    {"kind": "session_end", "session_id": "s1", "resolution": "resolved", "ts": at(12)},
    {"kind": "session_start", "session_id": "s2", "agent_id": "b", "ts": at(20)},
    {"kind": "escalation", "session_id": "s2", "agent_id": "b", "ts": at(21)},
    {"kind": "session_end", "session_id": "s2", "agent_id": "b", "resolution": "resolved",
     "ts": at(50)},
]  # fmt: skip


def landed() -> tuple[dict[Source, pl.DataFrame], duckdb.DuckDBPyConnection]:
    """One batch as the exporter sees it, and the same batch as the store's tables."""
    frame = events(*BATCH)
    letters = pl.DataFrame(
        {"reason_code": ["schema", "schema", "json"]},
        schema={"reason_code": DEAD_LETTERS_SCHEMA["reason_code"]},
    )
    frames: dict[Source, pl.DataFrame] = {
        "events": frame,
        "sessions": SessionTracker().update(frame),
        "dead_letters": letters,
    }
    con = duckdb.connect()
    register(con, "_events", frame)
    register(con, "_letters", letters)
    con.execute("CREATE TABLE events AS SELECT * FROM _events")
    con.execute("CREATE TABLE dead_letters AS SELECT * FROM _letters")
    for view in (SESSIONS, ERROR_METRICS, POLICY_METRICS):
        con.execute(view)
    return frames, con


Values = dict[tuple[tuple[str, ...], int], float]


def exported(frames: dict[Source, pl.DataFrame]) -> dict[str, Values]:
    """Per series, its values keyed by the labels the store splits by: a counter's value
    (0), a histogram's count (0) and sum (1)."""
    out: dict[str, Values] = defaultdict(lambda: defaultdict(float))
    for delta in batch_deltas(frames):
        entry = delta.spec.series
        over = entry.counts.over if entry.counts else ()
        keep = [i for i, n in enumerate(delta.spec.labels) if n not in over]
        if isinstance(delta, CounterDelta):
            for labels, value in delta.rows:
                out[entry.name][(tuple(labels[i] for i in keep), 0)] += value
            continue
        for labels, buckets, total in delta.rows:
            key = tuple(labels[i] for i in keep)
            out[entry.name][(key, 0)] += buckets[-1]
            out[entry.name][(key, 1)] += total
    return {name: dict(values) for name, values in out.items()}


def counted(con: duckdb.DuckDBPyConnection, entry: Series) -> Values:
    """What the entry's SQL meaning gives over the store's tables, keyed as :func:`exported`."""
    assert entry.counts is not None
    c = entry.counts
    sql_of = dict(c.labels)
    keys = [sql_of.get(n, n) for n in entry.labels if n not in c.over]
    values = ["count(*)", c.value] if entry.kind == "histogram" else [c.value]
    columns = ", ".join(f"coalesce(CAST({k} AS VARCHAR), '')" for k in keys)
    sql = f"SELECT {columns}, {', '.join(values)} FROM {c.table} WHERE {c.where} GROUP BY ALL"
    out: Values = {}
    for row in con.execute(sql).fetchall():
        for i, value in enumerate(row[len(keys) :]):
            out[(tuple(row[: len(keys)]), i)] = float(value)
    return out


STORED = [s for s in SERIES if s.counts is not None]


@pytest.mark.parametrize("entry", STORED, ids=[s.name for s in STORED])
def test_a_series_counts_in_the_store_what_the_exporter_counts(entry: Series) -> None:
    frames, con = landed()
    got = exported(frames).get(entry.name, {})
    want = counted(con, entry)
    assert want, f"the batch has no {entry.name}"
    assert got == pytest.approx(want)


def test_the_error_and_policy_views_count_what_the_exporter_counts() -> None:
    frames, con = landed()
    got = exported(frames)
    errors = con.execute(
        "SELECT agent_id, agent_version, environment, error_type, sum(errors)::DOUBLE "
        "FROM error_metrics_1m GROUP BY ALL"
    ).fetchall()
    assert {(tuple(r[:-1]), 0): r[-1] for r in errors} == got[series.ERRORS.name]
    violations = con.execute(
        "SELECT agent_id, agent_version, environment, policy_id, severity, sum(checks)::DOUBLE "
        "FROM policy_metrics_1m WHERE outcome = 'violation' GROUP BY ALL"
    ).fetchall()
    assert {(tuple(r[:-1]), 0): r[-1] for r in violations} == got[series.POLICY_VIOLATIONS.name]


def test_a_collector_renders_the_listed_help() -> None:
    frames, _ = landed()
    collector = FleetCollector("t")
    collector.apply(batch_deltas(frames))
    registry = CollectorRegistry()
    registry.register(collector)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        assert family.documentation == BY_NAME[name].help, name
