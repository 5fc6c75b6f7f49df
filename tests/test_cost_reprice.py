"""Repricing stored events after the pricing table changes, and the ``cost`` command."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agentwatch.cli import main
from agentwatch.frames import query
from agentwatch.processors.landing.pricing import PriceRow, PricingTable, apply_pricing
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.reprice import reprice
from agentwatch.processors.store.rollups import TABLE as ROLLUPS
from agentwatch.processors.store.tables import EVENTS_SCHEMA
from tests.frames import store_batch
from tests.test_pricing import at, frame, llm

TOPIC = "agent-events"
SINCE = at("2025-02-01", "00:00:00")

OLD = PricingTable(
    version="v1",
    source="before the change",
    rows=(PriceRow("acme", "m", dt.date(2025, 1, 1), input=2.0, output=8.0),),
)
# The price of m halves from 2025-02-01 and model "new" gets a price.
NEW = PricingTable(
    version="v2",
    source="after the change",
    rows=(
        *OLD.rows,
        PriceRow("acme", "m", dt.date(2025, 2, 1), input=1.0, output=4.0),
        PriceRow("acme", "new", dt.date(2025, 1, 1), input=10.0, output=10.0),
    ),
)
NEW_YAML = """\
version: "v2"
source: after the change
prices:
  - {provider: acme, model: m, effective_from: 2025-01-01, input: 2.0, output: 8.0}
  - {provider: acme, model: m, effective_from: 2025-02-01, input: 1.0, output: 4.0}
  - {provider: acme, model: new, effective_from: 2025-01-01, input: 10.0, output: 10.0}
"""


@dataclass(frozen=True)
class Batch:
    """Rows landed together: a partition's offsets from ``first`` to ``last``."""

    partition: int
    first: int
    last: int


OLD_BATCH = Batch(0, 0, 4)
MIXED_BATCH = Batch(0, 5, 12)
OTHER_KINDS = Batch(1, 0, 1)


def land(store: LakeStore, batch: Batch, *rows: dict[str, Any]) -> None:
    """Write rows priced with the old table, as the processor would have landed them."""
    events = frame(*rows).with_columns(
        _topic=pl.lit(TOPIC),
        _partition=pl.lit(batch.partition, pl.Int32),
        _offset=pl.int_range(batch.first, batch.first + len(rows), dtype=pl.Int64),
    )
    store_batch(store, apply_pricing(events, OLD))


@pytest.fixture
def store(tmp_path: Path) -> LakeStore:
    store = LakeStore(tmp_path / "data" / METADATA_FILE)
    store.prepare()
    land(
        store,
        OLD_BATCH,
        llm(ts=at("2025-01-20")),
        llm(ts=at("2025-01-31", "23:59:59"), model="new"),
        {"kind": "tool_call", "ts": at("2025-01-20"), "tool_name": "t"},
    )
    land(
        store,
        MIXED_BATCH,
        llm(ts=at("2025-01-25")),  # before --since: stays at the old price
        llm(ts=at("2025-02-01", "00:00:00")),  # 1000 x $1 + 100 x $4 = 1400 (was 2800)
        llm(ts=at("2025-02-03"), inp=2000, out=0),  # 2000 x $1 (was 4000)
        llm(ts=at("2025-02-02"), model="new", inp=100, out=100),  # unpriced -> 2000
        llm(ts=at("2025-02-02"), model="ghost"),  # stays unpriced
        llm(ts=at("2025-02-02"), cost=0.5),  # the event's own cost: left alone
        {"kind": "feedback", "ts": at("2025-02-02"), "score": 1.0},
    )
    land(
        store,
        OTHER_KINDS,
        {"kind": "session_start", "ts": at("2025-03-01")},
        {"kind": "session_end", "ts": at("2025-03-01"), "resolution": "resolved"},
    )
    return store


def stored(store: LakeStore, batch: Batch) -> pl.DataFrame:
    with connect_lake(store.db) as con:
        return query(
            con,
            "SELECT * FROM events WHERE _partition = ? AND _offset BETWEEN ? AND ? "
            "ORDER BY _offset",
            [batch.partition, batch.first, batch.last],
        )


def costs(store: LakeStore, batch: Batch) -> list[tuple[Any, ...]]:
    cols = ["model", "cost_usd_effective", "cost_source", "pricing_version"]
    return stored(store, batch).select(cols).rows()


