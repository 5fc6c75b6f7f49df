"""Pricing: hand-computed costs, effective dating, provider preference, table validation."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import PROFILES, make_agents
from agentwatch.processors.landing.decode import decode_batch
from agentwatch.processors.landing.pricing import (
    PriceRow,
    PricingError,
    PricingTable,
    apply_pricing,
    load_pricing,
    pricing_file,
    unpriced_models,
)
from agentwatch.processors.store.tables import EVENTS_SCHEMA
from agentwatch.settings import ConfigError, Settings, decode_config
from tests.test_decode import batch_of

UTC = dt.UTC
DERIVED = ["cost_usd_effective", "cost_source", "pricing_version"]

TABLE = PricingTable(
    version="test-1",
    source="hand-made for the tests",
    rows=(
        PriceRow("acme", "m", dt.date(2025, 1, 1), input=2.0, output=8.0, cached_input=0.5),
        # A price cut with no cached price: cache reads fall back to the input price.
        PriceRow("acme", "m", dt.date(2025, 3, 1), input=1.0, output=4.0),
        PriceRow("acme", "r", dt.date(2025, 1, 1), input=1.0, output=4.0, reasoning=6.0),
        PriceRow("other", "m", dt.date(2025, 1, 1), input=3.0, output=9.0),
    ),
)


def at(day: str, time: str = "12:00:00") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{time}+00:00")


JAN_10 = at("2025-01-10")


def llm(
    ts: dt.datetime = JAN_10,
    model: str | None = "m",
    provider: str | None = "acme",
    inp: int = 1000,
    out: int = 100,
    cache: int | None = None,
    reasoning: int | None = None,
    cost: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": "llm_call",
        "ts": ts,
        "model": model,
        "provider": provider,
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cache,
        "reasoning_tokens": reasoning,
        "cost_usd": cost,
        **extra,
    }


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    base = {"schema_version": 1, "agent_id": "a", "session_id": "s", "status": "ok"}
    return pl.DataFrame(
        [{**base, "event_id": f"e{i}", **row} for i, row in enumerate(rows)],
        schema=EVENTS_SCHEMA,
    )


def priced(*rows: dict[str, Any], table: PricingTable = TABLE) -> list[dict[str, Any]]:
    return apply_pricing(frame(*rows), table).select(DERIVED).to_dicts()


def cost_of(row: dict[str, Any], table: PricingTable = TABLE) -> float | None:
    (result,) = priced(row, table=table)
    value = result["cost_usd_effective"]
    assert value is None or isinstance(value, float)
    return value


# --------------------------------------------------------------------------- formula


def test_plain_input_and_output_tokens() -> None:
    # (1000 x $2 + 100 x $8) / 1e6
    assert priced(llm(inp=1000, out=100)) == [
        {
            "cost_usd_effective": pytest.approx(0.0028),
            "cost_source": "pricing",
            "pricing_version": "test-1",
        },
    ]


def test_cache_reads_are_part_of_input_and_billed_at_the_cached_price() -> None:
    # 600 uncached x $2 + 400 cached x $0.50 + 100 out x $8 = 2200 micro-dollars
    assert cost_of(llm(inp=1000, cache=400, out=100)) == pytest.approx(0.0022)


def test_more_cache_reads_than_input_floor_the_uncached_part_at_zero() -> None:
    # 0 uncached + 300 cached x $0.50 + 100 x $8 = 950
    assert cost_of(llm(inp=100, cache=300, out=100)) == pytest.approx(0.00095)


def test_cache_reads_fall_back_to_the_input_price_without_a_cached_price() -> None:
    # after the cut: 600 x $1 + 400 x $1 (no cached price) + 100 x $4 = 1400
    assert cost_of(llm(ts=at("2025-03-05"), inp=1000, cache=400, out=100)) == pytest.approx(0.0014)


def test_reasoning_tokens_at_the_reasoning_price_on_top_of_output() -> None:
    # 1000 x $1 + 100 x $4 + 500 reasoning x $6 = 4400
    assert cost_of(llm(model="r", inp=1000, out=100, reasoning=500)) == pytest.approx(0.0044)


def test_reasoning_tokens_fall_back_to_the_output_price() -> None:
    # 1000 x $2 + 100 x $8 + 500 x $8 = 6800
    assert cost_of(llm(inp=1000, out=100, reasoning=500)) == pytest.approx(0.0068)


def test_a_cost_supplied_by_the_event_is_kept() -> None:
    assert priced(llm(cost=0.5), llm(cost=0.0), llm(model="nope", cost=0.25)) == [
        {"cost_usd_effective": 0.5, "cost_source": "event", "pricing_version": None},
        {"cost_usd_effective": 0.0, "cost_source": "event", "pricing_version": None},
        {"cost_usd_effective": 0.25, "cost_source": "event", "pricing_version": None},
    ]


def test_an_unpriced_model_is_null_never_zero() -> None:
    assert (
        priced(llm(model="nope"), llm(model="nope", provider=None))
        == [
            {"cost_usd_effective": None, "cost_source": "unpriced", "pricing_version": None},
        ]
        * 2
    )


def test_unpriced_models_counts_them_by_model() -> None:
    out = apply_pricing(
        frame(llm(model="x"), llm(model="y", ts=at("2025-02-01")), llm(model="x"), llm()),
        TABLE,
    )
    assert unpriced_models(out).to_dicts() == [
        {"model": "x", "events": 2, "first_ts": at("2025-01-10"), "last_ts": at("2025-01-10")},
        {"model": "y", "events": 1, "first_ts": at("2025-02-01"), "last_ts": at("2025-02-01")},
    ]


# --------------------------------------------------------------------------- matching


def test_effective_dating_picks_the_row_in_force_on_each_side_of_a_change() -> None:
    rows = [
        llm(ts=at("2024-12-31", "23:59:59")),  # before the first row: no price yet
        llm(ts=at("2025-01-01", "00:00:00")),  # the first row, from midnight UTC
        llm(ts=at("2025-02-28", "23:59:59.999999")),  # last instant of the old price
        llm(ts=at("2025-03-01", "00:00:00")),  # the new price from midnight UTC
        llm(ts=at("2026-01-01")),  # still the latest row
    ]
    assert [r["cost_usd_effective"] for r in priced(*rows)] == [
        None,
        pytest.approx(0.0028),
        pytest.approx(0.0028),
        pytest.approx(0.0014),
        pytest.approx(0.0014),
    ]
    assert priced(rows[0])[0]["cost_source"] == "unpriced"


def test_the_same_provider_is_preferred_even_when_another_has_a_newer_row() -> None:
    assert cost_of(llm(ts=at("2025-04-01"), provider="other")) == pytest.approx(0.0039)
    assert cost_of(llm(ts=at("2025-04-01"), provider="acme")) == pytest.approx(0.0014)


def test_without_a_row_of_its_provider_the_latest_row_of_any_provider_applies() -> None:
    # No provider, or one the table does not list: the latest row; a tie goes by name.
    assert cost_of(llm(ts=at("2025-04-01"), provider=None)) == pytest.approx(0.0014)
    assert cost_of(llm(ts=at("2025-04-01"), provider="azure")) == pytest.approx(0.0014)
    assert cost_of(llm(ts=at("2025-02-01"), provider=None)) == pytest.approx(0.0028)
    # A provider whose own row is not in force yet falls back too.
    late = PricingTable("v", "s", (*TABLE.rows, PriceRow("late", "m", dt.date(2030, 1, 1), 7, 7)))
    assert cost_of(llm(ts=at("2025-04-01"), provider="late"), late) == pytest.approx(0.0014)


def test_rows_of_other_kinds_keep_their_cost_and_get_no_source() -> None:
    rows = (
        {"kind": "tool_call", "ts": at("2025-01-10"), "tool_name": "t"},
        {"kind": "tool_call", "ts": at("2025-01-10"), "tool_name": "t", "cost_usd": 0.01},
        {"kind": "session_start", "ts": at("2025-01-10"), "model": "m"},
    )
    assert priced(*rows) == [
        {"cost_usd_effective": None, "cost_source": None, "pricing_version": None},
        {"cost_usd_effective": 0.01, "cost_source": None, "pricing_version": None},
        {"cost_usd_effective": None, "cost_source": None, "pricing_version": None},
    ]


def test_stale_derived_values_are_recomputed() -> None:
    stale = llm(cost_usd_effective=9.9, cost_source="pricing", pricing_version="old")
    assert priced(stale) == [
        {
            "cost_usd_effective": pytest.approx(0.0028),
            "cost_source": "pricing",
            "pricing_version": "test-1",
        },
    ]


def test_columns_dtypes_order_and_other_values_are_preserved() -> None:
    rows = [
        llm(ts=at("2025-04-01"), inp=1),
        {"kind": "feedback", "ts": at("2025-01-02"), "score": 1.0},
        llm(ts=at("2025-01-05"), inp=2, cost=0.3),
        llm(ts=at("2025-03-01"), inp=3, model="nope"),
        llm(ts=at("2025-01-01"), inp=4),
    ]
    events = frame(*rows).with_columns(_offset=pl.int_range(5, dtype=pl.Int64))
    out = apply_pricing(events, TABLE)
    assert list(out.schema.items()) == list(EVENTS_SCHEMA.items())
    assert out.drop(DERIVED).equals(events.drop(DERIVED))
    assert out["cost_source"].to_list() == ["pricing", None, "event", "unpriced", "pricing"]
    assert out["cost_usd_effective"].to_list() == [
        pytest.approx((1 * 1 + 100 * 4) / 1e6),
        None,
        0.3,
        None,
        pytest.approx((4 * 2 + 100 * 8) / 1e6),
    ]


def test_an_empty_frame_stays_empty_with_its_schema() -> None:
    out = apply_pricing(pl.DataFrame(schema=EVENTS_SCHEMA), TABLE)
    assert out.height == 0
    assert list(out.schema.items()) == list(EVENTS_SCHEMA.items())


def test_a_frame_without_the_needed_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="cost_usd"):
        apply_pricing(frame(llm()).drop("cost_usd"), TABLE)


def _reference_cost(row: dict[str, Any], table: PricingTable) -> float | None:
    """The rule written the slow, obvious way, to check the vectorised one against."""
    day = row["ts"].date()
    rows = [r for r in table.rows if r.model == row["model"] and r.effective_from <= day]
    own = [r for r in rows if r.provider == row["provider"]]
    pool = own or rows
    if not pool:
        return None
    p = min(pool, key=lambda r: (-r.effective_from.toordinal(), r.provider))
    cache = row["cache_read_tokens"] or 0
    reasoning = row["reasoning_tokens"] or 0
    return (
        float(
            max(row["input_tokens"] - cache, 0) * p.input
            + cache * (p.cached_input if p.cached_input is not None else p.input)
            + row["output_tokens"] * p.output
            + reasoning * (p.reasoning if p.reasoning is not None else p.output)
        )
        / 1e6
    )


_llm_rows = st.builds(
    llm,
    ts=st.datetimes(
        min_value=dt.datetime(2024, 12, 1),
        max_value=dt.datetime(2025, 6, 1),
        timezones=st.just(UTC),
    ),
    model=st.sampled_from(["m", "r", "nope"]),
    provider=st.sampled_from(["acme", "other", "azure", None]),
    inp=st.integers(0, 200_000),
    out=st.integers(0, 20_000),
    cache=st.none() | st.integers(0, 200_000),
    reasoning=st.none() | st.integers(0, 20_000),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(_llm_rows, max_size=40))
def test_vectorised_pricing_agrees_with_the_row_by_row_rule(rows: list[dict[str, Any]]) -> None:
    got = [r["cost_usd_effective"] for r in priced(*rows)] if rows else []
    want = [_reference_cost(r, TABLE) for r in rows]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None and w is not None:
            assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-15)


# --------------------------------------------------------------------------- the table


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_text(text)
    return path


GOOD_ROW = "{provider: acme, model: m, effective_from: 2025-01-01, input: 1, output: 2}"


def table_text(*rows: str, head: str = 'version: "v1"\nsource: test\n') -> str:
    return head + "prices:\n" + "".join(f"  - {r}\n" for r in rows)


def test_a_table_file_loads_with_optional_prices_defaulting_to_none(tmp_path: Path) -> None:
    text = table_text(
        GOOD_ROW,
        "{provider: acme, model: r, effective_from: '2025-02-01', input: 1.5, output: 6,"
        " cached_input: 0.15, reasoning: null}",
    )
    table = load_pricing(write(tmp_path, text))
    assert table.version == "v1"
    assert table.origin == str(tmp_path / "pricing.yaml")
    assert table.rows == (
        PriceRow("acme", "m", dt.date(2025, 1, 1), 1.0, 2.0),
        PriceRow("acme", "r", dt.date(2025, 2, 1), 1.5, 6.0, cached_input=0.15),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            table_text("{provider: acme, model: m, effective_from: 2025-01-01, input: 1}"),
            r"prices\[0\]\.output: required key is missing",
        ),
        (
            table_text(
                GOOD_ROW,
                "{provider: acme, model: x, effective_from: 2025-01-01, input: -1, output: 2}",
            ),
            r"prices\[1\]\.input: must be a finite price >= 0, got -1",
        ),
        (
            table_text(
                GOOD_ROW,
                "{provider: b, model: x, effective_from: 2025-01-01,"
                " input: 1, output: 2, cached_input: -0.1}",
            ),
            r"prices\[1\]\.cached_input: must be a finite price >= 0",
        ),
        (
            table_text(GOOD_ROW, GOOD_ROW.replace("input: 1", "input: 9")),
            r"prices\[0\] and prices\[1\] both price acme/m from 2025-01-01",
        ),
        (
            table_text(GOOD_ROW.replace("2025-01-01", "2025-13-01")),
            r"prices\[0\]\.effective_from: Invalid RFC3339 encoded date",
        ),
        (
            table_text(GOOD_ROW.replace("input: 1", "input: '1.5'")),
            r"prices\[0\]\.input: Expected `float`, got `str`",
        ),
        (
            table_text(GOOD_ROW.replace("output: 2", "output: 2, ouput: 3")),
            r"prices\[0\]\.ouput: unknown key \(did you mean output\?\)",
        ),
        (
            table_text(GOOD_ROW.replace("effective_from", "effective_form")),
            r"prices\[0\]\.effective_form: unknown key \(did you mean effective_from\?\)",
        ),
        (table_text(GOOD_ROW, head="source: test\n"), r"version: required key is missing"),
        (
            table_text(GOOD_ROW, head="version: 1.10\nsource: x\n"),
            r"version: Expected `str`, got `float`",
        ),
        ('version: "v"\nsource: s\nprices: []\n', r"prices: must list at least one row"),
        ("- just\n- a list\n", r"must be a mapping, got \['just', 'a list'\]"),
        ("version: [unclosed\n", r"not valid YAML"),
    ],
    ids=[
        "missing-column",
        "negative-price",
        "negative-cached",
        "duplicate",
        "bad-date",
        "string-price",
        "unknown-column",
        "misspelt-required-column",
        "no-version",
        "float-version",
        "no-rows",
        "not-a-mapping",
        "not-yaml",
    ],
)
def test_malformed_tables_are_rejected_with_a_clear_message(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError, match=message) as err:
        load_pricing(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI reports it and exits 2


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match=r"nope\.yaml: cannot read: "):
        load_pricing(tmp_path / "nope.yaml")


def test_the_same_model_and_date_under_two_providers_is_allowed() -> None:
    assert len(TABLE.rows) == 4
    with pytest.raises(PricingError, match="both price acme/m"):
        PricingTable("v", "s", (TABLE.rows[0], TABLE.rows[0]))


def test_the_path_comes_from_settings_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTWATCH_PRICING_FILE", raising=False)
    assert pricing_file(Settings()) is None
    assert pricing_file(Settings(decode_config({"pricing": {"file": "p.yaml"}}, "t.toml"))) == Path(
        "p.yaml"
    )
    path = write(tmp_path, table_text(GOOD_ROW, head='version: "from-env"\nsource: s\n'))
    monkeypatch.setenv("AGENTWATCH_PRICING_FILE", str(path))
    assert pricing_file(Settings(decode_config({"pricing": {"file": "p.yaml"}}, "t.toml"))) == path
    assert load_pricing().version == "from-env"


# --------------------------------------------------------------------------- shipped table


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> PricingTable:
    monkeypatch.delenv("AGENTWATCH_PRICING_FILE", raising=False)
    return load_pricing()


def test_the_shipped_table_is_valid_and_has_a_dated_price_change(shipped: PricingTable) -> None:
    assert shipped.version and shipped.source
    assert shipped.origin == "built-in pricing.yaml"
    changed = {r.model for r in shipped.rows if sum(o.model == r.model for o in shipped.rows) > 1}
    assert {"gpt-4o", "gemini-1.5-flash"} <= changed


def test_the_shipped_table_prices_every_simulated_model_as_the_simulator_does(
    shipped: PricingTable,
) -> None:
    now = dt.datetime.now(UTC)
    current = {(r.provider, r.model): r for r in shipped.in_force(now)}
    simulated = {m for make in PROFILES.values() for m in make().models.items}
    assert {m.name for m in simulated} >= {"gpt-4o-mini", "gpt-4o", "o3-mini", "claude-3-5-sonnet"}
    for spec in simulated:
        row = current.get((spec.provider, spec.name))
        assert row is not None, f"{spec.provider}/{spec.name} has no price in force"
        assert (row.input, row.output) == (spec.usd_per_mtok_input, spec.usd_per_mtok_output)
        assert row.cached_input == spec.usd_per_mtok_cache_read
        assert row.reasoning in (None, spec.usd_per_mtok_output)  # billed as output


def test_simulated_events_are_priced_as_the_simulator_reports_them(shipped: PricingTable) -> None:
    fleet = Fleet(make_agents(8), seed=3, start=dt.datetime(2026, 1, 5, tzinfo=UTC))
    encode = msgspec.json.Encoder().encode
    events = decode_batch(batch_of([encode(e) for e in fleet.events_until(fleet.start + 120)]))
    reported = events.events.filter(pl.col("cost_usd").is_not_null())
    assert reported.height > 20
    assert reported["reasoning_tokens"].is_not_null().any()
    assert reported["cache_read_tokens"].is_not_null().any()
    repriced = apply_pricing(reported.with_columns(cost_usd=None), shipped)
    assert set(repriced["cost_source"]) == {"pricing"}
    for want, got in zip(reported["cost_usd"], repriced["cost_usd_effective"], strict=True):
        assert got == pytest.approx(want, abs=1e-8)  # the simulator rounds to 8 places
