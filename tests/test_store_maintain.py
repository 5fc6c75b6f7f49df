"""Lake maintenance: what retention keeps, that small files merge, and that readers never fail."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl
import pytest

from agentwatch.cli import main
from agentwatch.processors.landing.decode import decode_batch
from agentwatch.processors.store import maintain as maintenance
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.maintain import (
    MaintenancePolicy,
    PassInterrupted,
    data_files,
    maintain,
    try_lease,
)
from agentwatch.processors.store.maintenance_loop import MaintenanceLoop
from agentwatch.processors.store.rollups import KEYS, TIERS, tier_rows_sql
from agentwatch.settings import DEFAULTS
from tests.examples import valid_lines
from tests.frames import store_batch
from tests.test_decode import batch_of

TOPIC = "agent-events"
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
KEEP_30_DAYS = MaintenancePolicy({"events": 30}, grace_s=0)
T = TypeVar("T")


def no_pause(seconds: float) -> None:
    """Steps follow each other at once: nothing lands beside these passes."""


def batch(first: int, age_days: float, agent: str = "hr-1") -> pl.DataFrame:
    frame = decode_batch(batch_of(list(valid_lines()))).events
    return frame.with_columns(
        ts=pl.lit(NOW - dt.timedelta(days=age_days)).cast(pl.Datetime("us", "UTC")),
        agent_id=pl.lit(agent),
        _offset=pl.int_range(first, first + frame.height, dtype=pl.Int64),
    )


def landed(tmp_path: Path, *frames: pl.DataFrame) -> LakeStore:
    store = LakeStore(tmp_path / METADATA_FILE)
    store.recover(TOPIC, 0)
    for frame in frames:
        first, last = frame["_offset"].min(), frame["_offset"].max()
        assert isinstance(first, int) and isinstance(last, int)
        assert store.commit_batch(TOPIC, 0, (first, last), frame, pl.DataFrame())
    return store


def agents(store: LakeStore) -> list[tuple[str, int]]:
    with connect_lake(store.db) as con:
        rows = con.execute("SELECT agent_id, count(*) FROM events GROUP BY 1 ORDER BY 1")
        return [(str(a), int(n)) for a, n in rows.fetchall()]


def test_retention_deletes_rows_older_than_the_table_keeps(tmp_path: Path) -> None:
    store = landed(tmp_path, batch(0, 40), batch(100, 2, agent="it-1"))
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW)
    assert report.rows_deleted == {"events": len(valid_lines())}
    assert agents(store) == [("it-1", len(valid_lines()))]


def test_an_agent_under_legal_hold_keeps_its_rows_past_retention(tmp_path: Path) -> None:
    store = landed(tmp_path, batch(0, 40, agent="legal-1"), batch(100, 40, agent="hr-1"))
    policy = MaintenancePolicy({"events": 30}, legal_hold=("legal-1",), grace_s=0)
    maintain(store, policy, clock=lambda: NOW)
    assert agents(store) == [("legal-1", len(valid_lines()))]


def test_minute_rollups_outlive_the_events_by_default(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    old, recent = batch(0, 40), batch(100, 2)
    for frame in (old, recent):
        store_batch(store, frame)
    policy = MaintenancePolicy(DEFAULTS.storage.retention_days, grace_s=0)
    report = maintain(store, policy, clock=lambda: NOW)
    assert report.rows_deleted == {"events": old.height}
    with connect_lake(store.db) as con:
        row = con.execute("SELECT sum(events) FROM metrics_1d").fetchone()
    assert row == (old.height + recent.height,)
    report = maintain(store, replace(policy, retention_days={"minute_rollups": 30}), lambda: NOW)
    assert report.rows_deleted.keys() == {"minute_rollups"}


def test_maintenance_merges_partial_rollup_rows_and_the_views_stay_the_same(
    tmp_path: Path,
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(4):  # four batches of the same minute, hour and day
        store_batch(store, batch(100 * i, 1))
    views = ("metrics_1m", "metrics_1h", "metrics_1d")

    def read() -> dict[str, list[tuple[object, ...]]]:
        with connect_lake(store.db) as con:
            return {v: con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall() for v in views}

    before = read()
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW)
    assert report.rollup_rows_merged > 0
    assert read() == before
    with connect_lake(store.db) as con:
        for table in TIERS:
            keys = ", ".join(KEYS)
            row = con.execute(f"SELECT count(*) = count(DISTINCT ({keys})) FROM {table}")
            assert row.fetchone() == (True,), table


def test_a_tier_swapped_a_few_periods_a_step_reads_the_same_and_merges_fully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i, age in enumerate((1.0, 1.01, 1.02, 1.0, 1.01, 1.02)):  # three minutes, twice
        store_batch(store, batch(100 * i, age))
    monkeypatch.setattr(maintenance, "MERGED_ROWS_PER_STEP", 1)
    before = tier_totals(store)
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    after = tier_totals(store)
    assert report.rollup_rows_merged > 0
    for table in TIERS:
        got, expect = after[table], before[table]
        assert got is not None and expect is not None
        assert got[1:] == expect[1:], table
    keys = ", ".join(KEYS)
    with connect_lake(store.db) as con:
        row = con.execute(f"SELECT count(*) = count(DISTINCT ({keys})) FROM minute_rollups")
        assert row.fetchone() == (True,)


def test_a_tier_read_a_slice_at_a_time_merges_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass's memory is bounded by its slice of partial rows, not by what landed: a
    period with more rows than a slice is read in buckets of its keys."""
    store = LakeStore(tmp_path / METADATA_FILE)
    for i, age in enumerate((1.0, 1.01, 1.02, 1.0, 1.01, 1.02)):  # three minutes, twice
        store_batch(store, batch(100 * i, age))
    monkeypatch.setattr(maintenance, "PARTIAL_ROWS_PER_READ", 1)
    reads = after_the_partial_rows_are_read(monkeypatch, "minute_rollups", lambda: None)
    swap, swapped = maintenance._swap, list[int]()

    def counted(*args: Any, **kwargs: Any) -> Any:
        call = inspect.signature(swap).bind(*args, **kwargs).arguments
        if call["table"] == "minute_rollups":
            swapped.append(call["periods"].height)
        return swap(*args, **kwargs)

    monkeypatch.setattr(maintenance, "_swap", counted)
    before = tier_totals(store)
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert {periods for periods, _ in reads} == {1}  # one period a read
    assert len(reads) > 3  # and each period's rows in buckets of their keys
    assert swapped == [1] * len(swapped)  # but swapped whole, one period a step
    after = tier_totals(store)
    for table in TIERS:
        got, expect = after[table], before[table]
        assert got is not None and expect is not None
        assert got[1:] == expect[1:], table
    with connect_lake(store.db) as con:
        keys = ", ".join(KEYS)
        row = con.execute(f"SELECT count(*) = count(DISTINCT ({keys})) FROM minute_rollups")
        assert row.fetchone() == (True,)


