"""The vocabulary every dashboard is written in: queries, thresholds, panels, variables.

Dashboards are declared as plain, frozen specs (``PanelSpec`` in ``Row``s of a
``DashboardSpec``) built with the small helpers below, and turned into Grafana JSON in one
place (``build``). The same specs feed the snapshot renderer, so a panel's title,
description, unit, thresholds and PromQL are written once for Grafana and for the PNGs.

PromQL helpers always aggregate (``sum by``) and always scope to the dashboard's
template variables, so every panel follows the environment/agent/version pickers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from agentwatch.processors.metrics import series

# The provisioned Prometheus datasource (provisioning/datasources/agentwatch.yaml).
DATASOURCE_UID: Final = "agentwatch-prometheus"
DATASOURCE: Final = {"type": "prometheus", "uid": DATASOURCE_UID}
GRID_WIDTH: Final = 24

# Grafana unit ids; the snapshot renderer formats the same ones.
COUNT: Final = "short"
RATIO: Final = "percentunit"
USD: Final = "currencyUSD"
SECONDS: Final = "s"
PER_MINUTE: Final = "cpm"
PER_SECOND: Final = "cps"
SCORE: Final = "none"

# Grafana's own variables: a window covering at least four scrapes, and the time range.
RATE_WINDOW: Final = "$__rate_interval"
RANGE: Final = "$__range"

AGENT_SCOPE: Final = 'environment=~"$environment", agent_id=~"$agent", agent_version=~"$version"'
TOPIC_SCOPE: Final = 'topic=~"$topic"'

# Column titles for the Prometheus labels that identify a table row.
LABEL_TITLES: Final = {
    "agent_id": "Agent",
    "agent_version": "Version",
    "environment": "Environment",
    "model": "Model",
    "policy_id": "Policy",
    "alertname": "Alert",
    "severity": "Severity",
    "state": "State",
    "runbook_url": "Runbook",
    "tool": "Tool",
    "signal": "Signal",
    "dimension": "Compared on",
    "baseline": "Stable",
    "candidate": "New",
}


def label_title(label: str) -> str:
    return LABEL_TITLES.get(label, label)


# --------------------------------------------------------------------------- PromQL


def selector(metric: str, where: str = "", scope: str = AGENT_SCOPE) -> str:
    """``metric{scope, where}``: the series of the selected agents, narrowed by ``where``."""
    labels = ", ".join(part for part in (scope, where) if part)
    return f"{metric}{{{labels}}}" if labels else metric


def _sum(inner: str, by: Sequence[str]) -> str:
    return f"sum by ({', '.join(by)}) ({inner})" if by else f"sum({inner})"


def rate(
    metric: str,
    *,
    by: Sequence[str] = (),
    where: str = "",
    per: int = 1,
    window: str = RATE_WINDOW,
    scope: str = AGENT_SCOPE,
) -> str:
    """Per-second rate of a counter (times ``per``: 60 for per minute, 3600 per hour)."""
    expr = _sum(f"rate({selector(metric, where, scope)}[{window}])", by)
    return f"{expr} * {per}" if per != 1 else expr


def increase(
    metric: str,
    *,
    by: Sequence[str] = (),
    where: str = "",
    window: str = RANGE,
    scope: str = AGENT_SCOPE,
) -> str:
    """How much a counter grew over the window (the whole time range by default)."""
    return _sum(f"increase({selector(metric, where, scope)}[{window}])", by)


def quantile(
    q: float,
    histogram: str,
    *,
    by: Sequence[str] = (),
    where: str = "",
    window: str = RATE_WINDOW,
) -> str:
    """The ``q`` quantile of a histogram's observations in each window."""
    buckets = _sum(f"rate({selector(f'{histogram}_bucket', where)}[{window}])", ("le", *by))
    return f"histogram_quantile({q}, {buckets})"


def ratio(numerator: str, denominator: str, scale: float = 1) -> str:
    """``numerator / denominator``, matched on their ``by`` labels (scaled, e.g. per 100)."""
    expr = f"({numerator}) / ({denominator})"
    return f"{scale:g} * {expr}" if scale != 1 else expr


