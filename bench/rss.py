"""Worker memory over a live run: each worker's RSS, sampled from /proc, by minute.

The live phase's question is whether a worker's memory stays flat while it lands for a
long time (the dedup index fills to its budget, DuckDB's caches to their limit), which
a peak alone does not answer. Workers are the supervisor's child processes (with
``--workers 1`` the processor's own process); a maintenance pass's process is a
worker's child and not counted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

SAMPLE_EVERY_S = 5.0


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux's ``/proc/PID/task/*/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class WorkerRss(threading.Thread):
    """Samples the largest worker's RSS every ``SAMPLE_EVERY_S`` until stopped."""

    def __init__(self, supervisor: int, workers: int) -> None:
        super().__init__(name="worker-rss", daemon=True)
        self.supervisor = supervisor
        self.workers = workers
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        started = time.monotonic()
        while True:
            pids = children(self.supervisor) if self.workers > 1 else [self.supervisor]
            sizes = [mb for mb in map(rss_mb, pids) if mb is not None]
            if sizes:
                self.samples.append((time.monotonic() - started, max(sizes)))
            if self._stop_event.wait(SAMPLE_EVERY_S):
                return

    def by_minute(self) -> list[float]:
        """The largest worker's peak in each minute sampled, rounded to a MB."""
        minutes: dict[int, float] = {}
        for at, mb in self.samples:
            minute = int(at // 60)
            minutes[minute] = max(mb, minutes.get(minute, 0.0))
        return [round(minutes[m]) for m in sorted(minutes)]
