"""``agentwatch alerts export-prometheus``: the alert rules as Prometheus alerting rules.

Why: teams that already run Prometheus and Alertmanager can alert on agentwatch's
exported metrics with the same rules, thresholds and annotations, and route them with
their own Alertmanager. Each rule's metric is rewritten as PromQL over the metrics the
processor exports (``processors/metrics/exporter.py``): counts become ``increase`` over the
rule's window, rates become ratios of such increases, percentiles come from the latency
histograms (so they are as exact as the buckets), ``change`` compares with the window
before (``offset``), and ``min_samples`` becomes an ``and`` on the sample count.

The catalog is read at export time: per-agent thresholds (``{catalog: slo.x}``) become
one Prometheus rule per distinct threshold under the same alert name, each selecting its
agents, and the governance rules (shadow AI, unapproved models and tools, retired or
paused agents) select by the catalog's lists. Export again after the catalog changes.

Annotations keep their Prometheus templates; ``$threshold`` becomes the number and
``$samples`` a ``query`` of the sample count. Rules whose metric has no equivalent among
the exported metrics are left out and listed, with the reason, at the top of the file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.rules import CatalogThreshold, Rule
from agentwatch.alerts.rules.confidence import UPPER_FOR, bound_promql
from agentwatch.durations import format_duration
from agentwatch.processors.metrics import series

# The series the rules read (processors/metrics/series.py).
EVENTS = series.EVENTS.name
ERRORS = series.ERRORS.name
POLICY_CHECKS = series.POLICY_CHECKS.name
SECURITY = series.SECURITY_EVENTS.name
LLM_CALLS = series.LLM_CALLS.name
TOOL_CALLS = series.TOOL_CALLS.name
COST = series.COST.name
UNPRICED = series.UNPRICED.name
SESSIONS = series.SESSIONS_ENDED.name
CONTAINED = series.SESSIONS_CONTAINED.name
LLM_LATENCY = series.LLM_LATENCY.name
TOOL_LATENCY = series.TOOL_LATENCY.name

# Metrics with no exported equivalent, and why.
UNSUPPORTED: Mapping[str, str] = {
    "tool_error_rate": "tool call failures are not exported per tool (only per agent)",
    "unpinned_prod_events": "prompt_version is not an exported label",
    "security_session_share": "sessions are not exported per security category",
    "silence_ratio": "an agent's gaps between events are not exported; a silence_s rule "
    "with a fixed threshold exports",
    **dict.fromkeys(
        ("drift_rolling", "drift_release"),
        "drift gauges do not say which comparison found the drift; "
        f"alert on {series.DRIFT_DETECTED.name} from `agentwatch drift run --metrics-port`",
    ),
    **dict.fromkeys(
        (
            "unregistered_release_events",
            "unapproved_release_events",
            "off_release_calls",
            "review_age_days",
        ),
        "the agent registry (releases, reviews) is not exported to Prometheus",
    ),
}


def q(value: str) -> str:
    """A PromQL string literal."""
    return json.dumps(value)


_RE2_META = re.compile(r"([.+*?()\[\]{}|^$\\])")


def regex_of(values: Sequence[str]) -> str:
    """An RE2 alternation that matches exactly these values (anchored by PromQL)."""
    return "|".join(_RE2_META.sub(r"\\\1", v) for v in sorted(values))


@dataclass(frozen=True)
class Query:
    """How one metric reads in PromQL, given the group labels and extra matchers."""

    by: tuple[str, ...]
    value: Callable[[Ctx], str]
    samples: Callable[[Ctx], str]


@dataclass(frozen=True)
class Ctx:
    by: tuple[str, ...]
    window: str
    offset: str = ""
    matchers: tuple[str, ...] = ()

    def sel(self, metric: str, *extra: str) -> str:
        matchers = (*extra, *self.matchers)
        return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric

    def sum_increase(self, metric: str, *extra: str) -> str:
        off = f" offset {self.offset}" if self.offset else ""
        return (
            f"sum by ({', '.join(self.by)}) "
            f"(increase({self.sel(metric, *extra)}[{self.window}]{off}))"
        )

    def share(self, num: str, den: str) -> str:
        """``num / den``, reading a missing numerator as 0 (no errors is a rate of 0)."""
        return f"(({num}) or (0 * {den})) / ({den})"

    def p95_ms(self, histogram: str) -> str:
        off = f" offset {self.offset}" if self.offset else ""
        by = ", ".join((*self.by, "le"))
        return (
            f"histogram_quantile(0.95, sum by ({by}) "
            f"(rate({self.sel(histogram + '_bucket')}[{self.window}]{off}))) * 1000"
        )


def _count(metric: str, *extra: str) -> Callable[[Ctx], str]:
    return lambda c: c.sum_increase(metric, *extra)


def _share(num: tuple[str, ...], den: tuple[str, ...]) -> Callable[[Ctx], str]:
    return lambda c: c.share(c.sum_increase(*num), c.sum_increase(*den))


AGENT = ("agent_id",)
VIOLATION = 'outcome=~"violation|blocked"'

QUERIES: Mapping[str, Query] = {
    "events": Query(AGENT, _count(EVENTS), _count(EVENTS)),
    "policy_violations": Query(AGENT, _count(POLICY_CHECKS, VIOLATION), _count(POLICY_CHECKS)),
    "violation_rate": Query(
        AGENT, _share((POLICY_CHECKS, VIOLATION), (POLICY_CHECKS,)), _count(POLICY_CHECKS)
    ),
    "security_events": Query(AGENT, _count(SECURITY), _count(EVENTS)),
    "error_rate": Query(AGENT, _share((ERRORS,), (EVENTS,)), _count(EVENTS)),
    "llm_latency_p95_ms": Query(
        AGENT, lambda c: c.p95_ms(LLM_LATENCY), _count(LLM_LATENCY + "_count")
    ),
    "tool_latency_p95_ms": Query(
        ("agent_id", "tool_name"),
        lambda c: c.p95_ms(TOOL_LATENCY),
        _count(TOOL_LATENCY + "_count"),
    ),
    "containment_rate": Query(AGENT, _share((CONTAINED,), (SESSIONS,)), _count(SESSIONS)),
    "cost_usd": Query(AGENT, _count(COST), _count(LLM_CALLS)),
    "unpriced_llm_calls": Query(("agent_id", "model"), _count(UNPRICED), _count(LLM_CALLS)),
}


@dataclass
class Export:
    """The Prometheus rule groups, and the rules left out with their reasons."""

    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, rule: Rule, prom: dict[str, Any]) -> None:
        group = f"agentwatch-{Path(rule.source).stem}" if rule.source else "agentwatch"
        self.groups.setdefault(group, []).append(prom)

    def document(self) -> dict[str, Any]:
        return {"groups": [{"name": name, "rules": rules} for name, rules in self.groups.items()]}

    def render(self, header: str = "") -> str:
        lines = [
            "# Prometheus alerting rules generated by `agentwatch alerts export-prometheus`.",
            "# They read the metrics agentwatch exports; regenerate after rules or catalog change.",
        ]
        if header:
            lines.append(f"# {header}")
        if self.skipped:
            lines.append("# Left out (no equivalent over the exported metrics):")
            lines += [f"#   - {name}: {why}" for name, why in self.skipped]
        body = yaml.dump(
            self.document(), Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True
        )
        return "\n".join(lines) + "\n" + body


def export_rules(rules: Sequence[Rule], catalog: Catalog) -> Export:
    out = Export()
    for rule in rules:
        try:
            branches = _branches(rule, catalog)
        except _Unsupported as exc:
            out.skipped.append((rule.name, str(exc)))
            continue
        out.add(rule, _prom_rule(rule, branches))
    return out


class _Unsupported(Exception):
    pass


@dataclass(frozen=True)
class Branch:
    """One threshold's condition; ``agents`` is the regex of the agents it applies to
    (None: every agent the other branches leave)."""

    expr: str
    threshold: float
    agents: str | None = None


def _branches(rule: Rule, catalog: Catalog) -> list[Branch]:
    """One condition, or one per distinct catalog threshold (or-ed into one rule)."""
    if rule.metric in UNSUPPORTED:
        raise _Unsupported(f"metric {rule.metric}: {UNSUPPORTED[rule.metric]}")
    if rule.metric in _CATALOG_QUERIES:
        if rule.change is not None or isinstance(rule.threshold, CatalogThreshold):
            raise _Unsupported(f"metric {rule.metric} with change or a catalog threshold")
        return [Branch(_CATALOG_QUERIES[rule.metric](rule, catalog), rule.threshold)]
    query = QUERIES.get(rule.metric)
    if query is None:
        raise _Unsupported(f"metric {rule.metric} has no PromQL equivalent here")
    if not isinstance(rule.threshold, CatalogThreshold):
        return [Branch(_condition(rule, query, (), rule.threshold), rule.threshold)]
    by_value: dict[float, list[str]] = {}
    listed: list[str] = []
    for entry in catalog:
        value = entry.number(rule.threshold.field)
        listed.append(entry.agent_id)
        value = rule.threshold.default if value is None else value
        if value is not None:
            by_value.setdefault(value, []).append(entry.agent_id)
    branches = []
    for value, agents in sorted(by_value.items()):
        regex = regex_of(agents)
        branches.append(
            Branch(_condition(rule, query, (f"agent_id=~{q(regex)}",), value), value, regex)
        )
    if rule.threshold.default is not None:
        others = (f"agent_id!~{q(regex_of(listed))}",) if listed else ()
        default = rule.threshold.default
        branches.append(Branch(_condition(rule, query, others, default), default))
    if not branches:
        raise _Unsupported(f"no agent in the catalog has {rule.threshold.field}")
    return branches


def _condition(rule: Rule, query: Query, matchers: tuple[str, ...], threshold: float) -> str:
    window = format_duration(rule.window)
    now = Ctx(query.by, window, matchers=matchers)
    value = query.value(now)
    if rule.change is not None:
        before = query.value(Ctx(query.by, window, offset=window, matchers=matchers))
        value = (
            f"({value}) / (({before}) > 0)" if rule.change == "ratio" else f"({value}) - ({before})"
        )
    if rule.confidence is not None:
        value = bound_promql(value, query.samples(now), rule.confidence, upper=UPPER_FOR[rule.op])
    on = ", ".join(query.by)
    return (
        f"({value}) {rule.op} {threshold!r}\n"
        f"  and on ({on}) ({query.samples(now)}) >= {rule.min_samples}"
    )


def _unapproved(metric: str, label: str, attr: str) -> Callable[[Rule, Catalog], str]:
    """Calls outside each agent's approved list; agents with the same list share a selector."""

    def build(rule: Rule, catalog: Catalog) -> str:
        window = format_duration(rule.window)
        by_list: dict[frozenset[str], list[str]] = {}
        for entry in catalog:
            approved = getattr(entry, attr)
            if approved is not None:
                by_list.setdefault(frozenset(approved), []).append(entry.agent_id)
        if not by_list:
            raise _Unsupported(f"no agent in the catalog has {attr}")
        parts = []
        for approved, agents in sorted(by_list.items(), key=lambda kv: sorted(kv[1])):
            matchers = [f"agent_id=~{q(regex_of(agents))}"]
            if approved:
                matchers.append(f"{label}!~{q(regex_of(sorted(approved)))}")
            ctx = Ctx(("agent_id", label), window, matchers=tuple(matchers))
            parts.append(ctx.sum_increase(metric))
        return _threshold_expr(rule, "\n  or ".join(parts))

    return build


