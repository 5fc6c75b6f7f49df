"""Worker memory over a live run: each worker's RSS, sampled from /proc, by minute,
and what the processor's /metrics says the memory holds (dedup index, DuckDB, pending
records, open sessions), so that growth can be told apart from a budget filling.

The live phase's question is whether a worker's memory stays flat while it lands for a
long time (the dedup index fills to its budget, DuckDB's caches to their limit), which
a peak alone does not answer. Workers are the supervisor's child processes (with
``--workers 1`` the processor's own process); a maintenance pass's process is a
worker's child and not counted.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agentwatch.processors.metrics import series

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

    def __init__(self, supervisor: int, workers: int, metrics_url: str | None = None) -> None:
        super().__init__(name="worker-rss", daemon=True)
        self.supervisor = supervisor
        self.workers = workers
        self.metrics_url = metrics_url
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.held: list[tuple[float, dict[str, float]]] = []  # (seconds, holder -> MB)
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
            if self.metrics_url is not None and (held := scrape_held(self.metrics_url)):
                self.held.append((time.monotonic() - started, held))
            if self._stop_event.wait(SAMPLE_EVERY_S):
                return

    def by_minute(self) -> list[float]:
        """The largest worker's peak in each minute sampled, rounded to a MB."""
        return [round(mb) for mb in minute_peaks(self.samples)]

    def held_by_minute(self) -> dict[str, list[float]]:
        """Each holder's largest value in each minute sampled (MB; open sessions in
        thousands), from the processor's /metrics."""
        holders = dict.fromkeys(h for _, held in self.held for h in held)
        return {
            h: [round(v, 1) for v in minute_peaks([(at, x[h]) for at, x in self.held if h in x])]
            for h in holders
        }


def minute_peaks(samples: list[tuple[float, float]]) -> list[float]:
    """The largest of ``samples`` (seconds since start, value) in each minute sampled."""
    minutes: dict[int, float] = {}
    for at, value in samples:
        minute = int(at // 60)
        minutes[minute] = max(value, minutes.get(minute, 0.0))
    return [minutes[m] for m in sorted(minutes)]


def scrape_held(url: str) -> dict[str, float]:
    """What the processor's memory holds, read off its /metrics; {} if it did not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    held: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == series.PIPELINE_MEMORY.name:
                held[f"{sample.labels['holder']}_mb"] = sample.value / 2**20
            elif sample.name == series.DUCKDB_MEMORY_LIMIT.name:
                held["duckdb_limit_mb"] = sample.value / 2**20
            elif sample.name == series.OPEN_SESSIONS.name:
                held["open_sessions_k"] = sample.value / 1000
    return held
