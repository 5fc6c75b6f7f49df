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
one more :class:`Metric` in the :class:`MetricRegistry` the rules are loaded with.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

from agentwatch.alerts.governance.catalog import CATALOG_FIELDS, Catalog, read_yaml
from agentwatch.alerts.rules.confidence import UPPER_FOR, wilson_bound
from agentwatch.alerts.rules.metrics import (
    BUILTIN_METRICS,
    DRIFT_METRICS,
    SHARE,
    Metric,
    MetricRegistry,
    Sample,
    SqlMetric,
    Window,
    metrics,
)
from agentwatch.alerts.rules.templates import TemplateError, render
from agentwatch.decoding import did_you_mean
from agentwatch.durations import DurationError, format_duration, parse_duration
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
    confidence: float | None = None  # judge a share's Wilson bound, not the share
    source: str = "<memory>"

    def holds(self, value: float, threshold: float) -> bool:
        return OPS[self.op](value, threshold)

    def judged(self, value: float, samples: int) -> float:
        """What is compared with the threshold: the value, or with ``confidence`` the
        bound of its interval on the far side of the threshold (see confidence.py)."""
        if self.confidence is None:
            return value
        return wilson_bound(value, samples, self.confidence, upper=UPPER_FOR[self.op])

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
        "confidence",
        "severity",
        "labels",
        "annotations",
    }
)
_REQUIRED_RULE_KEYS: Final = ("name", "metric", "window", "op", "threshold", "severity")


def load_rules(
    directory: Path | None = None, registry: Mapping[str, Metric] | None = None
) -> list[Rule]:
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
            loaded = parse_rules(read_yaml(path, RuleError), str(path), registry)
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


def parse_rules(
    doc: Any, source: str = "<memory>", registry: Mapping[str, Metric] | None = None
) -> list[Rule]:
    """Validate one parsed rule file: ``{rules: [...]}``; all problems are reported at once."""
    known = registry if registry is not None else metrics()
    if not isinstance(doc, Mapping) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{source}: a rule file is a mapping with a `rules` list")
    unknown = sorted(k for k in doc if k != "rules" and not str(k).startswith("x-"))
    problems: list[str] = []
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; expected rules, x-*")
    rules: list[Rule] = []
    names: set[str] = set()
    for index, raw in enumerate(doc["rules"]):
        rule = _parse_rule(raw, index, source, problems, known)
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


def _parse_rule(
    raw: Any, index: int, source: str, problems: list[str], known: Mapping[str, Metric]
) -> Rule | None:
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
    metric = known.get(metric_name) if isinstance(metric_name, str) else None
    if metric_name is not None and metric is None:
        bad(f"unknown metric {metric_name!r}; known: {', '.join(sorted(known))}")
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
    confidence = _confidence(raw.get("confidence"), metric, op, change, bad)
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
        confidence=confidence,
        source=source,
    )


def _confidence(
    value: Any, metric: Metric | None, op: Any, change: Any, bad: Callable[[str], None]
) -> float | None:
    """A confidence is a number strictly between 0.5 and 1, for a share compared one way."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 < value < 1:
        bad(f"confidence must be a number between 0.5 and 1 (e.g. 0.9), got {value!r}")
        return None
    if metric is not None and metric.unit != SHARE:
        bad(f"confidence applies to shares (metrics in unit {SHARE!r}); {metric.name} is not one")
    if op is not None and op not in UPPER_FOR:
        bad(f"confidence needs op {', '.join(UPPER_FOR)}, got {op!r}")
    if change is not None:
        bad("confidence cannot be combined with change")
    return float(value)


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


def rules_by_name(rules: Iterable[Rule]) -> dict[str, Rule]:
    return {r.name: r for r in rules}


def metric_for(rule: Rule, registry: Mapping[str, Metric] | None = None) -> Metric:
    """The metric a rule tests (from ``registry``, else the built-in metrics)."""
    found = (registry if registry is not None else metrics()).get(rule.metric)
    if found is None:
        raise RuleError(f"rule {rule.name}: metric {rule.metric!r} is not registered")
    return found


def by_labels(samples: Sequence[Sample]) -> dict[tuple[tuple[str, str], ...], Sample]:
    """Samples keyed by their sorted labels, for matching two windows group by group."""
    return {tuple(sorted(s.labels.items())): s for s in samples}


__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_RULES_DIR",
    "DRIFT_METRICS",
    "OPS",
    "SEVERITIES",
    "CatalogThreshold",
    "Metric",
    "MetricRegistry",
    "Rule",
    "RuleError",
    "Sample",
    "SqlMetric",
    "TemplateError",
    "Window",
    "by_labels",
    "load_rules",
    "metric_for",
    "metrics",
    "parse_rules",
    "render",
    "rules_by_name",
]