def tier_totals(store: LakeStore) -> dict[str, tuple[object, ...] | None]:
    """Each tier's rows, events and errors, as its readers see them (its untiered minutes
    included)."""
    with connect_lake(store.db) as con:
        sql = "SELECT count(*), sum(events), sum(errors) FROM ({})"
        return {t: con.execute(sql.format(tier_rows_sql(t))).fetchone() for t in TIERS}


def after_the_partial_rows_are_read(
    monkeypatch: pytest.MonkeyPatch, wanted: str, then: Callable[[], object]
) -> list[tuple[int, int]]:
    """Runs ``then`` once, right after a pass first read ``wanted``'s partial rows (no lock
    held); each read of them, as (periods, buckets of their keys)."""
    read, done = maintenance._partials, list[tuple[int, int]]()

    def read_then(
        con: duckdb.DuckDBPyConnection, table: str, snapshot: int, part: maintenance._Slice
    ) -> pl.DataFrame:
        result = read(con, table=table, snapshot=snapshot, part=part)
        if table == wanted:
            done.append((part.periods.height, part.buckets))
            if len(done) == 1:
                then()
        return result

    monkeypatch.setattr(maintenance, "_partials", read_then)
    return done


def test_rows_landed_while_rollups_are_merged_are_merged_in_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, expected = LakeStore(tmp_path / METADATA_FILE), LakeStore(tmp_path / "b" / METADATA_FILE)
    for i in range(4):
        store_batch(expected, batch(100 * i, 1))
        if i < 3:
            store_batch(store, batch(100 * i, 1))
    landed = after_the_partial_rows_are_read(
        monkeypatch, "minute_rollups", lambda: store_batch(store, batch(300, 1))
    )
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert landed
    totals, want = tier_totals(store), tier_totals(expected)
    assert totals["minute_rollups"] != want["minute_rollups"]  # fewer rows: merged
    for table in TIERS:
        got, expect = totals[table], want[table]
        assert got is not None and expect is not None
        assert got[1:] == expect[1:], table


