"""Mergeable histograms: latency quantiles that add up across batches, minutes and days.

A quantile of a window cannot be computed from the quantiles of its minutes, so the
rollups keep each distribution as counts per *bin* instead. Bins are log-spaced with
ratio ``GAMMA`` (as in DDSketch): bin ``i`` holds the positive values in
``(GAMMA**(i-1), GAMMA**i]`` and stands for ``2 * GAMMA**i / (GAMMA + 1)``, which is
within ``RELATIVE_ERROR`` (1 %) of every value in it. Zero has a bin of its own (exact),
and negative values mirror the positive ones below it, so bin order is value order.

Histograms are stored as ``LIST(STRUCT(bin INTEGER, n BIGINT))``; merging is a
``GROUP BY bin`` with ``sum(n)``, in any order and at any time, so partial rows of the
same minute written by different batches need no read-modify-write.

The error bound. ``quantile_sql`` computes DuckDB's ``quantile_cont`` (the values at
ranks ``floor((n - 1) q)`` and the next, linearly interpolated) from the bins, taking
each of the two values as its bin's representative. Each representative is within
``RELATIVE_ERROR`` of the true value at that rank, so the estimate is within
``RELATIVE_ERROR`` of the exact quantile whenever the two values have the same sign
(always for latencies and durations, which are not negative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import polars as pl

RELATIVE_ERROR: Final = 0.01
GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LN_GAMMA: Final = math.log(GAMMA)
# Bin of 0; positive values are above it, negative ones below. The positive bins span
# [-MAX_INDEX, MAX_INDEX], which covers every finite double (infinities are clipped).
ZERO_BIN: Final = -(1 << 19)
_NEGATIVE_BASE: Final = -(1 << 20)
MAX_INDEX: Final = 40_000

BIN_TYPE: Final = pl.Int32()
HISTOGRAM_TYPE: Final = pl.List(pl.Struct({"bin": pl.Int32(), "n": pl.Int64()}))


def bin_expr(value: pl.Expr) -> pl.Expr:
    """The bin of each value (null for null or NaN): polars, for the landing side."""
    index = (value.abs().log() / _LN_GAMMA).ceil().clip(-MAX_INDEX, MAX_INDEX)
    return (
        pl.when(value > 0)
        .then(index)
        .when(value == 0)
        .then(pl.lit(ZERO_BIN))
        .when(value < 0)
        .then(_NEGATIVE_BASE - index)
        .otherwise(None)
        .cast(BIN_TYPE)
    )


def bin_sql(value: str) -> str:
    """The same bin as ``bin_expr``, in SQL, for windows cut from raw events."""
    index = (
        # ln is given 1 for 0 (whose bin is set apart), which it cannot take.
        f"least(greatest(ceil(ln(abs({value}) + ({value} = 0)::DOUBLE) / {_LN_GAMMA!r}), "
        f"{-MAX_INDEX}), {MAX_INDEX})"
    )
    return (
        f"(CASE WHEN {value} > 0 THEN {index} WHEN {value} = 0 THEN {ZERO_BIN} "
        f"WHEN {value} < 0 THEN {_NEGATIVE_BASE} - {index} END)::INTEGER"
    )


def value_sql(bin_: str) -> str:
    """The value a bin stands for."""
    return (
        f"(CASE WHEN {bin_} > {ZERO_BIN} THEN 2 * pow({GAMMA!r}, {bin_}) / {GAMMA + 1!r} "
        f"WHEN {bin_} = {ZERO_BIN} THEN 0.0 "
        f"ELSE -2 * pow({GAMMA!r}, {_NEGATIVE_BASE} - {bin_}) / {GAMMA + 1!r} END)"
    )


def histogram_agg(bins: pl.Expr) -> pl.Expr:
    """Inside a ``group_by``: the group's bins as a sorted histogram list."""
    return (
        bins.drop_nulls()
        .value_counts(sort=False)
        .struct.rename_fields(["bin", "n"])
        .cast(HISTOGRAM_TYPE.inner)
        .sort()
    )


def histogram_agg_sql(value: str) -> str:
    """The histogram of a column's values, as an SQL aggregate (nulls left out)."""
    return (
        f"list_sort(list_transform(map_entries(histogram({bin_sql(value)}) "
        f"FILTER (WHERE {value} IS NOT NULL)), "
        "lambda e: {'bin': e.key::INTEGER, 'n': e.value::BIGINT}))"
    )


def quantile_sql(source: str, keys: Sequence[str], quantiles: Sequence[float]) -> str:
    """Quantiles per group of a long-form histogram ``source`` (``keys``, ``bin``, ``n``).

    Returns the keys, ``samples`` (values counted) and one column ``q<i>`` per quantile,
    each ``quantile_cont`` of the merged bins (see the module's error bound). A bin may
    appear in several rows of a group: partial histograms merge here.
    """
    group = ", ".join(keys)
    partition = f"PARTITION BY {group}" if keys else ""
    columns = []
    for i, q in enumerate(quantiles):
        position = f"(total - 1) * {q!r}"
        low = value_sql(f"min(bin) FILTER (WHERE upto > floor({position}))")
        high = value_sql(f"min(bin) FILTER (WHERE upto > floor({position}) + 1)")
        fraction = f"(max({position}) - floor(max({position})))"
        columns.append(f"{low} + {fraction} * (coalesce({high}, {low}) - {low}) AS q{i}")
    select = ", ".join([*keys, "max(total)::BIGINT AS samples", *columns])
    return (
        f"SELECT {select} FROM (SELECT *, "
        f"sum(n) OVER ({partition} ORDER BY bin) AS upto, "
        f"sum(n) OVER ({partition}) AS total FROM ({source})) "
        + (f"GROUP BY {group}" if keys else "")
    )


__all__ = [
    "GAMMA",
    "HISTOGRAM_TYPE",
    "RELATIVE_ERROR",
    "bin_expr",
    "bin_sql",
    "histogram_agg",
    "histogram_agg_sql",
    "quantile_sql",
    "value_sql",
]