def zero_while(expr: str, alive: str) -> str:
    """``expr``, or 0 when it has no series but ``alive`` has: "none" told apart from
    "not known" (a stopped exporter still shows as no data, not as a reassuring 0)."""
    return f"({expr}) or (0 * {alive})"


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """Grafana threshold steps: ``base`` below the first step, then each step's colour."""

    base: str
    steps: tuple[tuple[float, str], ...] = ()

    def to_json(self) -> list[dict[str, object]]:
        steps: list[dict[str, object]] = [{"color": self.base, "value": None}]
        return steps + [{"color": color, "value": value} for value, color in self.steps]

    def color(self, value: float) -> str:
        """The colour Grafana would give ``value``."""
        chosen = self.base
        for bound, color in self.steps:
            if value >= bound:
                chosen = color
        return chosen

    @property
    def graded(self) -> bool:
        """True when some values are judged (not just one informational colour)."""
        return bool(self.steps)


# Informational numbers: no value is good or bad in itself.
NEUTRAL: Final = Thresholds("blue")


def higher_is_worse(warn: float, critical: float) -> Thresholds:
    """Green, yellow from ``warn``, red from ``critical`` (latency, cost, error rates)."""
    return Thresholds("green", ((warn, "yellow"), (critical, "red")))


def lower_is_worse(critical: float, warn: float) -> Thresholds:
    """Red below ``critical``, yellow below ``warn``, green above (containment, scores)."""
    return Thresholds("red", ((critical, "yellow"), (warn, "green")))


# --------------------------------------------------------------------------- panels

Kind = Literal["stat", "timeseries", "table"]


@dataclass(frozen=True)
class Link:
    """A link on the panel's header, or with ``label`` on each cell of that table column.

    The URL may use Grafana's variables: ``${__value.raw}`` is the cell's value,
    ``${__url_time_range}`` the time range, ``$name`` a dashboard variable.
    """

    title: str
    url: str
    label: str = ""


@dataclass(frozen=True)
class Query:
    """One PromQL expression; in a table, one column (``column``, its own unit/colours)."""

    expr: str
    legend: str = ""
    column: str = ""
    unit: str = ""
    thresholds: Thresholds | None = None
    decimals: int | None = None


@dataclass(frozen=True)
class PanelSpec:
    kind: Kind
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    thresholds: Thresholds = NEUTRAL
    width: int = 12
    height: int = 8
    # Stable name: the snapshot refers to panels by it.
    key: str = ""
    # A stat over today so far (Grafana's relative time "now/d") instead of the range.
    today: bool = False
    stack: bool = False
    decimals: int | None = None
    # Table rows: the labels identifying a row.
    row_labels: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    no_value: str = "n/a"

    @property
    def instant(self) -> bool:
        """Stats and tables show one value per series; time series show the trend."""
        return self.kind != "timeseries"


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str,
    thresholds: Thresholds = NEUTRAL,
    *,
    key: str = "",
    today: bool = False,
    decimals: int | None = None,
    links: Sequence[Link] = (),
    no_value: str | None = None,
    width: int = 3,
    height: int = 4,
) -> PanelSpec:
    """One number over the time range (or today); colour from ``thresholds``.

    Counts show whole numbers unless ``decimals`` says otherwise: ``increase()``
    extrapolates to the window's edges, and "1,234.6 sessions" reads as a bug. With no
    data, counts and spend show 0 (nothing counted) and other units "n/a", unless
    ``no_value`` says otherwise.
    """
    if no_value is None:
        no_value = "0" if unit in (COUNT, USD) else "n/a"
    if unit == COUNT and decimals is None:
        decimals = 0
    return PanelSpec(
        "stat", title, description, unit, (Query(expr),), thresholds, width, height,
        key=key, today=today, decimals=decimals, no_value=no_value, links=tuple(links),
    )  # fmt: skip


def timeseries(
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    thresholds: Thresholds = NEUTRAL,
    key: str = "",
    stack: bool = False,
    width: int = 12,
    height: int = 8,
) -> PanelSpec:
    """A trend; graded thresholds are drawn as dashed lines."""
    return PanelSpec(
        "timeseries", title, description, unit, queries, thresholds, width, height,
        key=key, stack=stack,
    )  # fmt: skip