def test_a_tier_whose_rows_were_deleted_during_the_pass_is_left_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(3):
        store_batch(store, batch(100 * i, 1))
    one_kind = "kind = (SELECT min(kind) FROM minute_rollups)"
    gone = store.con.execute(f"SELECT sum(events) FROM minute_rollups WHERE {one_kind}")
    events_gone = gone.fetchone()
    delete = f"DELETE FROM minute_rollups WHERE {one_kind}"
    deleted = after_the_partial_rows_are_read(
        monkeypatch, "minute_rollups", lambda: store.con.execute(delete)
    )
    before = tier_totals(store)["minute_rollups"]
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert deleted
    keys = ", ".join(KEYS)
    partial = f"SELECT count(*) > count(DISTINCT ({keys})) FROM minute_rollups"
    with connect_lake(store.db) as con:
        assert con.execute(partial).fetchone() == (True,)  # left as it was
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    with connect_lake(store.db) as con:
        assert con.execute(partial).fetchone() == (False,)  # merged by the next pass
    assert before is not None and events_gone is not None
    for table, totals in tier_totals(store).items():
        assert totals is not None
        assert totals[1] == before[1] - events_gone[0], table  # nothing deleted came back


def test_files_left_with_deleted_rows_by_merging_rollups_are_rewritten(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i, age in enumerate((1.0, 1.0, 1.5, 1.5)):  # two hours, two batches each
        store_batch(store, batch(100 * i, age))
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW)  # one merged file holds both hours
    store_batch(store, batch(400, 1.0))
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW)  # merges one hour again
    assert report.rollup_rows_merged > 0
    for table in TIERS:
        files = f"ducklake_list_files('{store.alias}', '{table}')"
        row = store.con.execute(f"SELECT count(delete_file) FROM {files}").fetchone()
        assert row == (0,), table


def test_a_lake_without_hour_and_day_tiers_gets_them_from_its_minutes(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store_batch(store, batch(0, 1))
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW)  # the minutes tiered
    with connect_lake(store.db) as con:
        before = con.execute("SELECT * FROM metrics_1d ORDER BY ALL").fetchall()
    store.con.execute("DROP TABLE hour_rollups")
    store.con.execute("DROP TABLE day_rollups")
    store.close()
    LakeStore(tmp_path / METADATA_FILE).prepare()
    with connect_lake(store.db) as con:
        assert con.execute("SELECT * FROM metrics_1d ORDER BY ALL").fetchall() == before
        assert con.execute("SELECT count(*) FROM hour_rollups").fetchone() != (0,)


def test_zero_days_keeps_a_table_for_ever(tmp_path: Path) -> None:
    store = landed(tmp_path, batch(0, 4000))
    maintain(store, MaintenancePolicy({"events": 0}, grace_s=0), clock=lambda: NOW)
    assert agents(store) == [("hr-1", len(valid_lines()))]


def test_small_files_are_merged_and_nothing_is_lost(tmp_path: Path) -> None:
    store = landed(tmp_path, *(batch(100 * i, 1) for i in range(12)))
    before = data_files(store)
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW)
    assert before == 12
    assert report.files_after < before
    assert agents(store) == [("hr-1", 12 * len(valid_lines()))]