def snapshot(store: LakeStore) -> pl.DataFrame:
    with connect_lake(store.db) as con:
        return query(con, "SELECT * FROM events ORDER BY _partition, _offset")


def test_reprice_recomputes_priced_and_unpriced_rows_from_since_on(store: LakeStore) -> None:
    before = {b: stored(store, b) for b in (OLD_BATCH, OTHER_KINDS)}
    untouched = stored(store, MIXED_BATCH)

    report = reprice(store, NEW, SINCE)

    assert costs(store, MIXED_BATCH) == [
        ("m", pytest.approx(0.0028), "pricing", "v1"),
        ("m", pytest.approx(0.0014), "pricing", "v2"),
        ("m", pytest.approx(0.002), "pricing", "v2"),
        ("new", pytest.approx(0.002), "pricing", "v2"),
        ("ghost", None, "unpriced", None),
        ("m", 0.5, "event", None),
        (None, None, None, None),
    ]
    # Rows before --since, or not LLM calls, are as they were.
    assert stored(store, OLD_BATCH).equals(before[OLD_BATCH])
    assert stored(store, OTHER_KINDS).equals(before[OTHER_KINDS])
    assert costs(store, OLD_BATCH)[1] == ("new", None, "unpriced", None)
    # Everything but the derived cost columns is as it was, in the table's layout.
    after = stored(store, MIXED_BATCH)
    assert list(after.schema.items()) == list(EVENTS_SCHEMA.items())
    derived = ["cost_usd_effective", "cost_source", "pricing_version"]
    assert after.drop(derived).equals(untouched.drop(derived))

    assert report.rows_rewritten == 3
    assert (report.rows_repriced, report.rows_changed, report.rows_cost_changed) == (4, 3, 3)
    assert report.cost_before == pytest.approx(0.0028 + 0.004)
    assert report.cost_after == pytest.approx(0.0014 + 0.002 + 0.002)
    assert (report.unpriced_before, report.unpriced_after) == (2, 1)
    assert dict(report.unpriced_models) == {"ghost": 1}


