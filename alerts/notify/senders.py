"""Where deliveries run: inline, or on one sender thread per receiver integration.

The dispatcher submits a delivery and, at a later tick, collects how it went. With
``ThreadedSenders`` a receiver that hangs (a webhook that never answers) holds only its
own sender: evaluation, runbooks, breakers and the other receivers go on. With
``InlineSenders`` (the tests' default) a delivery is done when ``submit`` returns, so a
fake clock drives everything and nothing sleeps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Job = Callable[[], None]


@dataclass(frozen=True)
class Done:
    """A finished job: its token and the exception it raised, if any."""

    token: object
    error: BaseException | None


class Senders(Protocol):
    def submit(self, key: str, token: object, job: Job) -> None:
        """Run ``job`` on the sender of ``key``; ``token`` comes back in ``collect``."""

    def collect(self) -> list[Done]:
        """The jobs finished since the last call."""

    def close(self, timeout: float) -> None:
        """Stop the senders, waiting at most ``timeout`` seconds for running jobs."""


class InlineSenders:
    """Runs each job when it is submitted, on the caller's thread."""

    def __init__(self) -> None:
        self._done: list[Done] = []

    def submit(self, key: str, token: object, job: Job) -> None:
        self._done.append(Done(token, _run(job)))

    def collect(self) -> list[Done]:
        done, self._done = self._done, []
        return done

    def close(self, timeout: float) -> None:
        return None


class ThreadedSenders:
    """One daemon thread and queue per key (receiver integration), started on first use."""

    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        self._queues: dict[str, queue.SimpleQueue[tuple[object, Job] | None]] = {}
        self._threads: list[threading.Thread] = []
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._on_done = on_done
        self._lock = threading.Lock()

    def submit(self, key: str, token: object, job: Job) -> None:
        with self._lock:
            jobs = self._queues.get(key)
            if jobs is None:
                jobs = self._queues[key] = queue.SimpleQueue()
                thread = threading.Thread(
                    target=self._send, args=(jobs,), name=f"notify-{key}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        jobs.put((token, job))

    def _send(self, jobs: queue.SimpleQueue[tuple[object, Job] | None]) -> None:
        while (item := jobs.get()) is not None:
            token, job = item
            self._done.put(Done(token, _run(job)))
            if self._on_done is not None:
                self._on_done()

    def collect(self) -> list[Done]:
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def close(self, timeout: float) -> None:
        with self._lock:
            for jobs in self._queues.values():
                jobs.put(None)
            threads, self._threads, self._queues = self._threads, [], {}
        for thread in threads:
            thread.join(timeout / max(1, len(threads)))


def _run(job: Job) -> BaseException | None:
    try:
        job()
    except Exception as exc:  # handed back to the dispatcher, which records it
        return exc
    return None