def test_a_reader_opened_before_maintenance_keeps_working_after_it(tmp_path: Path) -> None:
    store = landed(tmp_path, *(batch(100 * i, 40 if i < 3 else 1) for i in range(8)))
    reader = connect_lake(store.db)
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (8 * len(valid_lines()),)
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW)  # grace 0: replaced files go at once
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (5 * len(valid_lines()),)


def test_one_member_at_a_time_holds_the_maintenance_lease(tmp_path: Path) -> None:
    store = landed(tmp_path)
    t = NOW
    assert try_lease(store, "a", 60, clock=lambda: t)
    assert not try_lease(store, "b", 60, clock=lambda: t)
    assert try_lease(store, "a", 60, clock=lambda: t)  # renewed
    t = NOW + dt.timedelta(seconds=61)
    assert try_lease(store, "b", 60, clock=lambda: t)  # a's lease ran out


def test_store_maintain_applies_retention_from_its_flags(tmp_path: Path) -> None:
    store = landed(tmp_path, batch(0, 2000), batch(100, 1))  # NOW is months before today
    code = main(["store", "maintain", "--db", store.db, "--retention", "events=1000"])
    assert code == 0
    assert agents(store) == [("hr-1", len(valid_lines()))]


def test_store_maintain_runs_its_steps_back_to_back_on_request_and_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(2):
        store_batch(store, batch(100 * i, 1))
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail(f"slept {s} s"))
    assert main(["store", "maintain", "--db", store.db, "--no-pause"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] > 1
    assert summary["rollup_rows_merged"] > 0


def test_store_maintain_refuses_an_unknown_table(tmp_path: Path) -> None:
    store = landed(tmp_path)
    assert main(["store", "maintain", "--db", store.db, "--retention", "evnts=30"]) == 2


def test_maintenance_of_a_lake_that_does_not_exist_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo" / "agentwatch.sqlite"
    assert main(["store", "maintain", "--db", str(missing)]) == 1
    assert "does not exist yet" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_each_step_is_followed_by_a_pause_as_long_as_it_took(tmp_path: Path) -> None:
    store = landed(tmp_path, *(batch(100 * i, 1) for i in range(4)))
    pauses: list[float] = []
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=pauses.append)
    assert report.steps > 1
    assert len(pauses) >= report.steps  # and after the rollups' reading and merging
    assert report.longest_step_s in pauses


def test_snapshots_expire_a_slice_a_step_and_the_lake_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = landed(tmp_path, *(batch(100 * i, 1) for i in range(5)))
    monkeypatch.setattr(maintenance, "SNAPSHOTS_PER_STEP", 2)
    now = dt.datetime.now(dt.UTC)  # the snapshots' own times are real ones
    report = maintain(store, MaintenancePolicy({}, grace_s=0), lambda: now, pause=no_pause)
    assert report.snapshots_expired > 2
    older = f"SELECT count(*) FROM ducklake_snapshots('{store.alias}') WHERE snapshot_time < ?"
    assert store.con.execute(older, [now]).fetchone() == (0,)
    assert agents(store) == [("hr-1", 5 * len(valid_lines()))]


@pytest.mark.parametrize("steps", [1, 4, 12])
def test_a_pass_ended_between_two_steps_leaves_a_lake_that_reads_the_same(
    tmp_path: Path, steps: int
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i, age in enumerate((1.0, 1.01, 1.0, 1.01)):
        store_batch(store, batch(100 * i, age))
    views = ("metrics_1m", "metrics_1h", "metrics_1d")

    def read() -> dict[str, list[tuple[object, ...]]]:
        with connect_lake(store.db) as con:
            return {v: con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall() for v in views}

    before, paused = read(), []

    def pause(seconds: float) -> None:
        paused.append(seconds)
        if len(paused) == steps:
            raise PassInterrupted("the test ends it here")

    with pytest.raises(PassInterrupted):
        maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=pause)
    assert read() == before
    assert agents(store) == [("hr-1", 4 * len(valid_lines()))]