def test_the_catalog_sees_the_repriced_values(store: LakeStore) -> None:
    reprice(store, NEW, SINCE)
    con = connect_lake(store.db)
    rows = con.execute(
        "SELECT pricing_version, count(*), round(sum(cost_usd_effective), 6) FROM events "
        "WHERE cost_source = 'pricing' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("v1", 2, 0.0056), ("v2", 3, 0.0054)]


def rollup_rows(store: LakeStore) -> int:
    with connect_lake(store.db) as con:
        row = con.execute(f"SELECT count(*) FROM {ROLLUPS}").fetchone()
    assert row is not None
    return int(row[0])


def test_the_metrics_views_see_the_repriced_costs_once(store: LakeStore) -> None:
    reprice(store, NEW, SINCE)
    corrected = rollup_rows(store)
    reprice(store, NEW, SINCE)
    assert rollup_rows(store) == corrected
    with connect_lake(store.db) as con:
        from_events = con.execute(
            "SELECT round(sum(cost_usd_effective), 9), count(*) FILTER (WHERE "
            "cost_usd_effective IS NULL) FROM events WHERE kind = 'llm_call'"
        ).fetchone()
        from_views = con.execute(
            "SELECT round(sum(cost_usd), 9), sum(unpriced_llm_calls) FROM metrics_1d"
        ).fetchone()
    assert from_views == from_events


def test_rows_stored_without_rollups_get_no_correction(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    events = frame(llm(ts=at("2025-02-02"))).with_columns(
        _topic=pl.lit(TOPIC), _partition=pl.lit(0, pl.Int32), _offset=pl.int_range(1)
    )
    store.insert("events", apply_pricing(events, OLD))
    assert reprice(store, NEW, SINCE).rows_changed == 1
    assert rollup_rows(store) == 0


def test_reprice_again_changes_nothing(store: LakeStore) -> None:
    reprice(store, NEW, SINCE)
    before = snapshot(store)
    again = reprice(store, NEW, SINCE)
    assert (again.rows_repriced, again.rows_changed, again.rows_rewritten) == (4, 0, 0)
    assert snapshot(store).equals(before)


def test_an_earlier_since_reaches_older_segments(store: LakeStore) -> None:
    report = reprice(store, NEW, at("2025-01-01", "00:00:00"))
    assert report.rows_rewritten == 6
    # The old row of m keeps its cost but is now priced by v2: changed, cost the same.
    assert (report.rows_changed, report.rows_cost_changed) == (6, 4)
    assert costs(store, OLD_BATCH)[:2] == [
        ("m", pytest.approx(0.0028), "pricing", "v2"),
        ("new", pytest.approx(0.011), "pricing", "v2"),
    ]


def test_a_dry_run_reports_but_writes_nothing(store: LakeStore) -> None:
    before = snapshot(store)
    report = reprice(store, NEW, SINCE, dry_run=True)
    assert (report.rows_changed, report.rows_rewritten) == (3, 0)
    assert report.cost_after == pytest.approx(0.0054)
    assert snapshot(store).equals(before)


def test_events_landed_before_pricing_existed_are_priced(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    derived = ["cost_usd_effective", "cost_source", "pricing_version"]
    legacy = frame(llm(ts=at("2025-02-02")), llm(ts=at("2025-02-02"), cost=0.25)).drop(derived)
    legacy = legacy.with_columns(
        _topic=pl.lit(TOPIC), _partition=pl.lit(0, pl.Int32), _offset=pl.int_range(2)
    )
    store.insert("events", legacy)
    report = reprice(store, NEW, SINCE)
    assert report.rows_repriced == 2
    after = stored(store, Batch(0, 0, 1))
    assert list(after.schema.items()) == list(EVENTS_SCHEMA.items())
    assert after.select(derived).rows() == [
        (pytest.approx(0.0014), "pricing", "v2"),
        (0.25, "event", None),
    ]


# --------------------------------------------------------------------------- the command


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """``main`` points the root logger at the captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_reprice_rewrites_and_summarises(
    store: LakeStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pricing = tmp_path / "new.yaml"
    pricing.write_text(NEW_YAML)
    db = store.db
    code = main(["cost", "reprice", "--since", "2025-02-01", "--db", db, "--pricing", str(pricing)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Reprice from 2025-02-01T00:00:00+00:00, pricing v2" in out
    assert "rows whose cost changed" in out
    assert "Models still unpriced" in out and "ghost" in out
    assert costs(store, MIXED_BATCH)[1] == ("m", pytest.approx(0.0014), "pricing", "v2")


def test_cli_dry_run_exits_0_and_changes_nothing(
    store: LakeStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pricing = tmp_path / "new.yaml"
    pricing.write_text(NEW_YAML)
    before = snapshot(store)
    argv = ["cost", "reprice", "--since", "2025-02-01T00:00:00Z", "--dry-run"]
    code = main([*argv, "--db", store.db, "--pricing", str(pricing)])
    assert code == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    assert snapshot(store).equals(before)


def test_cli_takes_the_table_from_the_environment(
    store: LakeStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pricing = tmp_path / "new.yaml"
    pricing.write_text(NEW_YAML)
    monkeypatch.setenv("AGENTWATCH_PRICING_FILE", str(pricing))
    assert main(["cost", "reprice", "--since", "2025-02-01", "--db", store.db]) == 0
    assert ", pricing v2" in capsys.readouterr().out


def test_cli_exit_codes_for_what_cannot_be_done(
    store: LakeStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "x"\nsource: s\nprices:\n  - {provider: a, model: m, input: 1}\n')
    db = store.db
    assert (
        main(["cost", "reprice", "--since", "2025-02-01", "--db", db, "--pricing", str(bad)]) == 2
    )
    assert "prices[0].effective_from: required key is missing" in capsys.readouterr().err
    empty_db = str(tmp_path / "elsewhere" / "agentwatch.sqlite")
    assert main(["cost", "reprice", "--since", "2025-02-01", "--db", empty_db]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cost", "reprice", "--since", "last tuesday", "--db", db])
    assert exc.value.code == 2
    assert "is not a date" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cost", "reprice", "--db", db])  # --since is required
    assert exc.value.code == 2


def test_cli_show_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pricing = tmp_path / "new.yaml"
    pricing.write_text(NEW_YAML)
    assert main(["cost", "show", "--pricing", str(pricing)]) == 0
    out = capsys.readouterr().out
    assert "Pricing table v2" in out
    assert "2025-02-01" in out and "(input)" in out and "(output)" in out
    assert main(["cost", "show"]) == 0
    assert "gpt-4o-mini" in capsys.readouterr().out
