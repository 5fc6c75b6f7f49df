"""The lake: a batch lands whole or not at all, once, and readers are never in the way."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import duckdb
import polars as pl
import pytest

from agentwatch.errors import ConfigError
from agentwatch.processors.landing.decode import decode_batch
from agentwatch.processors.store.attach import StoreMissing, attach_statement, is_metadata_race
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import ROW_GROUP_ROWS, Batch, LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.migrate import migrate
from agentwatch.processors.store.partition_rows import read_partition
from tests.examples import invalid_examples, valid_lines
from tests.test_decode import batch_of

TOPIC = "agent-events"


def lake(tmp_path: Path) -> LakeStore:
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    store.recover(TOPIC, 0)
    return store


def events(n: int | None = None) -> pl.DataFrame:
    """The valid examples as one batch at offsets 100.. of partition 0."""
    lines = valid_lines()[:n] if n is not None else valid_lines()
    return decode_batch(batch_of(list(lines))).events


def count(store: LakeStore, table: str = "events") -> int:
    with connect_lake(store.db) as con:
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def commit(store: LakeStore, first: int, last: int, frame: pl.DataFrame | None = None) -> bool:
    frame = events() if frame is None else frame
    return store.commit_batch(TOPIC, 0, (first, last), frame, pl.DataFrame())


def test_the_views_work_before_any_batch_lands(tmp_path: Path) -> None:
    store = lake(tmp_path)
    assert count(store) == 0
    assert count(store, "dead_letters") == 0
    assert count(store, "metrics_1m") == 0


def test_a_committed_batch_is_visible_to_a_reader(tmp_path: Path) -> None:
    store = lake(tmp_path)
    assert commit(store, 100, 100 + len(valid_lines()) - 1)
    assert count(store) == len(valid_lines())
    with connect_lake(store.db) as con:
        assert con.execute("SELECT count(DISTINCT kind) FROM events").fetchone() == (9,)


def test_a_large_batch_is_written_in_row_groups_of_bounded_rows(tmp_path: Path) -> None:
    store = lake(tmp_path)
    one = events()
    many = pl.concat([one] * (2 * ROW_GROUP_ROWS // one.height + 1))
    assert commit(store, 0, many.height - 1, many)
    files = store.con.execute(
        f"SELECT data_file FROM ducklake_list_files('{store.alias}', 'events')"
    ).fetchall()
    groups = store.con.execute(
        "SELECT row_group_num_rows FROM parquet_metadata(?) GROUP BY ALL",
        [[f for (f,) in files]],
    ).fetchall()
    assert len(groups) > 1
    # DuckDB closes a row group at the first vector (2,048 rows) that reaches the size.
    assert max(rows for (rows,) in groups) < ROW_GROUP_ROWS + 2048


def test_the_committed_offset_is_the_last_offset_of_the_last_batch(tmp_path: Path) -> None:
    store = lake(tmp_path)
    assert store.committed_last_offset(TOPIC, 0) is None
    commit(store, 0, 9, events(0))
    commit(store, 10, 41, events(0))
    assert store.committed_last_offset(TOPIC, 0) == 41
    assert store.committed_last_offset(TOPIC, 1) is None


def test_a_partition_whose_row_two_members_both_added_still_lands_and_moves_on(
    tmp_path: Path,
) -> None:
    store = lake(tmp_path)  # its row is there; another member added one too, racing
    store.transaction(lambda con: con.execute(f"INSERT INTO _offsets VALUES ('{TOPIC}', 0, -1)"))
    assert commit(store, 0, 9, events(0))
    assert commit(store, 10, 19, events(0))
    assert not commit(store, 5, 15, events(0))
    assert store.committed_last_offset(TOPIC, 0) == 19


def test_a_batch_replayed_after_a_crash_stores_nothing_twice(tmp_path: Path) -> None:
    store = lake(tmp_path)
    assert commit(store, 100, 112)
    assert not commit(store, 100, 112)
    assert not commit(store, 105, 120)  # overlaps what is stored
    assert count(store) == len(valid_lines())


def test_a_member_that_lost_its_partition_cannot_commit_over_the_new_owner(
    tmp_path: Path,
) -> None:
    owner, zombie = lake(tmp_path), LakeStore(tmp_path / METADATA_FILE)
    assert zombie.committed_last_offset(TOPIC, 0) is None  # the zombie read this, then stalled
    assert owner.commit_batch(TOPIC, 0, (100, 149), events(), pl.DataFrame())
    assert not zombie.commit_batch(TOPIC, 0, (100, 112), events(), pl.DataFrame())
    assert count(owner) == len(valid_lines())
    assert owner.committed_last_offset(TOPIC, 0) == 149


def partition_batch(partition: int, first: int, last: int) -> Batch:
    rows = events().with_columns(_partition=pl.lit(partition, dtype=pl.Int32))
    return Batch(TOPIC, partition, (first, last), {"events": rows})


def test_batches_of_several_partitions_commit_together(tmp_path: Path) -> None:
    store = lake(tmp_path)
    store.recover(TOPIC, 1)
    stored = store.commit_batches([partition_batch(0, 100, 112), partition_batch(1, 7, 19)])
    assert stored == [True, True]
    assert count(store) == 2 * len(valid_lines())
    assert (store.committed_last_offset(TOPIC, 0), store.committed_last_offset(TOPIC, 1)) == (
        112,
        19,
    )


def test_a_partition_committed_past_is_left_out_of_a_joint_commit_and_the_others_stored(
    tmp_path: Path,
) -> None:
    owner, zombie = lake(tmp_path), LakeStore(tmp_path / METADATA_FILE)
    owner.recover(TOPIC, 1)
    assert owner.commit_batch(TOPIC, 0, (100, 149), events(), pl.DataFrame())
    stored = zombie.commit_batches([partition_batch(0, 100, 112), partition_batch(1, 7, 19)])
    assert stored == [False, True]
    assert count(owner) == 2 * len(valid_lines())
    assert (owner.committed_last_offset(TOPIC, 0), owner.committed_last_offset(TOPIC, 1)) == (
        149,
        19,
    )


def test_a_batch_that_fails_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    store = lake(tmp_path)
    decoded = decode_batch(batch_of([valid_lines()[0], invalid_examples()[0][1]]))

    def refuse() -> None:
        raise RuntimeError("the dead-letter topic is gone")

    with pytest.raises(RuntimeError):
        store.commit_batch(TOPIC, 0, (100, 101), decoded.events, decoded.dead_letters, refuse)
    bad_rows = decoded.events.with_columns(_offset=pl.lit("not a number"))
    with pytest.raises(duckdb.Error):
        store.commit_batch(TOPIC, 0, (100, 101), bad_rows, decoded.dead_letters)
    assert (count(store), count(store, "dead_letters")) == (0, 0)
    assert store.committed_last_offset(TOPIC, 0) is None


def test_dead_letters_and_events_of_a_batch_commit_together(tmp_path: Path) -> None:
    store = lake(tmp_path)
    decoded = decode_batch(batch_of([valid_lines()[0], invalid_examples()[0][1]]))
    assert store.commit_batch(TOPIC, 0, (100, 101), decoded.events, decoded.dead_letters)
    assert (count(store), count(store, "dead_letters")) == (1, 1)


def test_state_is_rebuilt_from_the_horizon_not_the_whole_history(tmp_path: Path) -> None:
    store = lake(tmp_path)
    old = events().with_columns(pl.col("_kafka_ts") - pl.duration(days=2))
    commit(store, 0, 12, old.with_columns(_offset=pl.int_range(13, dtype=pl.Int64)))
    commit(store, 100, 112)
    cols = ["event_id", "_offset"]
    assert read_partition(store, "events", TOPIC, 0, cols).height == 2 * len(valid_lines())
    recent = read_partition(store, "events", TOPIC, 0, cols, within_s=3600)
    assert sorted(recent["_offset"]) == list(range(100, 113))


def test_a_reader_holding_a_half_read_result_does_not_block_a_writer(tmp_path: Path) -> None:
    store = lake(tmp_path)
    commit(store, 100, 112)
    reader = connect_lake(store.db)
    cursor = reader.execute("SELECT * FROM events, range(1000)")
    assert cursor.fetchone() is not None  # and holds the rest
    done = threading.Event()

    def land() -> None:
        writer = LakeStore(store.db)
        writer.commit_batch(TOPIC, 0, (200, 212), events(), pl.DataFrame())
        done.set()

    threading.Thread(target=land, daemon=True).start()
    assert done.wait(60), "the writer waited for the reader"
    assert count(store) == 2 * len(valid_lines())
    assert len(cursor.fetchall()) == len(valid_lines()) * 1000 - 1


def test_a_moved_data_dir_reads_its_own_files(tmp_path: Path) -> None:
    store = lake(tmp_path / "a")
    commit(store, 100, 112)
    store.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    moved = LakeStore(tmp_path / "b" / METADATA_FILE)
    assert count(moved) == len(valid_lines())
    assert "/a/" not in attach_statement(moved.db)


def test_a_process_opens_a_new_lake_after_an_earlier_one_was_deleted(tmp_path: Path) -> None:
    # One DuckDB instance per process keeps every lake it opened attached; a deleted one
    # must not break the next lake's catalog listings.
    first = lake(tmp_path / "first")
    commit(first, 100, 112)
    first.close()
    shutil.rmtree(tmp_path / "first")
    second = lake(tmp_path / "second")
    commit(second, 200, 212)
    assert count(second) == len(valid_lines())


def test_reading_a_lake_that_does_not_exist_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(StoreMissing, match="agentwatch process --db"):
        connect_lake(tmp_path / "nothing" / METADATA_FILE)


def test_a_data_dir_in_the_old_layout_is_refused_with_what_to_do(tmp_path: Path) -> None:
    write_old_layout(tmp_path)
    with pytest.raises(ConfigError, match="agentwatch store migrate"):
        LakeStore(tmp_path / METADATA_FILE).prepare()
    with pytest.raises(ConfigError, match="old layout"):
        connect_lake(tmp_path / "agentwatch.duckdb")


def test_migration_keeps_committed_rows_and_offsets_and_drops_uncommitted_ones(
    tmp_path: Path,
) -> None:
    write_old_layout(tmp_path)
    report = migrate(tmp_path / "agentwatch.duckdb")
    assert report.target == str(tmp_path / METADATA_FILE)
    store = LakeStore(tmp_path / METADATA_FILE)
    assert count(store) == len(valid_lines())
    assert count(store, "dead_letters") == 1  # the one after the committed end is not
    with connect_lake(store.db) as con:  # the old layout had no rollups: computed
        rolled = con.execute("SELECT sum(events) FROM minute_rollups").fetchone()
    assert rolled == (len(valid_lines()),)
    assert store.committed_last_offset(TOPIC, 0) == 112
    assert not commit(store, 100, 112)


def write_old_layout(root: Path) -> None:
    """A data dir as the segment store left it: one committed batch, one that never was."""
    decoded = decode_batch(batch_of([valid_lines()[0], invalid_examples()[0][1]]))
    part = root / "segments" / "events" / TOPIC / "0"
    part.mkdir(parents=True)
    events().write_parquet(part / f"L0-{100:020d}-{112:020d}.parquet")
    dead = root / "segments" / "dead_letters" / TOPIC / "0"
    dead.mkdir(parents=True)
    decoded.dead_letters.write_parquet(dead / f"L0-{100:020d}-{112:020d}.parquet")
    decoded.dead_letters.write_parquet(dead / f"L0-{113:020d}-{120:020d}.parquet")
    duckdb.connect(str(root / "agentwatch.duckdb")).close()


def test_a_read_that_finds_an_inlined_data_table_gone_is_a_race_worth_one_retry() -> None:
    raced = duckdb.InvalidInputException(
        "Attempting to fetch from an unsuccessful query result\nError: Catalog Error: "
        "Table with name ducklake_inlined_data_9_1 does not exist!"
    )
    assert is_metadata_race(raced)
    assert not is_metadata_race(duckdb.CatalogException("Table with name evnts does not exist!"))
