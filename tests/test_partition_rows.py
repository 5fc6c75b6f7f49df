"""A partition's recent rows read back in slices rebuild the same state as read whole."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.pipeline import (
    STATE_COLUMNS,
    LandingSettings,
    PartitionState,
    land_batch,
)
from agentwatch.processors.store.lake import Batch, LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.partition_rows import (
    read_partition,
    recent_slices,
    recent_window,
)
from agentwatch.processors.store.tables import EVENTS_SCHEMA
from tests.examples import valid_lines

TOPIC = "agent-events"
SETTINGS = LandingSettings(max_message_bytes=1 << 20)
NOW_MS = 1_780_000_000_000


def landed_lake(tmp_path: Path, batches: int) -> LakeStore:
    """A lake holding the valid examples ``batches`` times over (distinct ids each time)."""
    store = LakeStore(tmp_path / METADATA_FILE)
    store.prepare()
    store.recover(TOPIC, 0)
    state = PartitionState.rebuilt(
        SETTINGS, pl.DataFrame(schema={c: EVENTS_SCHEMA[c] for c in STATE_COLUMNS})
    )
    lines = valid_lines()
    for b in range(batches):
        values = [line.replace(b'"event_id": "', f'"event_id": "b{b}-'.encode()) for line in lines]
        first = b * len(values)
        offsets = list(range(first, first + len(values)))
        raw = RawBatch(TOPIC, 0, offsets, [NOW_MS + b] * len(values), [None] * len(values), values)
        landed = land_batch(raw, state, SETTINGS, lambda f: f)
        assert store.commit_batches([Batch(TOPIC, 0, (offsets[0], offsets[-1]), landed.tables)])
    return store


def test_an_empty_partition_has_no_window(tmp_path: Path) -> None:
    store = landed_lake(tmp_path, 0)
    assert recent_window(store, "events", TOPIC, 0, 3600) is None


def test_slices_cover_the_window_in_offset_order_within_their_size(tmp_path: Path) -> None:
    store = landed_lake(tmp_path, 3)
    window = recent_window(store, "events", TOPIC, 0, 3600)
    assert window is not None
    slices = list(recent_slices(store, "events", TOPIC, 0, ["_offset"], window, offsets=5))
    offsets = [o for s in slices for o in s["_offset"].to_list()]
    assert offsets == sorted(offsets)
    assert all(s["_offset"].max() - s["_offset"].min() < 5 for s in slices if s.height)  # type: ignore[operator]
    whole = read_partition(store, "events", TOPIC, 0, ["_offset"], within_s=3600)
    assert offsets == whole["_offset"].to_list()


def test_a_state_replayed_in_slices_equals_the_state_rebuilt_whole(tmp_path: Path) -> None:
    store = landed_lake(tmp_path, 3)
    window = recent_window(store, "events", TOPIC, 0, 3600)
    assert window is not None
    sliced = PartitionState.replayed(
        SETTINGS,
        recent_slices(store, "events", TOPIC, 0, STATE_COLUMNS, window, 4),
        window.newest_ts,
    )
    whole = PartitionState.rebuilt(
        SETTINGS, read_partition(store, "events", TOPIC, 0, STATE_COLUMNS, within_s=3600)
    )
    assert sliced.watermark == whole.watermark
    assert sliced.sessions.open == whole.sessions.open
    assert sliced.dedup.size == whole.dedup.size == 3 * len(valid_lines())


def test_rows_older_than_the_window_are_not_read(tmp_path: Path) -> None:
    store = landed_lake(tmp_path, 2)
    window = recent_window(store, "events", TOPIC, 0, 0.0005)  # the newest batch: 1 ms later
    assert window is not None
    rows = pl.concat(list(recent_slices(store, "events", TOPIC, 0, ["_offset"], window)))
    assert rows["_offset"].min() == len(valid_lines())
