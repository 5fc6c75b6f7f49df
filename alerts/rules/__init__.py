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
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from agentwatch.alerts.governance.catalog import CATALOG_FIELDS, Catalog
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
from agentwatch.decoding import decode
from agentwatch.durations import DurationError, format_duration, parse_duration
from agentwatch.settings import ConfigError
from agentwatch.yamlfile import read_yaml

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
    """A rule file that cannot be used; each line names the file, key path and problem."""


# --------------------------------------------------------------------------- rules


class CatalogThreshold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A per-agent threshold read from the catalog, with a fallback for agents without one.

    A rule file writes it ``{catalog: FIELD, default: NUMBER}``.
    """

    field: str = msgspec.field(name="catalog")
    default: float | None = None

    def __str__(self) -> str:
        suffix = "" if self.default is None else f" (default {self.default:g})"
        return f"catalog {self.field}{suffix}"


Threshold = float | CatalogThreshold


@dataclass(frozen=True)
class Rule:
    """One alerting rule; see the module docstring and docs/alerts.md for the fields.

    The defaults here are also those of a rule file's optional keys.
    """

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
        """The condition in one line, e.g. ``failed_check_rate[1m] > 0.05``."""
        metric = f"{self.metric}[{format_duration(self.window)}]"
        if self.change:
            metric = f"{self.change}({metric} vs previous)"
        threshold = (
            self.threshold
            if isinstance(self.threshold, CatalogThreshold)
            else f"{self.threshold:g}"
        )
        return f"{metric} {self.op} {threshold}"


# --------------------------------------------------------------------------- rule files

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Duration = str | float  # a Prometheus duration, or seconds; see agentwatch.durations


class RuleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A rule as its file writes it. An optional key left out is None here and takes
    :class:`Rule`'s default, so each default is written once."""

    name: str
    metric: str
    window: Duration
    op: Op
    threshold: Threshold
    severity: Severity
    for_: Duration | None = msgspec.field(default=None, name="for")
    keep_firing_for: Duration | None = None
    min_samples: Annotated[int, msgspec.Meta(ge=1)] | None = None
    no_data: NoData | None = None
    change: Change | None = None
    confidence: float | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A rule file; each rule is decoded on its own so that its errors name its index."""

    rules: list[dict[str, Any]]


_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_LABEL: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RENAMED_METRICS: Final = {
    "violation_rate": "failed_check_rate",
    "policy_violations": "failed_checks",
}
"""Rule metrics renamed so that "violation" means one outcome only: old rule files are told."""
_RUNBOOK: Final = re.compile(r"^(runbooks/[a-z0-9][a-z0-9-]*\.yaml|https?://\S+)$")


def load_rules(
    directory: Path | None = None, registry: Mapping[str, Metric] | None = None
) -> list[Rule]:
    """Every rule of every ``*.yaml`` file in ``directory`` (the shipped set when None).

    Files are read in name order; a rule name used twice, in one file or two, is an error.
    Every problem of every file is reported at once, one line each.
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
    """Validate one parsed rule file: ``{rules: [...]}``, plus ``x-*`` keys for YAML anchors.

    Every rule is checked; each problem is one line naming ``source``, the key path
    (``rules[3].window``) and what is wrong.
    """
    known = registry if registry is not None else metrics()
    if isinstance(doc, Mapping):  # `x-...` keys hold anchors shared by rules
        doc = {k: v for k, v in doc.items() if not str(k).startswith("x-")}
    problems: list[str] = []
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, raw in enumerate(decode(doc, _RulesFile, "", source, error=RuleError).rules):
        try:
            where = f"rules[{index}]"
            rule = _rule(
                decode(raw, RuleSpec, where, source, error=RuleError), where, source, known
            )
        except RuleError as exc:
            problems.append(str(exc))
            continue
        if rule.name in names:
            problems.append(
                f"{source}: rules[{index}].name: {rule.name} is also rules[{names[rule.name]}]"
            )
            continue
        names[rule.name] = index
        rules.append(rule)
    if problems:
        raise RuleError("\n".join(problems))
    return rules


