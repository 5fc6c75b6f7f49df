"""Segments: atomic, idempotent by name, recoverable after a crash, readable by DuckDB."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from agentwatch.processors.landing.decode import decode_batch
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.lake import connect as connect_lake
from agentwatch.processors.store.location import CATALOG_FILE
from tests.examples import invalid_examples, valid_lines
from tests.test_decode import batch_of


def landed(tmp_path: Path) -> LakeStore:
    store = LakeStore(tmp_path / CATALOG_FILE)
    store.prepare()
    return store


def test_views_work_before_any_segment_exists(tmp_path: Path) -> None:
    store = landed(tmp_path)
    con = connect_lake(store.catalog_path)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


def test_committed_segments_are_visible_through_the_catalog(tmp_path: Path) -> None:
    store = landed(tmp_path)
    decoded = decode_batch(batch_of(list(valid_lines())))
    store.insert("events", decoded.events)
    con = connect_lake(store.catalog_path)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (len(valid_lines()),)
    assert con.execute("SELECT count(DISTINCT kind) FROM events").fetchone() == (9,)


def test_rewriting_a_segment_name_replaces_it(tmp_path: Path) -> None:
    store = landed(tmp_path)
    decoded = decode_batch(batch_of(list(valid_lines())))
    name = SegmentName("events", "agent-events", 0, 100, 112)
    store.write(name, decoded.events)
    store.write(name, decoded.events)
    assert store.read_partition("events", "agent-events", 0, ["event_id"]).height == 13


def test_the_committed_offset_is_the_end_of_the_last_events_segment(tmp_path: Path) -> None:
    store = landed(tmp_path)
    empty = decode_batch(batch_of([])).events
    assert store.committed_last_offset("t", 0) is None
    store.insert("events", empty)
    store.insert("events", empty)
    assert store.committed_last_offset("t", 0) == 41
    assert store.committed_last_offset("t", 1) is None


def test_recovery_drops_temp_files_and_dead_letters_of_uncommitted_batches(tmp_path: Path) -> None:
    store = landed(tmp_path)
    decoded = decode_batch(batch_of([valid_lines()[0], invalid_examples()[0][1]]))
    store.insert("events", decoded.events)
    store.insert("dead_letters", decoded.dead_letters)
    orphan = store.insert("dead_letters", decoded.dead_letters)
    half_written = store.partition_dir("events", "t", 0) / ".tmp-abc-L0-x.parquet"
    half_written.write_bytes(b"PAR1 partial")
    assert store.recover("t", 0) == 9
    assert not orphan.exists()
    assert not half_written.exists()
    assert len(store.segments("dead_letters", "t", 0)) == 1


def test_catalog_is_rebuilt_when_the_data_dir_moves(tmp_path: Path) -> None:
    landed(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    store = LakeStore(tmp_path / "b" / CATALOG_FILE)
    store.prepare()
    con = connect_lake(store.catalog_path)
    row = con.execute("SELECT data_dir FROM agentwatch_catalog").fetchone()
    assert row == (str((tmp_path / "b").resolve()),)


def test_a_reader_keeps_working_while_the_catalog_is_replaced(tmp_path: Path) -> None:
    store = landed(tmp_path)
    reader = connect_lake(store.catalog_path)
    store.prepare()
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (0,)
    frame = pl.read_parquet(tmp_path / "segments" / "events" / "L0-schema.parquet")
    assert frame.height == 0


def test_a_batch_overlapping_a_commit_of_another_instance_is_refused(tmp_path: Path) -> None:
    store = landed(tmp_path)
    decoded = decode_batch(batch_of(list(valid_lines())))
    assert store.commit_batch("t", 0, (100, 112), decoded.events, decoded.dead_letters)
    assert not store.commit_batch("t", 0, (105, 130), decoded.events, decoded.dead_letters)
    assert [(a, b) for a, b, _ in store.segments("events", "t", 0)] == [(100, 112)]


def test_dead_letters_are_written_before_the_commit_and_the_hook_runs_first(
    tmp_path: Path,
) -> None:
    store = landed(tmp_path)
    decoded = decode_batch(batch_of([valid_lines()[0], invalid_examples()[0][1]]))
    seen: list[int] = []
    store.commit_batch(
        "t", 0, (100, 101), decoded.events, decoded.dead_letters,
        before_commit=lambda: seen.append(len(store.segments("events", "t", 0))),
    )  # fmt: skip
    assert seen == [0]
    assert len(store.segments("dead_letters", "t", 0)) == 1
    assert store.committed_last_offset("t", 0) == 101


def test_prepare_is_a_no_op_on_a_current_layout(tmp_path: Path) -> None:
    store = landed(tmp_path)
    schema_file = tmp_path / "segments" / "events" / "L0-schema.parquet"
    before = (schema_file.stat().st_mtime_ns, store.catalog_path.stat().st_mtime_ns)
    store.prepare()
    assert (schema_file.stat().st_mtime_ns, store.catalog_path.stat().st_mtime_ns) == before


def test_prepare_brings_an_old_schema_file_up_to_date(tmp_path: Path) -> None:
    store = landed(tmp_path)
    schema_file = tmp_path / "segments" / "events" / "L0-schema.parquet"
    pl.DataFrame(schema={"event_id": pl.String, "kind": pl.String}).write_parquet(schema_file)
    store.prepare()
    con = connect_lake(store.catalog_path)
    assert con.execute("SELECT count(cost_usd_effective) FROM events").fetchone() == (0,)
