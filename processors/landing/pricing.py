"""LLM cost from a versioned, dated pricing table.

An ``llm_call`` event may carry its own ``cost_usd`` (the gateway or SDK knew the bill);
most do not, so the processor prices them from list prices at landing time. Prices
change, so every row of the table has an ``effective_from`` date and an event is priced
with the row in force at its event time: replaying or repricing old events never applies
today's prices to last year's traffic. The table's ``version`` is stored on each priced
row, so a changed table can be found and fixed with ``agentwatch cost reprice``.

A model without a price is never costed at 0: its effective cost stays NULL with
``cost_source = 'unpriced'``, which is counted and alerted on, so a missing row shows up
as a gap rather than as a silently low bill.

Pure: no I/O except :func:`load_pricing`, and no per-row Python (two as-of joins).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Final

import msgspec
import polars as pl

from agentwatch.decoding import decode
from agentwatch.processors.store.tables import EVENTS_SCHEMA, UTC_TS
from agentwatch.settings import ConfigError, Settings
from agentwatch.yamlfile import parse_yaml, read_yaml

PRICING_ENV: Final = "AGENTWATCH_PRICING_FILE"
BUILTIN_PRICING: Final = "pricing.yaml"

SOURCE_EVENT: Final = "event"
SOURCE_PRICING: Final = "pricing"
SOURCE_UNPRICED: Final = "unpriced"

_PRICES: Final = ("input", "cached_input", "output", "reasoning")

# What apply_pricing reads and writes on an events frame.
_INPUT_COLUMNS: Final = (
    "kind",
    "ts",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "cost_usd",
)
DERIVED_COST_COLUMNS: Final = ("cost_usd_effective", "cost_source", "pricing_version")
_PRICED: Final = "_agentwatch_priced_cost"


class PricingError(ConfigError):
    """A pricing table that cannot be used: the message names the file and key path."""


class PriceRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model's list prices from ``effective_from`` on, in USD per million tokens.

    ``cached_input`` prices cache-read tokens and ``reasoning`` reasoning tokens; None
    means the provider bills them like plain input and output tokens respectively.
    """

    provider: str
    model: str
    effective_from: dt.date
    input: float
    output: float
    cached_input: float | None = None
    reasoning: float | None = None

    @property
    def key(self) -> tuple[str, str, dt.date]:
        return (self.provider, self.model, self.effective_from)


