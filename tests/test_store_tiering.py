"""The hour and day tiers get the landed minutes from maintenance; their readers miss none."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.maintain import maintain
from agentwatch.processors.store.rollups import TIERS
from agentwatch.processors.store.tables import UNTIERED
from tests.frames import store_batch
from tests.test_store_maintain import KEEP_30_DAYS, NOW, batch, no_pause, tier_totals

# Events by period as the raw rows say, and as each metrics view reads them.
_RAW = (
    "SELECT time_bucket(INTERVAL '{width}', ts, 'UTC') AS w, count(*) FROM events "
    "GROUP BY ALL ORDER BY ALL"
)
_VIEW = "SELECT window_start, sum(events)::BIGINT FROM metrics_{every} GROUP BY ALL ORDER BY ALL"


def views_match_the_events(store: LakeStore) -> None:
    with connect_lake(store.db) as con:
        for every in TIERS.values():
            raw = con.execute(_RAW.format(width=every)).fetchall()
            assert con.execute(_VIEW.format(every=every)).fetchall() == raw, every


def stored(store: LakeStore, sql: str) -> object:
    with connect_lake(store.db) as con:
        row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_landed_minutes_reach_the_hour_and_day_tiers_at_the_next_pass(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store_batch(store, batch(0, 1.0))
    assert stored(store, "SELECT count(*) FROM hour_rollups") == 0
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert stored(store, "SELECT sum(events) FROM hour_rollups") == stored(
        store, "SELECT count(*) FROM events"
    )
    assert stored(store, f"SELECT count(*) FILTER (WHERE {UNTIERED}) FROM minute_rollups") == 0


def test_the_views_read_every_event_before_between_and_after_passes(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    steps = ["land", "pass", "land", "land", "pass", "land", "pass", "pass"]
    for i, step in enumerate(steps):
        if step == "land":
            store_batch(store, batch(100 * i, 1.0 + i / 100))  # minutes apart, one hour
        else:
            maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
        views_match_the_events(store)


def test_a_minute_with_one_row_per_keys_is_tiered_too(tmp_path: Path) -> None:
    """Nothing there to merge, but the coarser tiers must still get it."""
    store = LakeStore(tmp_path / METADATA_FILE)
    store_batch(store, batch(0, 1.0))
    report = maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert report.rollup_rows_merged == 0
    assert stored(store, "SELECT count(*) FROM day_rollups") != 0


def test_a_replayed_minute_older_than_the_merge_horizon_is_tiered(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store_batch(store, batch(0, 1.0))
    store_batch(store, batch(100, 20.0))  # 19 days before the newest: a replay
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert stored(store, f"SELECT count(*) FILTER (WHERE {UNTIERED}) FROM minute_rollups") == 0
    views_match_the_events(store)


def test_an_untiered_minute_past_the_minute_retention_is_kept_until_tiered(
    tmp_path: Path,
) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    store_batch(store, batch(0, 10.0))
    keep_minutes_a_week = replace(KEEP_30_DAYS, retention_days={"minute_rollups": 7})
    maintain(store, keep_minutes_a_week, clock=lambda: NOW, pause=no_pause)
    events = stored(store, "SELECT count(*) FROM events")
    assert stored(store, "SELECT sum(events) FROM day_rollups") == events
    assert stored(store, "SELECT count(*) FROM minute_rollups") != 0  # tiered this pass
    maintain(store, keep_minutes_a_week, clock=lambda: NOW, pause=no_pause)
    assert stored(store, "SELECT count(*) FROM minute_rollups") == 0  # then past retention
    assert stored(store, "SELECT sum(events) FROM day_rollups") == events


def test_tiering_twice_adds_nothing_twice(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    for i in range(3):
        store_batch(store, batch(100 * i, 1.0))
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    once = tier_totals(store)
    maintain(store, KEEP_30_DAYS, clock=lambda: NOW, pause=no_pause)
    assert tier_totals(store) == once