def _rule(spec: RuleSpec, where: str, source: str, known: Mapping[str, Metric]) -> Rule:
    """The rule ``spec`` describes, once it passes the checks its types cannot make."""

    def bad(key: str, problem: str) -> RuleError:
        return RuleError(f"{source}: {where}.{key}: {problem}")

    if not _NAME.match(spec.name):
        raise bad("name", f"must be letters, digits and _ starting with a letter: {spec.name!r}")
    metric = known.get(spec.metric)
    if metric is None and spec.metric in RENAMED_METRICS:
        new = RENAMED_METRICS[spec.metric]
        raise bad("metric", f"{spec.metric!r} is now {new!r} (violations and blocks together)")
    if metric is None:
        raise bad("metric", f"unknown metric {spec.metric!r}; known: {', '.join(sorted(known))}")
    _check_threshold(spec.threshold, metric, bad)
    if spec.confidence is not None:
        _check_confidence(spec.confidence, spec, metric, bad)
    window = _duration(spec.window, "window", bad)
    if window <= dt.timedelta(0):
        raise bad("window", "must be longer than 0")
    _check_labels(spec.labels or {}, metric, bad)
    _check_annotations(spec.annotations or {}, bad)
    given: dict[str, Any] = {
        "for_": None if spec.for_ is None else _duration(spec.for_, "for", bad),
        "keep_firing_for": (
            None
            if spec.keep_firing_for is None
            else _duration(spec.keep_firing_for, "keep_firing_for", bad)
        ),
        "min_samples": spec.min_samples,
        "no_data": spec.no_data,
        "labels": spec.labels,
        "annotations": spec.annotations,
    }
    return Rule(
        spec.name,
        spec.metric,
        spec.op,
        spec.threshold,
        window,
        severity=spec.severity,
        change=spec.change,
        confidence=spec.confidence,
        source=source,
        **{key: value for key, value in given.items() if value is not None},
    )


Bad = Callable[[str, str], RuleError]
"""Makes the error for a key of the rule being checked and what is wrong with it."""


def _duration(value: Duration, key: str, bad: Bad) -> dt.timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise bad(key, str(exc)) from None


def _check_threshold(threshold: Threshold, metric: Metric, bad: Bad) -> None:
    if not isinstance(threshold, CatalogThreshold):
        if not math.isfinite(threshold):
            raise bad("threshold", f"must be a finite number, got {threshold}")
        return
    if threshold.field not in CATALOG_FIELDS:
        fields = ", ".join(CATALOG_FIELDS)
        raise bad("threshold.catalog", f"must be one of {fields}, got {threshold.field!r}")
    if "agent_id" not in metric.by:
        raise bad(
            "threshold", f"a catalog threshold needs a per-agent metric; {metric.name} is not"
        )


def _check_confidence(confidence: float, spec: RuleSpec, metric: Metric, bad: Bad) -> None:
    """A confidence is strictly between 0.5 and 1, for a share compared one way."""
    if not 0.5 < confidence < 1:
        raise bad("confidence", f"must be between 0.5 and 1 (e.g. 0.9), got {confidence}")
    if metric.unit != SHARE:
        raise bad("confidence", f"applies to shares (unit {SHARE!r}); {metric.name} is not one")
    if spec.op not in UPPER_FOR:
        raise bad("confidence", f"needs op {', '.join(UPPER_FOR)}, got {spec.op!r}")
    if spec.change is not None:
        raise bad("confidence", "cannot be combined with change")


def _check_labels(labels: Mapping[str, str], metric: Metric, bad: Bad) -> None:
    for key in labels:
        if not _LABEL.match(key):
            raise bad(f"labels.{key}", "is not a valid label name")
        if key in RESERVED_LABELS or key in metric.by:
            raise bad(f"labels.{key}", "is set by the evaluator; choose another name")


def _check_annotations(annotations: Mapping[str, str], bad: Bad) -> None:
    if "summary" not in annotations:
        raise bad("annotations.summary", "is required: it is the first line people read")
    for key, template in annotations.items():
        try:
            render(template, {}, 1.0, 1.0, 1)
        except TemplateError as exc:
            raise bad(f"annotations.{key}", str(exc)) from None
    runbook = annotations.get("runbook_url")
    if runbook is not None and not _RUNBOOK.match(runbook):
        raise bad("annotations.runbook_url", f"must be runbooks/<id>.yaml or a URL: {runbook!r}")


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