class _TableFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A pricing file as written; its rows are :class:`PriceRow`."""

    version: str
    source: str
    prices: list[PriceRow]


@dataclass(frozen=True)
class PricingTable:
    """A validated pricing table: ``version`` is stored on every row it prices."""

    version: str
    source: str
    rows: tuple[PriceRow, ...]
    origin: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        if not self.version.strip():
            raise PricingError(f"{self.origin}: version: must be a non-empty string")
        seen: dict[tuple[str, str, dt.date], int] = {}
        for i, row in enumerate(self.rows):
            first = seen.setdefault(row.key, i)
            if first != i:
                raise PricingError(
                    f"{self.origin}: prices[{first}] and prices[{i}] both price "
                    f"{row.provider}/{row.model} from {row.effective_from.isoformat()}; keep one"
                )

    @classmethod
    def from_mapping(cls, data: object, origin: str = "<memory>") -> PricingTable:
        """Validate a parsed table (``version``, ``source``, ``prices``: a list of rows)."""
        table = decode(data, _TableFile, "", origin, error=PricingError)
        if not table.prices:
            raise PricingError(f"{origin}: prices: must list at least one row")
        for index, row in enumerate(table.prices):
            _check_row(row, f"{origin}: prices[{index}]")
        return cls(table.version, table.source.strip(), tuple(table.prices), origin)

    @property
    def models(self) -> frozenset[str]:
        return frozenset(row.model for row in self.rows)

    def in_force(self, at: dt.datetime) -> tuple[PriceRow, ...]:
        """The row of each provider and model that applies at ``at`` (for display)."""
        day = at.astimezone(dt.UTC).date()
        current: dict[tuple[str, str], PriceRow] = {}
        for row in sorted(self.rows, key=lambda r: r.effective_from):
            if row.effective_from <= day:
                current[(row.provider, row.model)] = row
        return tuple(current.values())

    @cached_property
    def frame(self) -> pl.DataFrame:
        """The rows as a frame, ``effective_from`` as UTC midnight, sorted for as-of joins."""
        return pl.DataFrame(
            {
                "provider": [r.provider for r in self.rows],
                "model": [r.model for r in self.rows],
                "effective_from": [
                    dt.datetime.combine(r.effective_from, dt.time(), dt.UTC) for r in self.rows
                ],
                **{name: [getattr(r, name) for r in self.rows] for name in _PRICES},
            },
            schema={
                "provider": pl.String(),
                "model": pl.String(),
                "effective_from": UTC_TS,
                **{name: pl.Float64() for name in _PRICES},
            },
        ).sort("effective_from", "model", "provider")

    @cached_property
    def _by_provider(self) -> pl.DataFrame:
        return self.frame.rename({p: f"{p}_p" for p in _PRICES})

    @cached_property
    def _by_model(self) -> pl.DataFrame:
        # Any provider's latest row; on a tie of dates the first provider by name.
        return (
            self.frame.unique(subset=["model", "effective_from"], keep="first", maintain_order=True)
            .drop("provider")
            .rename({p: f"{p}_m" for p in _PRICES})
        )


def _check_row(row: PriceRow, where: str) -> None:
    """What a row's types cannot say: names are not blank, prices are finite and >= 0."""
    for name in ("provider", "model"):
        if not getattr(row, name).strip():
            raise PricingError(f"{where}.{name}: must be a non-empty string")
    for name in _PRICES:
        value = getattr(row, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise PricingError(f"{where}.{name}: must be a finite price >= 0, got {value:g}")


def load_pricing(path: Path | None = None) -> PricingTable:
    """Read a pricing table: ``path``, else ``$AGENTWATCH_PRICING_FILE``, else the built-in one.

    Dates stay text when read, so a bad one is refused with its key path
    (``prices[3].effective_from``) rather than by the YAML parser.
    """
    if path is None and os.environ.get(PRICING_ENV):
        path = Path(os.environ[PRICING_ENV])
    if path is not None:
        return PricingTable.from_mapping(read_yaml(path, PricingError), str(path))
    origin = f"built-in {BUILTIN_PRICING}"
    text = (
        resources.files("agentwatch.processors.landing")
        .joinpath(BUILTIN_PRICING)
        .read_text(encoding="utf-8")
    )
    return PricingTable.from_mapping(parse_yaml(text, origin, PricingError), origin)


def pricing_file(settings: Settings) -> Path | None:
    """The configured table (``[pricing] file`` or ``$AGENTWATCH_PRICING_FILE``), if any."""
    value: str = settings.value("pricing", "file")
    return Path(value) if value else None


def apply_pricing(events: pl.DataFrame, table: PricingTable) -> pl.DataFrame:
    """Set ``cost_usd_effective``, ``cost_source`` and ``pricing_version`` on every row.

    ``llm_call`` rows: the event's own ``cost_usd`` wins (source ``event``); else the
    price row in force at ``ts`` (same provider preferred) gives the cost (source
    ``pricing``, with the table version); else the cost is NULL (source ``unpriced``).
    Other rows keep ``cost_usd`` and get no source. Every other column, the column
    order and the dtypes are left as they are.
    """
    missing = [c for c in (*_INPUT_COLUMNS, *DERIVED_COST_COLUMNS) if c not in events.columns]
    if missing:
        raise ValueError(f"apply_pricing needs the events columns {', '.join(missing)}")
    priced = _priced_cost(events, table)
    is_llm = pl.col("kind") == "llm_call"
    from_event = is_llm & pl.col("cost_usd").is_not_null()
    from_table = is_llm & pl.col("cost_usd").is_null() & pl.col(_PRICED).is_not_null()
    return (
        events.with_columns(priced.alias(_PRICED))
        .with_columns(
            pl.when(from_event | ~is_llm)
            .then(pl.col("cost_usd"))
            .when(from_table)
            .then(pl.col(_PRICED))
            .otherwise(None)
            .cast(EVENTS_SCHEMA["cost_usd_effective"])
            .alias("cost_usd_effective"),
            pl.when(from_event)
            .then(pl.lit(SOURCE_EVENT))
            .when(from_table)
            .then(pl.lit(SOURCE_PRICING))
            .when(is_llm)
            .then(pl.lit(SOURCE_UNPRICED))
            .otherwise(None)
            .cast(EVENTS_SCHEMA["cost_source"])
            .alias("cost_source"),
            pl.when(from_table)
            .then(pl.lit(table.version))
            .otherwise(None)
            .cast(EVENTS_SCHEMA["pricing_version"])
            .alias("pricing_version"),
        )
        .drop(_PRICED)
    )


def _priced_cost(events: pl.DataFrame, table: PricingTable) -> pl.Series:
    """The table's cost of every row, in row order; null where no price applies.

    Two backward as-of joins on ``ts`` find the latest row with ``effective_from <= ts``:
    one by model and provider, one by model alone; the first wins when it matches.
    Output tokens are taken to exclude reasoning tokens (billed on their own), and input
    tokens to include cache reads (billed at the cached price).
    """
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")
    keys = (
        events.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
            pl.col("ts").cast(UTC_TS),
            pl.col("model").cast(pl.String),
            pl.col("provider").cast(pl.String),
            *(pl.col(t).cast(pl.Float64).fill_null(0.0) for t in tokens),
            needed=(pl.col("kind") == "llm_call") & pl.col("cost_usd").is_null(),
        )
        # Only rows that need a price take part; the others stay null.
        .filter(pl.col("needed") & pl.col("model").is_not_null() & pl.col("ts").is_not_null())
        .drop("needed")
        .sort("ts")
    )
    joined = keys.join_asof(
        table._by_provider,
        left_on="ts",
        right_on="effective_from",
        by=["model", "provider"],
        check_sortedness=False,
    ).join_asof(
        table._by_model,
        left_on="ts",
        right_on="effective_from",
        by="model",
        check_sortedness=False,
        suffix="_m",
    )
    exact = pl.col("input_p").is_not_null()

    def price(name: str) -> pl.Expr:
        return pl.when(exact).then(pl.col(f"{name}_p")).otherwise(pl.col(f"{name}_m"))

    cache = pl.col("cache_read_tokens")
    cost = (
        (pl.col("input_tokens") - cache).clip(lower_bound=0.0) * price("input")
        + cache * price("cached_input").fill_null(price("input"))
        + pl.col("output_tokens") * price("output")
        + pl.col("reasoning_tokens") * price("reasoning").fill_null(price("output"))
    ) / 1e6
    costs = joined.select("_row", cost.alias(_PRICED))
    return (
        pl.DataFrame({"_row": pl.int_range(events.height, dtype=pl.UInt32, eager=True)})
        .join(costs, on="_row", how="left", maintain_order="left")
        .get_column(_PRICED)
    )


def unpriced_models(events: pl.DataFrame) -> pl.DataFrame:
    """Models with ``unpriced`` rows: ``model``, ``events``, ``first_ts``, ``last_ts``.

    The input of the ``agentwatch_unpriced_events_total{model}`` metric and of the
    reprice summary: the rows a pricing table still has to cover.
    """
    return (
        events.filter(pl.col("cost_source") == SOURCE_UNPRICED)
        .group_by("model")
        .agg(
            pl.len().cast(pl.Int64).alias("events"),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
        )
        .sort(["events", "model"], descending=[True, False], nulls_last=True)
    )
