"""Convert a data dir of the segment layout (before the lake) into a lake beside it.

The old layout named each segment of a topic-partition by its offset range
(``segments/<table>/<topic>/<partition>/L0-<first>-<last>.parquet``); the last offset of
a partition's committed ``events`` segments is where its processor resumed. Migration
reads every table's segments in one pass each, lands them in one lake transaction with
those offsets, so a processor started on the lake resumes exactly where the old one
stopped. Segments of batches that never committed (a crash between files) are left out,
as the old store's recovery would have dropped them. The old files stay untouched.

The old layout had no rollups: the migrated events' minute rollups are computed in the
same pass (with the session context the whole history gives) and land in the same
transaction, so ``metrics_1m/1h/1d`` and the alert rules see the migrated history.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import polars as pl

from agentwatch.errors import ConfigError
from agentwatch.processors.landing.sessions import SessionTracker
from agentwatch.processors.store.lake import OFFSETS_TABLE, LakeStore, insert_rows
from agentwatch.processors.store.layout import OLD_SEGMENTS, is_duckdb_file
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.rollups import TABLE as ROLLUPS
from agentwatch.processors.store.rollups import minute_rollups, tiers
from agentwatch.processors.store.tables import LOG_TABLES, STREAM_TABLES

log = logging.getLogger(__name__)

_SEGMENT: Final = re.compile(r"^L0-(\d{20})-(\d{20})\.parquet$")


@dataclass(frozen=True)
class MigrationReport:
    source: Path
    target: str
    events: int
    other_rows: int
    partitions: int


def migrate(old: str | Path, to: str | Path | None = None) -> MigrationReport:
    """Land every committed old segment in a new lake, with each partition's offset."""
    data_dir = Path(old)
    if data_dir.is_file() or not data_dir.exists():
        data_dir = data_dir.parent
    segments = data_dir / OLD_SEGMENTS
    if not segments.is_dir():
        raise ConfigError(f"{data_dir}: no {OLD_SEGMENTS}/ folder here, nothing to migrate")
    target = Path(to) if to is not None else data_dir / METADATA_FILE
    if is_duckdb_file(target):
        target = target.with_suffix(".sqlite")
    if target.exists():
        raise ConfigError(f"{target} already exists: migrate into a new metadata database (--to)")
    offsets = _committed_offsets(segments)
    frames: dict[str, pl.DataFrame] = {}
    for table, schema in {**STREAM_TABLES, **LOG_TABLES}.items():
        paths = _segments_of(segments / table, offsets, table in STREAM_TABLES)
        if paths:
            frame = pl.read_parquet(paths, missing_columns="insert")
            missing = [pl.lit(None, t).alias(c) for c, t in schema.items() if c not in frame]
            frames[table] = frame.with_columns(missing).select(list(schema)).cast(pl.Schema(schema))
    if "events" in frames and ROLLUPS not in frames:
        history = frames["events"].sort("_topic", "_partition", "_offset")
        frames.update(tiers(minute_rollups(history, SessionTracker().context(history))))
    store = LakeStore(target, check_layout=False)

    def land(con: duckdb.DuckDBPyConnection) -> None:
        for table, frame in frames.items():
            insert_rows(con, table, frame)
        for (topic, partition), last in offsets.items():
            con.execute(f"INSERT INTO {OFFSETS_TABLE} VALUES (?, ?, ?)", [topic, partition, last])

    with store.write_lock():
        store.transaction(land)
    store.close()
    events = frames.get("events", pl.DataFrame()).height
    report = MigrationReport(
        source=data_dir,
        target=str(target),
        events=events,
        other_rows=sum(f.height for f in frames.values()) - events,
        partitions=len(offsets),
    )
    log.info("store migrated", extra={"source": str(data_dir), "target": str(target)})
    return report


def _committed_offsets(segments: Path) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    for path in (segments / "events").glob("*/*/L0-*.parquet"):
        m = _SEGMENT.match(path.name)
        if m and path.parent.name.isdigit():
            key = (path.parent.parent.name, int(path.parent.name))
            found[key] = max(found.get(key, -1), int(m.group(2)))
    return found


def _segments_of(folder: Path, offsets: dict[tuple[str, int], int], stream: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    if not stream:
        return sorted(folder.glob("log/L0-*.parquet"))
    kept = []
    for path in sorted(folder.glob("*/*/L0-*.parquet")):
        m = _SEGMENT.match(path.name)
        if not m or not path.parent.name.isdigit():
            continue
        committed = offsets.get((path.parent.parent.name, int(path.parent.name)))
        if committed is not None and int(m.group(1)) <= committed:
            kept.append(path)
    return kept
