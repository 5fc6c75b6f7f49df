"""How the native libraries run in our processes: memory and threads.

**Freed memory goes back at once.** polars allocates through a jemalloc of its own,
which keeps freed pages about 10 s for reuse. A landing worker frees most of a set's
memory when the set is stored, and the next set comes well within 10 s, so those pages
were held for good: landing sets of 30,000 events in one process peaked at 314 to 327
MB, and at 287 to 289 MB with pages returned at once (measured on simulated events).
jemalloc reads its settings once, when polars is first imported: the CLI sets them
before any command module loads, and the processes it spawns inherit them.

**A worker's thread pools are its share of the cores.** polars and DuckDB each start a
thread per core, which is right for one process and wrong for N workers on N cores: two
workers on two cores spent 26 to 27 s of CPU landing 1,000,000 events with two threads
each, 20 to 21 s with one (and landed 15% faster, 9 to 27 MB smaller). The supervisor
sets ``POLARS_MAX_THREADS`` for the workers it spawns, and a process's DuckDB takes the
same number (``duckdb_threads``).

A value already in the environment is kept, in both cases.
"""

from __future__ import annotations

import os
from typing import Final

ALLOCATOR_SETTINGS: Final = "_RJEM_MALLOC_CONF"  # polars' jemalloc (symbols prefixed _rjem_)
RETURN_AT_ONCE: Final = "dirty_decay_ms:0,muzzy_decay_ms:0"
THREADS: Final = "POLARS_MAX_THREADS"


def return_freed_memory() -> None:
    """Have polars' allocator hand freed pages back at once (unless configured already)."""
    os.environ.setdefault(ALLOCATOR_SETTINGS, RETURN_AT_ONCE)


def share_cores(cores: int, processes: int) -> None:
    """Size the thread pools of processes spawned from now on to a share of ``cores``."""
    os.environ.setdefault(THREADS, str(max(1, cores // max(1, processes))))


def duckdb_threads() -> int | None:
    """The threads this process's DuckDB may use; None: one per core (DuckDB's default)."""
    value = os.environ.get(THREADS, "")
    return int(value) if value.isdigit() and int(value) > 0 else None
