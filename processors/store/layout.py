"""The data-dir layout before the lake, recognised so that nothing opens it by mistake.

Before the lake, a data dir held ``segments/<table>/...`` Parquet files and a DuckDB
file of views over them (``agentwatch.duckdb``). Pointing the new store at such a dir
would start an empty lake beside the old data and re-land Kafka from wherever its
retention begins; so any command that opens the store refuses it with what to do, and
``agentwatch store migrate`` converts it (:mod:`.migrate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from agentwatch.errors import ConfigError
from agentwatch.processors.store.location import StoreLocation

OLD_SEGMENTS: Final = "segments"
OLD_VIEWS_FILE: Final = "agentwatch.duckdb"
_DUCKDB_MAGIC: Final = b"DUCK"


class OldLayoutError(ConfigError):
    """The data dir is in the segment layout: migrate it first."""


def old_layout_dir(location: StoreLocation) -> Path | None:
    """The data dir when it holds the old layout and no lake yet, else None."""
    metadata = location.metadata_file
    if metadata is None:
        return None
    if metadata.exists() and is_duckdb_file(metadata):
        return metadata.parent
    if not metadata.exists() and (metadata.parent / OLD_SEGMENTS).is_dir():
        return metadata.parent
    return None


def refuse_old_layout(location: StoreLocation) -> None:
    folder = old_layout_dir(location)
    if folder is None:
        return
    assert location.metadata_file is not None
    target = location.metadata_file
    if is_duckdb_file(target):
        target = target.with_suffix(".sqlite")
    raise OldLayoutError(
        f"{folder} holds the store in its old layout (Parquet segments and a DuckDB file of "
        f"views): run `agentwatch store migrate --db {location.metadata_file}` to convert it "
        f"into the lake {target}, then use --db {target}"
    )


def is_duckdb_file(path: Path) -> bool:
    """A DuckDB database file (its magic bytes), as opposed to a SQLite metadata database."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[8:12] == _DUCKDB_MAGIC
