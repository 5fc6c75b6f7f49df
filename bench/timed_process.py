"""``agentwatch process`` with each commit timed, for bench/history.py.

Runs the real command (``python -m bench.timed_process process --db ...``) with the
store's ``commit_batches`` wrapped (one call, one transaction, whatever the number of
partitions in it): each call appends one JSON line to the file named by
``$BENCH_COMMIT_TIMES``: ``{"at": <time.monotonic() when it ended>, "s": <seconds>,
"stored": <bool: any batch stored>, "lock_s": <seconds waiting for the write lock>,
"cpu_s": <CPU seconds of the committing thread>}``. The monotonic clock is the system's, so the
benchmark compares it with its own.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from agentwatch.cli import main as cli_main
from agentwatch.processors.store.lake import LakeStore

COMMIT_TIMES_ENV = "BENCH_COMMIT_TIMES"


def main() -> int:
    out = open(os.environ[COMMIT_TIMES_ENV], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()
    commit = LakeStore.commit_batches

    write_lock = LakeStore.write_lock
    waited = threading.local()

    @contextlib.contextmanager
    def timed_lock(self: LakeStore) -> Iterator[None]:
        began = time.monotonic()
        with write_lock(self):
            waited.s = getattr(waited, "s", 0.0) + time.monotonic() - began
            yield

    @functools.wraps(commit)
    def timed(self: LakeStore, *args: Any, **kwargs: Any) -> list[bool]:
        waited.s = 0.0
        began, cpu = time.monotonic(), time.thread_time()
        stored = commit(self, *args, **kwargs)
        ended, cpu = time.monotonic(), time.thread_time() - cpu
        line = {"at": ended, "s": ended - began, "stored": any(stored), "lock_s": waited.s,
                "cpu_s": cpu}  # fmt: skip
        with lock:
            out.write(json.dumps(line) + "\n")
        return stored

    LakeStore.write_lock = timed_lock  # type: ignore[method-assign,assignment]
    LakeStore.commit_batches = timed  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
