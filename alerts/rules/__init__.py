"""Alert rules and the metrics they test, in the spirit of Prometheus alerting rules.

A rule names a *metric* from a registry, a window ending at the evaluation time, a
comparison with a threshold (a number, or a field of the agent's catalog entry such as
``slo.p95_latency_ms``), how long the condition must hold (``for``) and how many
observations a verdict needs (``min_samples``). An optional ``change`` compares the
window with the one before it (ratio or delta) instead of with zero.

Each metric is one SQL query over ``events`` (and the catalog, registered as
``agent_catalog``) that returns one row per group: the group's label columns, ``value``
and ``samples``. Queries filter on ``ts`` with the window's bounds as parameters, so
DuckDB skips the Parquet row groups outside it. A new kind of condition (drift, say) is
one more :class:`Metric` given to :func:`register_metric`; rules name it like any other.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast, get_args

import duckdb

from agentwatch.alerts.governance.catalog import CATALOG_FIELDS, Catalog, read_yaml
from agentwatch.decoding import did_you_mean
from agentwatch.durations import DurationError, format_duration, parse_duration
from agentwatch.processors.store.definitions import ERROR, FAILED_CHECK
from agentwatch.settings import ConfigError

DEFAULT_RULES_DIR: Final = Path(__file__).parent

Severity = Literal["critical", "error", "warning", "info"]
SEVERITIES: Final[tuple[str, ...]] = get_args(Severity)
Change = Literal["ratio", "delta"]
NoData = Literal["ok", "keep"]

OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
# Labels every alert carries (see alerts.model.Alert); rules may not set them.
RESERVED_LABELS: Final = frozenset({"alertname", "severity"})


class RuleError(ConfigError):
    """A rule file that cannot be used; the message names the file, rule and field."""


# --------------------------------------------------------------------------- metrics


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
    """What a rule can test. ``by`` names the label columns of each group."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...

    @property
    def by(self) -> tuple[str, ...]: ...

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]: ...


@dataclass(frozen=True)
class SqlMetric:
    """A metric computed by one query with ``$start`` and ``$end`` parameters.

    The query returns the ``by`` columns, ``value`` (DOUBLE, may be NULL) and ``samples``
    (how many observations the value rests on: policy checks for a violation rate, LLM
    calls for a latency percentile, ended sessions for containment).
    """

    name: str
    help: str
    by: tuple[str, ...]
    sql: str
    unit: str = ""

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
        rows = con.execute(self.sql, {"start": window.start, "end": window.end}).fetchall()
        n = len(self.by)
        return [
            Sample(
                labels={
                    k: "" if v is None else str(v) for k, v in zip(self.by, row[:n], strict=True)
                },
                value=None if row[n] is None or not math.isfinite(row[n]) else float(row[n]),
                samples=int(row[n + 1] or 0),
            )
            for row in rows
        ]


_METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Make ``metric`` available to rules by name; refuses to shadow one by accident."""
    if metric.name in _METRICS and not replace:
        raise ValueError(f"a metric named {metric.name!r} is already registered")
    _METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric (a test's, or a plugin's being unloaded); rules naming it then fail."""
    _METRICS.pop(name, None)


def metrics() -> Mapping[str, Metric]:
    """The registry: every metric a rule may name."""
    return dict(_METRICS)


_IN_WINDOW: Final = "ts >= $start AND ts < $end"
_COST: Final = "coalesce(cost_usd_effective, cost_usd)"  # NULL when unpriced (views.py)
_PROD: Final = "coalesce(environment, 'prod') = 'prod'"


def _grouped(
    name: str,
    help: str,
    value: str,
    samples: str = "count(*)",
    where: str = "true",
    by: tuple[str, ...] = ("agent_id",),
    unit: str = "",
) -> SqlMetric:
    """An aggregate over the window's events, per group."""
    keys = ", ".join(by)
    sql = (
        f"SELECT {keys}, ({value})::DOUBLE AS value, ({samples})::BIGINT AS samples "
        f"FROM events WHERE {_IN_WINDOW} AND ({where}) "
        + " ".join(f"AND {k} IS NOT NULL" for k in by)
        + f" GROUP BY {keys}"
    )
    return SqlMetric(name, help, by, sql, unit)


