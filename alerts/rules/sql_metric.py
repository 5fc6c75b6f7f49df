"""What a rule metric is: one query per window, its samples, and the registry rules name.

The built-in metrics are in ``metrics.py``; a metric may also be registered from outside,
anything that follows :class:`Metric`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import duckdb
import polars as pl

from agentwatch.frames import registered
from agentwatch.processors.metrics.promql import Exported


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
    """What a rule can test. ``by`` names the label columns of each group; ``unit`` says
    what a value counts (:data:`SHARE` for a share of the samples, "" when unsaid)."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...

    @property
    def by(self) -> tuple[str, ...]: ...

    @property
    def unit(self) -> str: ...

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]: ...


# The unit of a metric whose value is a share of its samples (a rule on one may ask for
# a confidence, see confidence.py).
SHARE: Final = "share"

# The parameters of a metric's query (measure_windows puts columns in their place).
_PARAMETER: Final = re.compile(r"\$(start|end)\b")


@dataclass(frozen=True)
class SqlMetric:
    """A metric computed by one query with ``$start`` and ``$end`` parameters.

    The query returns the ``by`` columns, ``value`` (DOUBLE, may be NULL) and ``samples``
    (how many observations the value rests on: policy checks for a violation rate, LLM
    calls for a latency percentile, ended sessions for containment). ``before`` is how
    much event time before ``$start`` the query also reads: the evaluator's shared read
    of recent events must reach back that far. ``promql`` is the same metric over the
    exported series, for the Prometheus rule export (None: not said, as for a metric
    registered from outside).
    """

    name: str
    help: str
    by: tuple[str, ...]
    sql: str
    unit: str = ""
    before: dt.timedelta = dt.timedelta(0)
    promql: Exported | None = None

    def measure(self, con: duckdb.DuckDBPyConnection, window: Window) -> list[Sample]:
        rows = con.execute(self.sql, {"start": window.start, "end": window.end}).fetchall()
        return [self._sample(row) for row in rows]

    def measure_windows(
        self, con: duckdb.DuckDBPyConnection, windows: Sequence[Window]
    ) -> dict[Window, list[Sample]]:
        """What :meth:`measure` gives for each of ``windows``, in one query: this metric's
        own SQL as a lateral subquery of a table of the windows, so a replay of many
        instants costs one catalog-free scan instead of one query per window. The same
        rows; sums of doubles may differ in their last bits (another summation order)."""
        frame = pl.DataFrame(
            {
                "_aw_i": range(len(windows)),
                "_aw_start": [w.start for w in windows],
                "_aw_end": [w.end for w in windows],
            },
            schema={
                "_aw_i": pl.Int64,
                "_aw_start": pl.Datetime("us", "UTC"),
                "_aw_end": pl.Datetime("us", "UTC"),
            },
        )
        inner = _PARAMETER.sub(lambda m: f"_aw_w._aw_{m[1]}", self.sql)
        with registered(con, "_aw_windows", frame):
            rows = con.execute(
                f"SELECT _aw_q.*, _aw_w._aw_i FROM _aw_windows AS _aw_w, LATERAL ({inner}) AS _aw_q"
            ).fetchall()
        out: dict[Window, list[Sample]] = {w: [] for w in windows}
        for row in rows:
            out[windows[row[-1]]].append(self._sample(row))
        return out

    def _sample(self, row: tuple[Any, ...]) -> Sample:
        n = len(self.by)
        return Sample(
            labels={k: "" if v is None else str(v) for k, v in zip(self.by, row[:n], strict=True)},
            value=None if row[n] is None or not math.isfinite(row[n]) else float(row[n]),
            samples=int(row[n + 1] or 0),
        )


class MetricRegistry(Mapping[str, Metric]):
    """The metrics rules may name, by name. There is no process-wide one: the rule loader
    and the evaluator are given a registry (the built-in metrics unless told otherwise)."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._by_name: dict[str, Metric] = {}
        for metric in metrics:
            self.register(metric)

    def register(self, metric: Metric, *, replace: bool = False) -> Metric:
        """Make ``metric`` available by name; refuses to shadow one by accident."""
        if metric.name in self._by_name and not replace:
            raise ValueError(f"a metric named {metric.name!r} is already registered")
        self._by_name[metric.name] = metric
        return metric

    def unregister(self, name: str) -> None:
        """Remove a metric; rules naming it then fail to load."""
        self._by_name.pop(name, None)

    def __getitem__(self, name: str) -> Metric:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)
