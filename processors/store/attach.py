"""Where the lake is opened: one DuckDB instance per process, each lake attached once.

Loading DuckDB's extensions and attaching a lake take a while (the metadata database is read), so a
process does both once: every connection is a cursor of one shared instance, with its own
transactions, and each lake is attached there once per mode (read-only or read-write)
under an alias of its own. Readers get read-only attachments: they see each committed
snapshot and never block a writer.
"""

from __future__ import annotations

import itertools
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Final, TypeVar

import duckdb

from agentwatch.errors import first_line
from agentwatch.native import duckdb_threads
from agentwatch.processors.store import extensions
from agentwatch.processors.store.layout import refuse_old_layout
from agentwatch.processors.store.location import (
    ALIAS,
    METADATA_FILE,
    StoreLocation,
    create_s3_secret,
    locate,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreMissing(FileNotFoundError):
    """A reader asked for a lake that nothing has created yet."""


class NotALake(OSError):
    """``--db`` names something other than a lake's metadata database."""


def refuse_foreign(location: StoreLocation) -> None:
    """Raise :class:`NotALake` when the metadata file is a folder, or a file that holds
    something other than a lake: attaching would fail with a puzzling error, or, for a
    writer, add the lake's tables to an unrelated SQLite database."""
    path = location.metadata_file
    if path is None or not path.exists():
        return
    if any(known[0] == location for known in list(_aliases)):
        # Attached in this process: a lake, and opening the file from Python would drop
        # the locks DuckDB's SQLite holds on it (closing any descriptor of a file drops
        # all of the process's POSIX locks on it).
        return
    if path.is_dir():
        raise NotALake(
            f"{path} is a folder, not a lake's metadata database (did you mean "
            f"{path / METADATA_FILE}?)"
        )
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
    except sqlite3.OperationalError:
        return  # cannot be opened here (e.g. a read-only folder): attaching will say why
    except sqlite3.DatabaseError as exc:  # not a SQLite database at all
        raise NotALake(f"{path} is not a lake's metadata database ({exc})") from exc
    if tables and not any(t.startswith("ducklake_") for t in tables):
        raise NotALake(
            f"{path} is a SQLite database that holds no lake (its tables: "
            f"{', '.join(sorted(tables)[:5])}): give --db the lake's metadata database"
        )


_VERSION_MISMATCH: Final = re.compile(
    r"catalog version mismatch: catalog version is ([0-9]+(?:\.[0-9]+)*), but the "
    r"extension requires version ([0-9]+(?:\.[0-9]+)*)"
)


def version_mismatch(location: StoreLocation, exc: duckdb.Error) -> NotALake | None:
    """DuckLake's refusal of a lake in another format, said for agentwatch (DuckLake's own
    advice, a DuckDB attach option, is not one agentwatch has); None for other errors."""
    found = _VERSION_MISMATCH.search(str(exc))
    if found is None:
        return None
    have, reads = found.groups()
    where = location.describe()
    if tuple(map(int, have.split("."))) > tuple(map(int, reads.split("."))):
        return NotALake(
            f"{where} is in lake format {have}, newer than this agentwatch reads ({reads}): "
            "upgrade agentwatch to use it"
        )
    return NotALake(
        f"{where} is in lake format {have}, older than this agentwatch reads ({reads}): "
        "use it with the agentwatch release that wrote it"
    )


def require_lake(location: StoreLocation) -> None:
    """Raise :class:`StoreMissing` when the lake's metadata file does not exist: a command
    that reads or tends a lake must not create an empty one where ``--db`` has a typo."""
    if location.metadata_file is not None and not location.metadata_file.exists():
        raise StoreMissing(
            f"{location.metadata_file} does not exist yet: run `agentwatch process --db "
            f"{location.metadata_file}` (or `make demo`) first"
        )


def connect(
    db: str | Path, *, read_only: bool = True, data_path: str = ""
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached as ``lake`` and in use.

    Readers get a read-only attachment: they see each committed snapshot and never block
    a writer. Plain DuckDB users do the same with the statement ``attach_statement`` gives.
    """
    location = locate(db, data_path)
    refuse_old_layout(location)
    if read_only:
        require_lake(location)
    try:
        return attach(location, read_only=read_only)
    except duckdb.InvalidInputException as exc:
        # A metadata file a processor has only begun to create holds no lake yet.
        if read_only and "does not exist" in str(exc):
            raise StoreMissing(
                f"{location.describe()} holds no lake yet: a processor is creating it"
            ) from exc
        raise


def attach(location: StoreLocation, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A new connection with the lake attached and in use; one DuckDB instance per process.

    Loading the extensions and attaching a lake take a while, so each process does both
    once: every connection is a cursor of one shared instance (its own transactions), and
    each lake is attached there once per mode under an alias of its own.
    """
    with _attach_lock:
        key = (location, read_only, _identity(location))
        alias = _aliases.get(key)
        if alias is None:
            refuse_foreign(location)
            _detach_replaced()
            if not read_only and location.metadata_file is not None:
                _create_sqlite_metadata(location.metadata_file)
            base = _shared_instance(location.extensions)
            alias = f"{ALIAS}_{next(_attached)}_{'ro' if read_only else 'rw'}"
            create_s3_secret(base, location)
            try:
                _attach_new(base, location.attach_sql(read_only=read_only, alias=alias))
            except duckdb.Error as exc:
                mismatch = version_mismatch(location, exc)
                if mismatch is None:
                    raise
                raise mismatch from exc
            _aliases[(location, read_only, _identity(location))] = alias
        assert _instance is not None
        con = _instance.cursor()
    while True:  # using the lake reads its catalog, which may need more than a low limit
        try:
            con.execute(f"USE {alias}")
            return con
        except duckdb.Error as exc:
            if not raise_memory_limit(exc):
                raise


def _detach_replaced() -> None:
    """Detach local lakes whose metadata file was deleted or replaced since they were
    attached: database-wide listings (such as ``duckdb_columns()``) would fail on them."""
    if _instance is None:
        return
    for key, alias in list(_aliases.items()):
        location, _, identity = key
        if location.metadata_file is not None and _identity(location) != identity:
            with suppress(duckdb.Error):
                _instance.execute(f"DETACH {alias}")
            del _aliases[key]


def is_metadata_race(exc: duckdb.Error) -> bool:
    """Whether a read failed because a writer changed the metadata database's own tables under it.

    DuckLake keeps small inserts as rows in metadata tables it creates on first use and
    drops once flushed; a read that overlaps that moment can find one missing. The same
    read run again sees the committed state, so readers retry it once.
    """
    text = str(exc)
    return "ducklake_inlined_data_" in text and "does not exist" in text


CREATE_RACE_RETRIES: Final = 10
# A writer's first wait after finding the SQLite metadata database busy (location.py);
# the moment passes within milliseconds.
BUSY_RETRY_S: Final = 0.005
# How often a statement is retried while the metadata database stays busy (doubling waits).
MAX_BUSY_RETRIES: Final = 10


# How far a process's DuckDB memory limit is raised for a statement that needs more.
MAX_MEMORY_DOUBLINGS: Final = 6


def limit_memory(mb: float | None) -> None:
    """Cap this process's DuckDB memory (``memory_limit``) at ``mb``; None: DuckDB's default.

    DuckDB keeps what it caches (among it, an entry for every file a commit writes) until
    its memory limit, 80% of the machine's by default, is reached: a landing worker grew
    by about 40 KB a commit, up to 7,200 commits an hour at its default flush interval,
    and neither a maintenance pass nor attaching again gave it back. Under a limit DuckDB
    evicts that cache instead (600 commits of 2,000 events under 40 MB: 191 to 193 MB).

    Under a limit nothing is spilled to disk: an in-memory DuckDB spills to ``.tmp`` in
    the working directory, which the workers of one supervisor share, and two workers
    spilling there at once broke each other's commits ("Could not read enough bytes from
    file .tmp/duckdb_temp_storage..."). A statement that needs more than the limit fails
    instead and is run again under a doubled one (``raise_memory_limit``).
    """
    global _memory_mb
    with _attach_lock:
        _memory_mb = None if mb is None else (mb, mb)
        if mb is None and _instance is not None and _defaults:
            # not RESET: DuckDB 1.5 resets the setting but keeps the buffer pool's limit
            limit, spill_to = _defaults
            _instance.execute(f"SET GLOBAL memory_limit = '{limit}'")
            _instance.execute(f"SET GLOBAL temp_directory = '{spill_to}'")
        _apply_memory_limit()


def raise_memory_limit(exc: duckdb.Error) -> bool:
    """Double the limit ``limit_memory`` set when ``exc`` is DuckDB running out of it;
    False when it is not, or the limit was doubled ``MAX_MEMORY_DOUBLINGS`` times."""
    with _attach_lock:
        return _doubled(exc)


def _doubled(exc: duckdb.Error) -> bool:
    """``raise_memory_limit`` for a caller holding the attach lock."""
    global _memory_mb
    if not isinstance(exc, duckdb.OutOfMemoryException) or _memory_mb is None:
        return False
    asked, current = _memory_mb
    if current >= asked * 2**MAX_MEMORY_DOUBLINGS:
        return False
    log.warning(
        "DuckDB needed more memory than its limit: limit doubled",
        extra={"from_mb": current, "to_mb": current * 2, "error": first_line(exc)},
    )
    _memory_mb = (asked, current * 2)
    _apply_memory_limit()
    return True


def memory_limit() -> str | None:
    """DuckDB's memory limit in this process as it states it ("64.0 MiB"); None before
    a lake is opened."""
    with _attach_lock:
        return None if _instance is None else _stated(_instance, "memory_limit")


def memory_held() -> tuple[int, int | None] | None:
    """What this process's DuckDB holds in its buffers and its limit after any doubling,
    in bytes (None: no limit set); None before a lake is opened. Safe from any thread."""
    with _attach_lock:
        if _instance is None:
            return None
        with _instance.cursor() as cursor:  # a connection of this thread's own
            sql = "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
            row = cursor.execute(sql).fetchone()
        limit = None if _memory_mb is None else int(_memory_mb[1] * 2**20)
        return (0 if row is None else int(row[0])), limit


def _stated(con: duckdb.DuckDBPyConnection, setting: str) -> str:
    """A setting as DuckDB states it, which its ``SET`` takes back."""
    row = con.execute(f"SELECT current_setting('{setting}')").fetchone()
    return "" if row is None else str(row[0])


def _apply_memory_limit() -> None:
    """Set the limit on the instance; one below what DuckDB holds already is doubled."""
    global _memory_mb
    while _instance is not None and _memory_mb is not None:
        asked, mb = _memory_mb
        try:
            _instance.execute("SET GLOBAL temp_directory = ''")  # no spilling (above)
            _instance.execute(f"SET GLOBAL memory_limit = '{int(mb * 1024)}KiB'")
            return
        except duckdb.OutOfMemoryException:
            if mb >= asked * 2**MAX_MEMORY_DOUBLINGS:
                raise
            _memory_mb = (asked, mb * 2)


def is_busy(exc: duckdb.Error) -> bool:
    """Whether a statement failed because the SQLite metadata database was busy for a moment."""
    return "database is locked" in str(exc)


def retry_busy(run: Callable[[], T]) -> T:
    """``run()``, run again (waits doubling from ``BUSY_RETRY_S``) while it fails because
    the SQLite metadata database is busy: for reads, which are the same when repeated."""
    for attempt in range(MAX_BUSY_RETRIES):
        try:
            return run()
        except duckdb.Error as exc:
            if not is_busy(exc) or attempt == MAX_BUSY_RETRIES - 1:
                raise
            time.sleep(BUSY_RETRY_S * 2**attempt)
    raise AssertionError("unreachable")


def _attach_new(base: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Attach, waiting out another process that is creating the same new metadata database.

    Processors started together on an empty PostgreSQL database all find no metadata database and
    all create its tables; PostgreSQL lets one of them do it and the others fail with a
    duplicate key. They attach again, then find the metadata database the first one created.
    """
    attempt = 0
    while True:
        try:
            retry_busy(lambda: base.execute(sql))
            return
        except duckdb.Error as e:
            if _doubled(e):  # short of memory under a limit: again with twice as much
                continue
            racing = "Failed to initialize DuckLake" in str(e) and "already exists" in str(e)
            attempt += 1
            if not racing or attempt == CREATE_RACE_RETRIES:
                raise
            log.info("another process is creating the lake's metadata database; attaching again")
            time.sleep(0.2 * attempt)


def detach_all() -> None:
    """Close the shared instance (tests that delete a lake's files, forked workers)."""
    global _instance
    with _attach_lock:
        if _instance is not None:
            _instance.close()
        _instance = None
        _aliases.clear()
        _loaded.clear()


def _shared_instance(names: tuple[str, ...]) -> duckdb.DuckDBPyConnection:
    global _instance, _defaults
    if _instance is None:
        threads = duckdb_threads()  # a worker's share of the cores (native.py)
        more = {} if threads is None else {"threads": threads}
        _instance = duckdb.connect(config={**extensions.config(), **more})
        # Zoned timestamps come back in UTC, as every table stores them.
        _instance.execute("SET GLOBAL TimeZone = 'UTC'")
        _defaults = (_stated(_instance, "memory_limit"), _stated(_instance, "temp_directory"))
        _apply_memory_limit()
    missing = tuple(n for n in names if n not in _loaded)
    if missing:
        extensions.load(_instance, missing)
        _loaded.update(missing)
    return _instance


def _create_sqlite_metadata(path: Path) -> None:
    """Create a SQLite metadata database in WAL mode, in which readers never block the writer.

    In SQLite's default journal mode an analyst holding a half-read result keeps every
    writer out; WAL mode is a property of the file, so it is set once, before DuckLake
    creates its tables.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _identity(location: StoreLocation) -> tuple[int, int] | None:
    """A local metadata file's identity: a lake deleted and created anew is another lake."""
    metadata = location.metadata_file
    if metadata is None:
        return None
    try:
        stat = metadata.stat()
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


_attach_lock = threading.Lock()
_instance: duckdb.DuckDBPyConnection | None = None
_loaded: set[str] = set()
_aliases: dict[tuple[StoreLocation, bool, tuple[int, int] | None], str] = {}
_attached = itertools.count(1)
# (asked, now) by limit_memory and raise_memory_limit; None: DuckDB's default limit
_memory_mb: tuple[float, float] | None = None
# the shared instance's own memory limit and spill directory, as it stated them
_defaults: tuple[str, str] | None = None


def attach_statement(db: str | Path, data_path: str = "") -> str:
    """The one statement a plain DuckDB session runs to read the lake."""
    return locate(db, data_path).attach_sql(read_only=True) + f"; USE {ALIAS};"