def test_a_member_that_stops_ends_its_pass_at_the_next_pause(tmp_path: Path) -> None:
    store = landed(tmp_path, batch(0, 1))
    loop = MaintenanceLoop(store.db, KEEP_30_DAYS, interval_s=60)
    loop.pause(0)  # holds the lease: goes on
    loop.stop()
    with pytest.raises(PassInterrupted, match="stopping"):
        loop.pause(0)


def test_a_members_passes_run_in_a_process_of_their_own_and_maintain_the_lake(
    tmp_path: Path,
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(3):
        store_batch(store, batch(100 * i, 1))
    before = data_files(store)
    loop = MaintenanceLoop(store.db, KEEP_30_DAYS, interval_s=0.2)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while loop.passes == 0 and time.monotonic() < deadline:  # a pass starts a process
            time.sleep(0.05)
    finally:
        loop.stop()
    assert loop.passes >= 1
    assert loop.last_pass_pid not in (None, os.getpid())
    assert data_files(store) < before


def test_a_member_whose_lease_another_took_ends_its_pass_at_the_next_renewal(
    tmp_path: Path,
) -> None:
    store = landed(tmp_path, batch(0, 1))
    assert try_lease(store, "another member", 600)
    loop = MaintenanceLoop(store.db, KEEP_30_DAYS, interval_s=60)
    with pytest.raises(PassInterrupted, match="lease"):
        loop.pause(0)
    loop.stop()


def test_a_pass_merges_the_files_it_found_and_leaves_those_landing_meanwhile(
    tmp_path: Path,
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(3):
        store_batch(store, batch(100 * i, 1))
    landed_meanwhile: list[int] = []

    def land_a_batch(seconds: float) -> None:  # a batch lands during every pause
        if len(landed_meanwhile) == 300:
            raise AssertionError("the pass chases the files landing beside it")
        landed_meanwhile.append(1)
        store.insert_tables({"events": batch(1000 * len(landed_meanwhile), 1)})

    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=land_a_batch)
    assert report.files_after > 0
    total = (3 + len(landed_meanwhile)) * len(valid_lines())
    assert agents(store) == [("hr-1", total)]


def test_the_offsets_that_every_commit_updates_are_flushed_out_of_the_metadata_database(
    tmp_path: Path,
) -> None:
    store = landed(tmp_path, *(batch(100 * i, 1) for i in range(4)))
    offsets_files = f"SELECT count(*) FROM ducklake_list_files('{store.alias}', '_offsets')"
    assert store.con.execute(offsets_files).fetchone() == (0,)  # inlined, one row a commit
    maintain(store, MaintenancePolicy({}, grace_s=0), pause=no_pause)
    assert store.con.execute(offsets_files).fetchone() == (1,)


def test_a_pass_that_fails_is_said_in_its_process_and_tried_again_next_interval(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(3):
        store_batch(store, batch(100 * i, 1))
    next((tmp_path / "lake").rglob("*.parquet")).unlink()  # a pass cannot merge without it
    loop = MaintenanceLoop(store.db, KEEP_30_DAYS, interval_s=0.2)
    loop.start()
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            if loop.last_pass_pid is not None:
                pids.add(loop.last_pass_pid)
            time.sleep(0.02)
    finally:
        loop.stop()
    assert len(pids) >= 2  # a second pass in a new process after the failed one
    assert loop.passes == 0
    assert "lake maintenance failed" in capfd.readouterr().err


def test_a_pass_runs_under_the_members_duckdb_memory_limit(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the pass's process logs as this one does
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(3):
        store_batch(store, batch(100 * i, 1))
    before = data_files(store)
    loop = MaintenanceLoop(store.db, KEEP_30_DAYS, interval_s=0.2, memory_mb=48)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while loop.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert loop.passes >= 1
    assert data_files(store) < before
    assert '"duckdb_memory_limit": "48.0 MiB"' in capfd.readouterr().err
