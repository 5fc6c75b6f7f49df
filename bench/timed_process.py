"""``agentwatch process`` with each commit timed, for bench/history.py.

Runs the real command (``python -m bench.timed_process process --db ...``) with the
store's ``commit_batches`` wrapped (one call, one transaction, whatever the number of
partitions in it): each call appends one JSON line to the file named by
``$BENCH_COMMIT_TIMES``: ``{"at": <time.monotonic() when it ended>, "s": <seconds>,
"stored": <bool: any batch stored>}``. The monotonic clock is the system's, so the
benchmark compares it with its own.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from typing import Any

from agentwatch.cli import main as cli_main
from agentwatch.processors.store.lake import LakeStore

COMMIT_TIMES_ENV = "BENCH_COMMIT_TIMES"


def main() -> int:
    out = open(os.environ[COMMIT_TIMES_ENV], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()
    commit = LakeStore.commit_batches

    @functools.wraps(commit)
    def timed(self: LakeStore, *args: Any, **kwargs: Any) -> list[bool]:
        began = time.monotonic()
        stored = commit(self, *args, **kwargs)
        ended = time.monotonic()
        with lock:
            out.write(json.dumps({"at": ended, "s": ended - began, "stored": any(stored)}) + "\n")
        return stored

    LakeStore.commit_batches = timed  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