def _governance(name: str, help: str, where: str, by: tuple[str, ...] = ("agent_id",)) -> SqlMetric:
    """Events of catalogued agents that break a catalog rule; value = samples = the count."""
    keys = ", ".join(f"e.{k}" for k in by)
    sql = (
        f"SELECT {keys}, count(*)::DOUBLE AS value, count(*) AS samples "
        f"FROM events e JOIN agent_catalog c ON c.agent_id = e.agent_id "
        f"WHERE e.{_IN_WINDOW} AND ({where}) GROUP BY {keys}"
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
            f"SELECT e.agent_id, '{fld}' AS field, coalesce(e.{fld}, '(unset)') AS version "
            f"FROM events e JOIN agent_catalog c ON c.agent_id = e.agent_id "
            f"WHERE e.{_IN_WINDOW} AND coalesce(e.environment, 'prod') = 'prod' AND {extra} "
            f"AND c.pinned_{fld} IS NOT NULL AND e.{fld} IS DISTINCT FROM c.pinned_{fld}"
        )
    union = " UNION ALL ".join(parts)
    return (
        "SELECT agent_id, field, version, count(*)::DOUBLE AS value, count(*) AS samples "
        f"FROM ({union}) GROUP BY agent_id, field, version"
    )


BUILTIN_METRICS: Final[tuple[Metric, ...]] = (
    _grouped("events", "events of the agent", "count(*)", unit="events"),
    _grouped(
        "policy_violations",
        "policy checks with outcome violation or blocked (samples: all checks)",
        f"count(*) FILTER (WHERE {FAILED_CHECK})",
        where="kind = 'policy_check'",
        unit="checks",
    ),
    _grouped(
        "violation_rate",
        "share of policy checks with outcome violation or blocked",
        f"count(*) FILTER (WHERE {FAILED_CHECK}) / count(*)",
        where="kind = 'policy_check'",
    ),
    _grouped(
        "security_events",
        "security events: prompt injection, jailbreak, exfiltration attempts (samples: events)",
        "count(*) FILTER (WHERE kind = 'security')",
        unit="events",
    ),
    _grouped(
        "error_rate",
        "share of events that are errors",
        f"count(*) FILTER (WHERE {ERROR}) / count(*)",
    ),
    _grouped(
        "tool_error_rate",
        "share of a tool's calls that failed, per agent and tool",
        "count(*) FILTER (WHERE status = 'error') / count(*)",
        where="kind = 'tool_call'",
        by=("agent_id", "tool_name"),
    ),
    _grouped(
        "llm_latency_p95_ms",
        "95th percentile of LLM call latency",
        "quantile_cont(latency_ms, 0.95)",
        where="kind = 'llm_call' AND latency_ms IS NOT NULL",
        unit="ms",
    ),
    _grouped(
        "tool_latency_p95_ms",
        "95th percentile of a tool's call latency, per agent and tool",
        "quantile_cont(latency_ms, 0.95)",
        where="kind = 'tool_call' AND latency_ms IS NOT NULL",
        by=("agent_id", "tool_name"),
        unit="ms",
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
    ),
    _grouped(
        "cost_usd",
        "LLM spend of priced calls (samples: LLM calls; NULL when none was priced)",
        f"sum({_COST})",
        where="kind = 'llm_call'",
        unit="USD",
    ),
    _grouped(
        "unpriced_llm_calls",
        "LLM calls with no cost (no cost_usd and no price), per agent and model",
        f"count(*) FILTER (WHERE {_COST} IS NULL)",
        where="kind = 'llm_call'",
        by=("agent_id", "model"),
        unit="calls",
    ),
    SqlMetric(
        "shadow_agent_events",
        "events from an agent_id the catalog does not list (shadow AI)",
        ("agent_id",),
        "SELECT agent_id, count(*)::DOUBLE AS value, count(*) AS samples FROM events e "
        f"WHERE {_IN_WINDOW} AND agent_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM agent_catalog c WHERE c.agent_id = e.agent_id) GROUP BY agent_id",
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
        "retired_agent_events",
        "events from an agent the catalog lists as retired",
        "c.status = 'retired'",
    ),
    _governance(
        "paused_agent_events",
        "events from an agent the catalog lists as paused",
        "c.status = 'paused'",
    ),
    SqlMetric(
        "silence_s",
        "seconds since the last event of an active catalogued agent seen in the window "
        "(an agent not seen in the whole window has no data)",
        ("agent_id",),
        "SELECT e.agent_id, (epoch_us($end::TIMESTAMPTZ) - epoch_us(max(e.ts))) / 1e6 AS value, "
        "count(*) AS samples FROM events e JOIN agent_catalog c "
        "ON c.agent_id = e.agent_id AND c.status = 'active' "
        f"WHERE e.{_IN_WINDOW} GROUP BY e.agent_id",
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

for _metric in (*BUILTIN_METRICS, *DRIFT_METRICS):
    register_metric(_metric)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class CatalogThreshold:
    """A per-agent threshold read from the catalog, with a fallback for agents without one."""

    field: str
    default: float | None = None

    def __str__(self) -> str:
        suffix = "" if self.default is None else f" (default {self.default:g})"
        return f"catalog {self.field}{suffix}"


Threshold = float | CatalogThreshold


@dataclass(frozen=True)
class Rule:
    """One alerting rule; see the module docstring and docs/alerts.md for the fields."""

    name: str
    metric: str
    op: str
    threshold: Threshold
    window: dt.timedelta
    for_: dt.timedelta = dt.timedelta(0)
    keep_firing_for: dt.timedelta = dt.timedelta(0)
    min_samples: int = 1
    severity: Severity = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    change: Change | None = None
    no_data: NoData = "ok"
    source: str = "<memory>"

    def holds(self, value: float, threshold: float) -> bool:
        return OPS[self.op](value, threshold)

    def threshold_for(self, labels: Mapping[str, str], catalog: Catalog) -> float | None:
        """The threshold for one group: a number, or the agent's catalog field (or default)."""
        if not isinstance(self.threshold, CatalogThreshold):
            return self.threshold
        entry = catalog.get(labels.get("agent_id", ""))
        value = entry.number(self.threshold.field) if entry is not None else None
        return self.threshold.default if value is None else value

    def describe(self) -> str:
        """The condition in one line, e.g. ``violation_rate[1m] > 0.05``."""
        metric = f"{self.metric}[{format_duration(self.window)}]"
        if self.change:
            metric = f"{self.change}({metric} vs previous)"
        threshold = (
            self.threshold
            if isinstance(self.threshold, CatalogThreshold)
            else f"{self.threshold:g}"
        )
        return f"{metric} {self.op} {threshold}"


_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_LABEL: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUNBOOK: Final = re.compile(r"^(runbooks/[a-z0-9][a-z0-9-]*\.yaml|https?://\S+)$")
_RULE_KEYS: Final = frozenset(
    {
        "name",
        "metric",
        "window",
        "op",
        "threshold",
        "change",
        "for",
        "keep_firing_for",
        "min_samples",
        "no_data",
        "severity",
        "labels",
        "annotations",
    }
)
_REQUIRED_RULE_KEYS: Final = ("name", "metric", "window", "op", "threshold", "severity")


def load_rules(directory: Path | None = None) -> list[Rule]:
    """Every rule of every ``*.yaml`` file in ``directory`` (the shipped set when None).

    Files are read in name order; a rule name used twice, in one file or two, is an error.
    """
    folder = directory or DEFAULT_RULES_DIR
    if not folder.is_dir():
        raise RuleError(f"rules directory {folder} does not exist")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            loaded = parse_rules(read_yaml(path, RuleError), str(path))
        except RuleError as exc:
            problems.append(str(exc))
            continue
        for rule in loaded:
            if rule.name in seen:
                problems.append(f"{path}: rule {rule.name} is also defined in {seen[rule.name]}")
                continue
            seen[rule.name] = str(path)
            rules.append(rule)
    if problems:
        raise RuleError("\n".join(problems))
    if not rules:
        raise RuleError(f"no rules found in {folder} (*.yaml)")
    return rules


def parse_rules(doc: Any, source: str = "<memory>") -> list[Rule]:
    """Validate one parsed rule file: ``{rules: [...]}``; all problems are reported at once."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{source}: a rule file is a mapping with a `rules` list")
    unknown = sorted(k for k in doc if k != "rules" and not str(k).startswith("x-"))
    problems: list[str] = []
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; expected rules, x-*")
    rules: list[Rule] = []
    names: set[str] = set()
    for index, raw in enumerate(doc["rules"]):
        rule = _parse_rule(raw, index, source, problems)
        if rule is None:
            continue
        if rule.name in names:
            problems.append(f"rule {rule.name}: defined twice")
            continue
        names.add(rule.name)
        rules.append(rule)
    if problems:
        raise RuleError(f"{source}: invalid rules:\n  " + "\n  ".join(problems))
    return rules


def _parse_rule(raw: Any, index: int, source: str, problems: list[str]) -> Rule | None:
    if not isinstance(raw, Mapping):
        problems.append(f"rules[{index}]: a rule must be a mapping")
        return None
    name = raw.get("name")
    where = f"rule {name}" if isinstance(name, str) else f"rules[{index}]"
    start = len(problems)

    def bad(message: str) -> None:
        problems.append(f"{where}: {message}")

    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        hint = did_you_mean(unknown, _RULE_KEYS)
        bad(f"unknown key(s) {unknown}{hint}; known: {sorted(_RULE_KEYS)}")
    for key in _REQUIRED_RULE_KEYS:
        if key not in raw:
            bad(f"`{key}` is required")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        bad(f"name must be letters, digits and _ starting with a letter, got {name!r}")
    metric_name = raw.get("metric")
    metric = _METRICS.get(metric_name) if isinstance(metric_name, str) else None
    if metric_name is not None and metric is None:
        bad(f"unknown metric {metric_name!r}; known: {', '.join(sorted(_METRICS))}")
    op = raw.get("op")
    if op is not None and op not in OPS:
        bad(f"op must be one of {' '.join(OPS)}, got {op!r}")
    threshold = _threshold(raw.get("threshold"), bad)
    if (
        isinstance(threshold, CatalogThreshold)
        and metric is not None
        and "agent_id" not in metric.by
    ):
        bad(f"a catalog threshold needs a per-agent metric; {metric_name} is not")
    window = _duration(raw, "window", bad)
    if window is not None and window <= dt.timedelta(0):
        bad("window must be longer than 0")
    for_ = _duration(raw, "for", bad) or dt.timedelta(0)
    keep = _duration(raw, "keep_firing_for", bad) or dt.timedelta(0)
    min_samples = raw.get("min_samples", 1)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        bad(f"min_samples must be a whole number >= 1, got {min_samples!r}")
    severity = raw.get("severity")
    if severity is not None and severity not in SEVERITIES:
        bad(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    change = raw.get("change")
    if change is not None and change not in get_args(Change):
        bad(f"change must be ratio or delta, got {change!r}")
    no_data = raw.get("no_data", "ok")
    if no_data not in get_args(NoData):
        bad(f"no_data must be ok (resolve) or keep (hold the state), got {no_data!r}")
    labels = _string_map(raw.get("labels"), "labels", bad)
    for key in labels:
        if not _LABEL.match(key):
            bad(f"label name {key!r} is not a valid label name")
        if key in RESERVED_LABELS or (metric is not None and key in metric.by):
            bad(f"label {key!r} is set by the evaluator; choose another name")
    annotations = _string_map(raw.get("annotations"), "annotations", bad)
    if "summary" not in annotations:
        bad("annotations.summary is required: it is the first line people read")
    for key, template in annotations.items():
        try:
            render(template, {}, 1.0, 1.0, 1)
        except TemplateError as exc:
            bad(f"annotations.{key}: {exc}")
    runbook = annotations.get("runbook_url")
    if runbook is not None and not _RUNBOOK.match(runbook):
        bad(f"annotations.runbook_url must be runbooks/<id>.yaml or a URL, got {runbook!r}")
    if len(problems) > start:
        return None
    assert window is not None and threshold is not None
    return Rule(
        name=cast(str, name),
        metric=cast(str, metric_name),
        op=cast(str, op),
        threshold=threshold,
        window=window,
        for_=for_,
        keep_firing_for=keep,
        min_samples=cast(int, min_samples),
        severity=cast(Severity, severity),
        labels=labels,
        annotations=annotations,
        change=cast("Change | None", change),
        no_data=cast(NoData, no_data),
        source=source,
    )


def _threshold(value: Any, bad: Callable[[str], None]) -> Threshold | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, Mapping) and set(value) <= {"catalog", "default"} and "catalog" in value:
        fld = value["catalog"]
        default = value.get("default")
        if fld not in CATALOG_FIELDS:
            bad(f"threshold.catalog must be one of {', '.join(CATALOG_FIELDS)}, got {fld!r}")
            return None
        if default is not None and (
            isinstance(default, bool) or not isinstance(default, int | float)
        ):
            bad(f"threshold.default must be a number, got {default!r}")
            return None
        return CatalogThreshold(fld, None if default is None else float(default))
    bad(f"threshold must be a number or {{catalog: FIELD, default: NUMBER}}, got {value!r}")
    return None


def _string_map(value: Any, key: str, bad: Callable[[str], None]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        bad(f"`{key}` must map names to strings, got {value!r}")
        return {}
    return dict(value)


def _duration(raw: Mapping[str, Any], key: str, bad: Callable[[str], None]) -> dt.timedelta | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return parse_duration(value)
    except DurationError as exc:
        bad(f"{key}: {exc}")
        return None


# --------------------------------------------------------------------------- templates


class TemplateError(ValueError):
    """An annotation template that uses something the renderer does not know."""


# The subset of Prometheus' Go templates that annotations use, so a rule reads the same
# here and in an exported Prometheus rule file: {{ $labels.NAME }}, {{ $value }},
# optionally piped to humanize, humanizePercentage or humanizeDuration; plus
# {{ $threshold }} and {{ $samples }}, which only this evaluator knows.
_PLACEHOLDER: Final = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_EXPR: Final = re.compile(
    r"^\$(labels\.(?P<label>[A-Za-z_][A-Za-z0-9_]*)|(?P<var>value|threshold|samples))"
    r"(\s*\|\s*(?P<fn>humanize|humanizePercentage|humanizeDuration))?$"
)


def render(
    template: str,
    labels: Mapping[str, str],
    value: float | None,
    threshold: float | None,
    samples: int | None,
) -> str:
    """Fill an annotation template for one alert."""

    def fill(match: re.Match[str]) -> str:
        expr = _EXPR.match(match.group(1))
        if expr is None:
            raise TemplateError(
                f"cannot render {match.group(0)}: use $labels.NAME, $value, $threshold or "
                "$samples, optionally | humanize, humanizePercentage or humanizeDuration"
            )
        if expr.group("label"):
            return labels.get(expr.group("label"), "")
        var = expr.group("var")
        number = {"value": value, "threshold": threshold}.get(var, samples)
        if number is None:
            return "n/a"
        return _humanize(float(number), expr.group("fn"))

    text = _PLACEHOLDER.sub(fill, template)
    if "{{" in text or "}}" in text:
        raise TemplateError(f"unbalanced braces in {template!r}")
    return text


def _humanize(number: float, fn: str | None) -> str:
    if fn == "humanizePercentage":
        return f"{number * 100:.4g}%"
    if fn == "humanizeDuration":
        return _human_duration(number)
    if fn == "humanize":
        for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(number) >= size:
                return f"{number / size:.4g}{suffix}"
        return f"{number:.4g}"
    return f"{number:g}"


def _human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.4g}ms"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    parts.append(f"{secs}s")
    return " ".join(parts)


def rules_by_name(rules: Iterable[Rule]) -> dict[str, Rule]:
    return {r.name: r for r in rules}


def metric_for(rule: Rule, registry: Mapping[str, Metric] | None = None) -> Metric:
    """The metric a rule tests (from ``registry`` or the global one)."""
    found = (registry or _METRICS).get(rule.metric)
    if found is None:
        raise RuleError(f"rule {rule.name}: metric {rule.metric!r} is not registered")
    return found


def by_labels(samples: Sequence[Sample]) -> dict[tuple[tuple[str, str], ...], Sample]:
    """Samples keyed by their sorted labels, for matching two windows group by group."""
    return {tuple(sorted(s.labels.items())): s for s in samples}
