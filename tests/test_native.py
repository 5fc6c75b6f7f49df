"""Our processes hand freed memory back at once; a worker's threads are its share of the cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentwatch.native import (
    ALLOCATOR_SETTINGS,
    ARENAS,
    ONE_ARENA,
    RETURN_AT_ONCE,
    THREADS,
    duckdb_threads,
    limit_arenas,
    return_freed_memory,
    share_cores,
)


def test_the_allocator_is_told_to_return_freed_pages_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ALLOCATOR_SETTINGS, raising=False)
    return_freed_memory()
    assert RETURN_AT_ONCE in os.environ[ALLOCATOR_SETTINGS]


def test_a_setting_already_in_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOCATOR_SETTINGS, "dirty_decay_ms:5000")
    return_freed_memory()
    assert os.environ[ALLOCATOR_SETTINGS] == "dirty_decay_ms:5000"


def test_processes_spawned_from_now_on_keep_one_malloc_arena(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ARENAS, raising=False)
    return_freed_memory()
    code = "import os; print(os.environ['MALLOC_ARENA_MAX'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ONE_ARENA


def test_the_running_process_caps_its_malloc_arenas_on_glibc() -> None:
    assert limit_arenas(1) is _glibc()  # elsewhere there is nothing to cap


def test_the_cli_sets_it_before_polars_is_loaded() -> None:
    """jemalloc reads its settings once, when polars loads: the CLI must not load it first."""
    code = "import sys, agentwatch.cli; print('polars' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("cores", "workers", "threads"), [(2, 2, 1), (8, 2, 4), (2, 4, 1), (6, 4, 1), (4, 1, 4)]
)
def test_each_worker_gets_its_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, threads: int
) -> None:
    monkeypatch.delenv(THREADS, raising=False)
    share_cores(cores, workers)
    assert os.environ[THREADS] == str(threads)
    assert duckdb_threads() == threads


def test_a_thread_count_already_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS, "3")
    share_cores(2, 2)
    assert duckdb_threads() == 3


@pytest.mark.parametrize("value", ["", "0", "many"])
def test_duckdb_keeps_its_default_without_a_usable_count(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(THREADS, value)
    assert duckdb_threads() is None


def test_a_spawned_process_s_duckdb_takes_the_shared_count(tmp_path: Path) -> None:
    code = (
        "from agentwatch.processors.store.lake import LakeStore;"
        f"store = LakeStore({str(tmp_path / 'agentwatch.sqlite')!r}); store.prepare();"
        "print(store.con.execute(\"SELECT current_setting('threads')\").fetchone()[0])"
    )
    env = {**os.environ, THREADS: "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    code = "from agentwatch.native import die_with; die_with(1, 7); print('still here')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (7, "")


def test_a_child_is_tied_to_its_parent_on_linux() -> None:
    code = "import os; from agentwatch.native import die_with; print(die_with(os.getppid(), 7))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(sys.platform == "linux")


_FRAGMENTED_HEAP = """
import ctypes
from agentwatch.native import release_free_heap
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
blocks = [libc.malloc(64 * 1024) for _ in range(3200)]  # 200 MB, below the mmap threshold
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)
for block in blocks[:-1]:  # the last block holds the heap's top: it cannot shrink
    libc.free(block)
before = rss_mb()
print(release_free_heap(), before - rss_mb())
"""


def test_the_c_heaps_free_pages_below_a_live_block_go_back_to_the_kernel() -> None:
    if not _glibc():
        pytest.skip("malloc_trim is glibc's")
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    released, freed_mb = done.stdout.split()
    assert released == "True"
    assert int(freed_mb) > 150


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False