def _agents_with(status: str | None) -> Callable[[Rule, Catalog], str]:
    def build(rule: Rule, catalog: Catalog) -> str:
        window = format_duration(rule.window)
        if status is None:  # shadow AI: anything the catalog does not list
            ids = [a.agent_id for a in catalog]
            matcher = f"agent_id!~{q(regex_of(ids))}" if ids else 'agent_id!=""'
        else:
            ids = [a.agent_id for a in catalog.with_status(status)]  # type: ignore[arg-type]
            if not ids:
                raise _Unsupported(f"no agent is {status} in the catalog at export time")
            matcher = f"agent_id=~{q(regex_of(ids))}"
        return _threshold_expr(rule, Ctx(AGENT, window, matchers=(matcher,)).sum_increase(EVENTS))

    return build


def _silence(rule: Rule, catalog: Catalog) -> str:
    """Active agents seen in the window but not for ``threshold`` seconds; value = threshold.

    The exported counters carry no time of the last event, so the value is the lower
    bound the rule tests rather than the exact silence.
    """
    if rule.op not in (">", ">=") or isinstance(rule.threshold, CatalogThreshold):
        raise _Unsupported("silence_s exports only as silence_s > N seconds")
    ids = [a.agent_id for a in catalog.with_status("active")]
    if not ids:
        raise _Unsupported("no agent is active in the catalog at export time")
    matcher = (f"agent_id=~{q(regex_of(ids))}",)
    seen = Ctx(AGENT, format_duration(rule.window), matchers=matcher).sum_increase(EVENTS)
    quiet = dt.timedelta(seconds=rule.threshold)
    recent = Ctx(AGENT, format_duration(quiet), matchers=matcher).sum_increase(EVENTS)
    return (
        f"0 * (({seen}) >= {rule.min_samples}\n"
        f"  unless on (agent_id) ({recent}) > 0) + {rule.threshold!r}"
    )


