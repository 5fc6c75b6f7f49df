"""Polars frames go into and come out of DuckDB without pyarrow, as they went through it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl

from agentwatch.frames import query, registered
from tests.examples import FIXTURES, valid_lines

VALID = FIXTURES / "valid.jsonl"

ROWS = pl.DataFrame(
    {
        "n": [1, None, 3],
        "text": ["a", None, "c" * 40],
        "at": [dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC), None, None],
        "tags": [["x"], [], None],
        "flag": [True, False, None],
        "raw": [b"\x00\xff", None, b""],
    },
    schema={
        "n": pl.Int64,
        "text": pl.String,
        "at": pl.Datetime("us", "UTC"),
        "tags": pl.List(pl.String),
        "flag": pl.Boolean,
        "raw": pl.Binary,
    },
)


def test_a_frame_comes_back_from_duckdb_with_its_values_and_types() -> None:
    con = duckdb.connect()
    with registered(con, "rows", ROWS):
        back = query(con, "SELECT * FROM rows")
    # DuckDB names its session's zone (Etc/UTC here): the same instants
    back = back.with_columns(pl.col("at").dt.convert_time_zone("UTC"))
    assert back.schema == ROWS.schema
    assert back.equals(ROWS)


def test_a_registered_frame_can_be_scanned_twice_in_one_query() -> None:
    con = duckdb.connect()
    with registered(con, "rows", ROWS):
        pairs = query(con, "SELECT a.n FROM rows a JOIN rows b ON a.n = b.n ORDER BY 1")
    assert pairs["n"].to_list() == [1, 3]


def test_an_empty_result_keeps_its_columns_types() -> None:
    con = duckdb.connect()
    empty = query(con, "SELECT 1::BIGINT AS n, 'x' AS s, now()::TIMESTAMPTZ AS t WHERE false")
    assert empty.height == 0
    assert empty.schema["n"] == pl.Int64
    assert empty.schema["s"] == pl.String
    assert isinstance(empty.schema["t"], pl.Datetime)


def test_a_query_binds_its_parameters() -> None:
    con = duckdb.connect()
    assert query(con, "SELECT ? + 1 AS n", [41])["n"].to_list() == [42]
    assert query(con, "SELECT $x AS s", {"x": "y"})["s"].to_list() == ["y"]


def test_the_view_is_gone_after_the_block() -> None:
    con = duckdb.connect()
    with registered(con, "rows", ROWS):
        pass
    assert "rows" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}


# Landing, rebuilding a partition's state (as a worker does) and a maintenance pass, in
# an interpreter where importing pyarrow fails: a worker never loads it.
_WORKER_PATH = textwrap.dedent(
    """
    import sys, time
    sys.modules["pyarrow"] = None  # any import of it now raises
    from agentwatch.processors.landing.decode import RawBatch
    from agentwatch.processors.landing.pipeline import (
        STATE_COLUMNS, LandingSettings, PartitionState, land_batch,
    )
    from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
    from agentwatch.processors.store.partition_rows import recent_slices, recent_window
    from agentwatch.processors.store.lake import Batch, LakeStore
    from agentwatch.processors.store.maintain import MaintenancePolicy, maintain
    from agentwatch.processors.store.tables import EVENTS_SCHEMA
    import polars as pl

    store = LakeStore(sys.argv[1])
    store.prepare()
    store.recover("t", 0)
    settings = LandingSettings(max_message_bytes=1 << 20)
    state = PartitionState.rebuilt(
        settings, pl.DataFrame(schema={c: EVENTS_SCHEMA[c] for c in STATE_COLUMNS})
    )
    table = load_pricing(None)
    values = open(sys.argv[2], "rb").read().splitlines()
    n, now = len(values), int(time.time() * 1000)
    for first in (0, n):  # the second batch repeats the first: duplicates, dropped
        offsets = list(range(first, first + n))
        raw = RawBatch("t", 0, offsets, [now] * n, [None] * n, values)
        landed = land_batch(raw, state, settings, lambda f: apply_pricing(f, table))
        batch = Batch("t", 0, (first, first + n - 1), landed.tables)
        assert store.commit_batches([batch]) == [True]
    window = recent_window(store, "events", "t", 0, 3600)
    slices = list(recent_slices(store, "events", "t", 0, STATE_COLUMNS, window, 7))
    stored = sum(s.height for s in slices)
    assert stored == n, (stored, n)
    PartitionState.replayed(settings, slices, window.newest_ts)
    maintain(store, MaintenancePolicy(retention_days={}), pause=lambda s: None)
    print("landed", stored)
    """
)


def test_a_worker_lands_rebuilds_and_maintains_without_loading_pyarrow(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WORKER_PATH, str(tmp_path / "agentwatch.sqlite"), str(VALID)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["landed", str(len(valid_lines()))]