def table(
    title: str,
    description: str,
    row_labels: Sequence[str],
    *columns: Query,
    key: str = "",
    links: Sequence[Link] = (),
    width: int = GRID_WIDTH,
    height: int = 9,
) -> PanelSpec:
    """One row per ``row_labels`` value, one column per query (each a ``sum by`` them);
    ``links`` on row labels make their cells clickable."""
    unknown = [link.label for link in links if link.label not in row_labels]
    if unknown:
        raise ValueError(f"{title}: links on labels that are not row labels: {unknown}")
    return PanelSpec(
        "table", title, description, COUNT, columns, NEUTRAL, width, height,
        key=key, row_labels=tuple(row_labels), links=tuple(links),
    )  # fmt: skip


def column(
    title: str,
    expr: str,
    unit: str = COUNT,
    thresholds: Thresholds | None = None,
    decimals: int | None = None,
) -> Query:
    """A table column; counts show whole numbers unless ``decimals`` says otherwise."""
    if unit == COUNT and decimals is None:
        decimals = 0
    return Query(expr, column=title, unit=unit, thresholds=thresholds, decimals=decimals)


@dataclass(frozen=True)
class Row:
    """A titled section; its panels flow left to right and wrap at the grid width."""

    title: str
    panels: tuple[PanelSpec, ...]


# --------------------------------------------------------------------------- variables


@dataclass(frozen=True)
class Variable:
    """A dashboard variable: a Prometheus label picker, or a free-text number."""

    name: str
    label: str
    query: str
    description: str
    multi: bool = True
    include_all: bool = True
    textbox: bool = False


def label_picker(
    name: str, label: str, metric: str, prom_label: str, description: str, *, scope: str = ""
) -> Variable:
    return Variable(name, label, f"label_values({selector(metric, '', scope)}, {prom_label})",
                    description)  # fmt: skip


ENVIRONMENT: Final = label_picker(
    "environment", "Environment", series.EVENTS.name, "environment",
    "Deployment environments (prod, staging, ...) the agents report.",
)  # fmt: skip
AGENT: Final = label_picker(
    "agent", "Agent", series.EVENTS.name, "agent_id",
    "Agents seen in the chosen environments.", scope='environment=~"$environment"',
)  # fmt: skip
VERSION: Final = label_picker(
    "version", "Version", series.EVENTS.name, "agent_version",
    "Releases of the chosen agents.",
    scope='environment=~"$environment", agent_id=~"$agent"',
)  # fmt: skip
ONE_AGENT: Final = Variable(
    AGENT.name, AGENT.label, AGENT.query, "The agent this dashboard is about.",
    multi=False, include_all=False,
)  # fmt: skip
TOPIC: Final = label_picker(
    "topic", "Topic", series.PIPELINE_RECORDS.name, "topic", "Kafka events topics.",
)  # fmt: skip
DAILY_BUDGET: Final = Variable(
    "daily_budget_usd", "Daily budget (USD)", "1000",
    "The fleet's LLM spend budget per day in USD; edit it here or in the dashboard JSON.",
    multi=False, include_all=False, textbox=True,
)  # fmt: skip
# Where the rules' runbooks (runbook_url: runbooks/<id>.yaml) are served: by default the
# alerts folder of this repository, which the Compose deployment mounts into Grafana's
# static files; a wiki or a repository browser works as well.
RUNBOOKS_URL: Final = Variable(
    "runbooks_url", "Runbooks URL", "/public/agentwatch",
    "Base URL of the runbooks: each alert's runbook_url (runbooks/<id>.yaml) is appended. "
    "Point it at your repository, e.g. https://git.example.com/agentwatch/blob/main/alerts.",
    multi=False, include_all=False, textbox=True,
)  # fmt: skip
AGENT_VARIABLES: Final = (ENVIRONMENT, AGENT, VERSION)


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=())
    time_from: str = "now-6h"

    def panels(self) -> list[PanelSpec]:
        return [panel for row in self.rows for panel in row.panels]

    def panel(self, key: str) -> PanelSpec:
        for panel in self.panels():
            if panel.key == key:
                return panel
        raise KeyError(f"{self.uid} has no panel {key!r}")