def _threshold_expr(rule: Rule, value: str) -> str:
    return f"({value}) {rule.op} {rule.threshold!r}\n  and ({value}) >= {rule.min_samples}"


_CATALOG_QUERIES: Mapping[str, Callable[[Rule, Catalog], str]] = {
    "shadow_agent_events": _agents_with(None),
    "retired_agent_events": _agents_with("retired"),
    "paused_agent_events": _agents_with("paused"),
    "unapproved_model_calls": _unapproved(LLM_CALLS, "model", "approved_models"),
    "unapproved_tool_calls": _unapproved(TOOL_CALLS, "tool_name", "approved_tools"),
    "silence_s": _silence,
}

# {{ $labels.x }}, {{ $value }}, {{ $threshold }}, {{ $samples }}, each maybe | fn.
_PLACEHOLDER = re.compile(
    r"\{\{\s*\$(?P<var>threshold|samples)\s*(?:\|\s*(?P<fn>[A-Za-z]+)\s*)?\}\}"
)


def _annotation(rule: Rule, template: str, branches: Sequence[Branch]) -> str:
    """Prometheus's own template, with ``$threshold`` and ``$samples`` defined up front."""
    prelude = ""
    if re.search(r"\$threshold\b", template):
        prelude += _threshold_prelude(branches)
    if re.search(r"\$samples\b", template):
        prelude += _samples_prelude(rule)
        # A count reads as a whole number unless the template formats it itself.
        template = re.sub(r"\{\{\s*\$samples\s*\}\}", '{{ $samples | printf "%.0f" }}', template)
    return prelude + template


