"""``agentwatch process`` with each batch commit timed, for bench/history.py.

Runs the real command (``python -m bench.timed_process process --db ...``) with the
store's ``commit_batch`` wrapped: each call appends one JSON line to the file named by
``$BENCH_COMMIT_TIMES``: ``{"at": <time.monotonic() when it ended>, "s": <seconds>,
"stored": <bool>}``. The monotonic clock is the system's, so the benchmark compares it
with its own.
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
    commit = LakeStore.commit_batch

    @functools.wraps(commit)
    def timed(self: LakeStore, *args: Any, **kwargs: Any) -> bool:
        began = time.monotonic()
        stored = commit(self, *args, **kwargs)
        ended = time.monotonic()
        with lock:
            out.write(json.dumps({"at": ended, "s": ended - began, "stored": stored}) + "\n")
        return stored

    LakeStore.commit_batch = timed  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
