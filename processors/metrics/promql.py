"""What a rule metric reads in Prometheus, as data over the series of ``series.py``.

A rule metric (``alerts/rules/metrics.py``) carries its PromQL beside its SQL: counts of
registered series narrowed by the label matchers of ``processors/store/definitions.py``,
ratios of two counts, a histogram's quantile, and the count its value rests on. A
quantity is written once and rendered by a :class:`Reader`: the rule export's (group
labels, the rule's window, extra matchers) or the dashboards' (their agent picker, the
time range), so an error rate, a containment or a p95 latency reads the same series in
an exported rule and on a dashboard. A metric whose agents are picked from the catalog
at export time says how (:class:`CatalogSelected`); one with no equivalent among the
exported series says why (:class:`StoreOnly`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

from agentwatch.processors.metrics import series
from agentwatch.processors.metrics.series import Series
from agentwatch.processors.store.definitions import IS_FAILED_CHECK


@dataclass(frozen=True)
class Counter:
    """A counter series (or a histogram's ``_count``), narrowed by a label matcher."""

    series: Series
    where: str = ""
    part: Literal["", "_count"] = ""

    @property
    def name(self) -> str:
        return self.series.name + self.part


@dataclass(frozen=True)
class Count:
    """How much a counter grew."""

    counter: Counter


@dataclass(frozen=True)
class Ratio:
    """One counter's growth over another's."""

    num: Counter
    den: Counter


@dataclass(frozen=True)
class Quantile:
    """The ``q`` quantile of a histogram's observations."""

    q: float
    histogram: Series


Quantity = Count | Ratio | Quantile


class Reader(Protocol):
    """How a quantity's parts are written in one place's PromQL."""

    def count(self, counter: Counter) -> str: ...

    def ratio(self, num: str, den: str) -> str: ...

    def quantile(self, q: float, histogram: Series) -> str: ...


def render(quantity: Quantity, reader: Reader) -> str:
    """The PromQL of ``quantity`` as ``reader`` writes it."""
    if isinstance(quantity, Count):
        return reader.count(quantity.counter)
    if isinstance(quantity, Ratio):
        return reader.ratio(reader.count(quantity.num), reader.count(quantity.den))
    return reader.quantile(quantity.q, quantity.histogram)


@dataclass(frozen=True)
class Promql:
    """A rule metric over the exported series: its value (times ``scale``, the metric's
    unit over the series') and the number of samples it rests on, per the metric's ``by``."""

    value: Quantity
    samples: Quantity
    scale: float = 1.0


@dataclass(frozen=True)
class CatalogSelected:
    """The growth of ``counter`` for agents the catalog picks when the rules are exported.

    ``unlisted``: agents it does not list; ``retired``/``paused``: with that status;
    ``unapproved``: calls whose ``label`` is outside the agent's ``approved`` list;
    ``silent``: active agents seen in the window but not lately.
    """

    counter: Counter
    pick: Literal["unlisted", "retired", "paused", "unapproved", "silent"]
    label: str = ""
    approved: str = ""


@dataclass(frozen=True)
class StoreOnly:
    """A metric with no equivalent among the exported series, and why."""

    reason: str


Exported = Promql | CatalogSelected | StoreOnly


EVENTS: Final = Counter(series.EVENTS)
POLICY_CHECKS: Final = Counter(series.POLICY_CHECKS)
LLM_CALLS: Final = Counter(series.LLM_CALLS)

# The quantities a rule metric and a dashboard both show.
ERROR_RATE: Final = Ratio(Counter(series.ERRORS), EVENTS)
CONTAINMENT: Final = Ratio(Counter(series.SESSIONS_CONTAINED), Counter(series.SESSIONS_ENDED))
LLM_P95: Final = Quantile(0.95, series.LLM_LATENCY)
FAILED_CHECKS: Final = Counter(
    series.POLICY_CHECKS, IS_FAILED_CHECK.matcher(series.POLICY_CHECKS.labels)
)


def in_ms(latency: Quantile) -> Promql:
    """A quantile of a latency histogram (in seconds) in milliseconds, resting on its
    observations."""
    return Promql(latency, Count(Counter(latency.histogram, part="_count")), 1000)