def _threshold_prelude(branches: Sequence[Branch]) -> str:
    """``$threshold`` per agent: the default, then the branch whose agents match."""
    default = next((b.threshold for b in branches if b.agents is None), branches[0].threshold)
    text = "{{ $threshold := " + repr(default) + " }}"
    chained = [b for b in branches if b.agents is not None]
    for i, b in enumerate(chained):
        word = "if" if i == 0 else "else if"
        text += (
            "{{ " + word + " match " + q(f"^(?:{b.agents})$") + " $labels.agent_id }}"
            "{{ $threshold = " + repr(b.threshold) + " }}"
        )
    if chained:
        text += "{{ end }}"
    return text


def _samples_prelude(rule: Rule) -> str:
    """``$samples``: the rule's sample count for this alert's group, queried at render time."""
    query = QUERIES.get(rule.metric)
    if query is None:  # the catalog metrics count events: the value is the count
        return "{{ $samples := $value }}"
    window = format_duration(rule.window)
    ctx = Ctx(query.by, window, matchers=tuple(f"{k}=%q" for k in query.by))
    promql = query.samples(ctx)
    assert "`" not in promql and promql.count("%") == promql.count("%q"), promql
    args = " ".join(f"$labels.{k}" for k in query.by)
    return (
        "{{ $samples := 0.0 }}{{ with printf `" + promql + "` " + args + " | query }}"
        "{{ $samples = . | first | value }}{{ end }}"
    )


def _prom_rule(rule: Rule, branches: Sequence[Branch]) -> dict[str, Any]:
    expr = (
        branches[0].expr if len(branches) == 1 else "\nor\n".join(f"({b.expr})" for b in branches)
    )
    prom: dict[str, Any] = {"alert": rule.name, "expr": expr}
    if rule.for_ > dt.timedelta(0):
        prom["for"] = format_duration(rule.for_)
    if rule.keep_firing_for > dt.timedelta(0):
        prom["keep_firing_for"] = format_duration(rule.keep_firing_for)
    prom["labels"] = {"severity": rule.severity, **dict(rule.labels)}
    prom["annotations"] = {
        key: _annotation(rule, text, branches) for key, text in rule.annotations.items()
    }
    return prom


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
