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

**One malloc arena.** glibc's malloc gives each thread that allocates an arena of its
own and keeps what is freed in each: a worker's landing, fetching and native threads
held 10 to 25 MB more that way. Two workers landing 1,000,000 events peaked at 361 to
363 MB each with one arena, 369 to 388 MB with glibc's default, at the same CPU (the
GIL serializes most allocations anyway). ``MALLOC_ARENA_MAX`` is read when a process
starts, so it is set for the processes spawned from now on and applied to this one
through ``mallopt``.

A value already in the environment is kept, in every case.

**Free pages of the C heap go back** (``release_free_heap``). What DuckDB and Python
allocate through glibc's malloc comes mostly from one heap that grows at its top; pages
freed below live blocks stay in the process. A live maintenance pass held 2.0 GB, 1.35
GB of it in that heap, and ``malloc_trim`` gave 1.2 GB back at once: a pass calls it
after each step. A landing worker calls it once a set is exported (2 to 3 ms a call):
landing 125 sets of 25,000 events in one process, 7 to 26 MB lower.

**A child process dies with its parent** (``die_with``): the kernel kills a landing
worker whose supervisor died, and a maintenance pass whose worker died.
"""

from __future__ import annotations

import os
import signal
from functools import cache
from typing import Any, Final

ALLOCATOR_SETTINGS: Final = "_RJEM_MALLOC_CONF"  # polars' jemalloc (symbols prefixed _rjem_)
RETURN_AT_ONCE: Final = "dirty_decay_ms:0,muzzy_decay_ms:0"
THREADS: Final = "POLARS_MAX_THREADS"
ARENAS: Final = "MALLOC_ARENA_MAX"  # glibc's malloc
ONE_ARENA: Final = "1"
_M_ARENA_MAX: Final = -8  # mallopt's parameter number for it (glibc's malloc.h)
_PR_SET_PDEATHSIG: Final = 1  # prctl's option number (linux/prctl.h)


def return_freed_memory() -> None:
    """Have polars' allocator hand freed pages back at once, and glibc's malloc keep one
    arena (unless configured already)."""
    os.environ.setdefault(ALLOCATOR_SETTINGS, RETURN_AT_ONCE)
    os.environ.setdefault(ARENAS, ONE_ARENA)
    arenas = os.environ[ARENAS]
    if arenas.isdigit() and int(arenas) > 0:
        limit_arenas(int(arenas))


def limit_arenas(arenas: int) -> bool:
    """Cap this process's malloc arenas; False where the C library is not glibc."""
    if not _glibc():  # nothing to cap
        return False
    return bool(_libc().mallopt(_M_ARENA_MAX, arenas))


def release_free_heap() -> bool:
    """Return the C heap's free pages to the kernel; False where the C library is not
    glibc (nothing to do) or nothing was returned."""
    return _glibc() and bool(_libc().malloc_trim(0))


def share_cores(cores: int, processes: int) -> None:
    """Size the thread pools of processes spawned from now on to a share of ``cores``."""
    os.environ.setdefault(THREADS, str(max(1, cores // max(1, processes))))


def duckdb_threads() -> int | None:
    """The threads this process's DuckDB may use; None: one per core (DuckDB's default)."""
    value = os.environ.get(THREADS, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


@cache
def _libc() -> Any:
    """The C library this process runs on (ctypes only here: ``agentwatch --version``
    does without it)."""
    import ctypes

    return ctypes.CDLL(None)


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # a C library without the name
        return False


def die_with(parent: int, exit_code: int) -> bool:
    """Have the kernel SIGKILL this process when ``parent`` (the thread that started it)
    ends; exit with ``exit_code`` now if it already has. False where that cannot be
    tied (not Linux): the child then outlives a killed parent."""
    import ctypes

    try:
        tied = bool(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0)
    except (OSError, AttributeError):
        tied = False
    if os.getppid() != parent:  # the parent died before the tie was made
        os._exit(exit_code)
    return tied
