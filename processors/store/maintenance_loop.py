"""When and where lake maintenance runs: every interval, by the member holding the lease,
each pass in a process of its own.

The pass itself (what it does, in which order, in bounded steps) is ``maintain``; this
module only schedules it. A pass runs apart from landing because merging files takes
memory in proportion to what landed since the last pass, and a process's allocators keep
what it once used: in the landing process itself, a pass over 1,200 files (300 commits
of 5,000 events) peaked at 792 MB and left it at 654 MB, against 264 MB before; apart,
the pass's process peaked at 691 MB and the landing process stayed at 265 MB.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from typing import Final, Protocol

from agentwatch.logs import current_setup, setup_logging
from agentwatch.native import die_with
from agentwatch.processors.store.attach import limit_memory
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import configure as configure_store
from agentwatch.processors.store.location import configured_data_path
from agentwatch.processors.store.maintain import (
    MaintenancePolicy,
    PassInterrupted,
    holder_name,
    maintain,
    try_lease,
)

log = logging.getLogger(__name__)


class MaintenanceLoop:
    """Maintains the lake every ``interval_s`` from a thread, while this member holds the lease.

    Landing goes on meanwhile: each step takes the lake's write lock only for itself.
    Between steps the pass renews the lease every half interval (a pass may outlast the
    lease's two intervals) and ends, whole steps done, when the member stops or another
    member took the lease. A failed pass is logged and tried again at the next interval;
    it never stops landing.

    Each pass runs in a process of its own, which dies with the thread that started it.
    """

    def __init__(
        self,
        db: str,
        policy: MaintenancePolicy,
        interval_s: float,
        *,
        holder: str | None = None,
        stop: _Stop | None = None,
        memory_mb: float | None = None,
    ) -> None:
        """``holder`` and ``stop``: the member's, in the process of one of its passes;
        ``memory_mb``: DuckDB's memory limit in a pass's process (``attach.limit_memory``)."""
        self.db = db
        self.policy = policy
        self.interval_s = interval_s
        self.memory_mb = memory_mb
        self.holder = holder or holder_name()
        self._processes = multiprocessing.get_context("spawn")
        # shared with the pass's process
        self._stop: _Stop = stop if stop is not None else self._processes.Event()
        self._thread = threading.Thread(target=self._run, name="lake-maintenance", daemon=True)
        self._store = LakeStore(db)  # connects on first use, in the thread
        self._renew_at = 0.0
        self.passes = 0
        self.last_pass_pid: int | None = None  # the process the last pass ran in

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)  # the thread closes the store
        elif self._thread.ident is None:
            self._store.close()  # never started (or only paused, in a test)

    def pause(self, seconds: float) -> None:
        """Between two steps: wait ``seconds``, then keep the lease or end the pass."""
        if self._stop.wait(seconds):
            raise PassInterrupted("the member is stopping")
        if time.monotonic() >= self._renew_at and not self._lease():
            raise PassInterrupted("another member took the maintenance lease")

    def _lease(self) -> bool:
        # The lease runs 2 intervals past its last renewal; a member that dies frees it.
        if not try_lease(self._store, self.holder, 2 * self.interval_s):
            return False
        self._renew_at = time.monotonic() + self.interval_s / 2
        return True

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    if self._lease() and self._pass_apart():
                        self.passes += 1
                except Exception:
                    log.exception("lake maintenance failed; it is tried again next interval")
        finally:
            self._store.close()

    def _pass_apart(self) -> bool:
        """One pass in a process of its own; True if it went to the end."""
        process = self._processes.Process(
            target=_pass_main,
            args=(
                self.db,
                self.policy,
                self.interval_s,
                self.holder,
                self._stop,
                self.memory_mb,
                (os.getpid(), current_setup(), configured_data_path()),
            ),
            name="agentwatch-maintenance",
            daemon=True,
        )
        process.start()
        self.last_pass_pid = process.pid
        process.join()  # a stop ends it at its next pause
        if process.exitcode not in (0, _ENDED_EARLY, _FAILED):  # e.g. killed: said here
            raise RuntimeError(f"the maintenance pass's process ended with {process.exitcode}")
        return process.exitcode == 0


class _Stop(Protocol):  # a threading or multiprocessing Event
    def wait(self, timeout: float | None = None) -> bool: ...
    def set(self) -> None: ...


# How a pass's process ends, besides 0: stopped or its lease taken; failed (and said so).
_ENDED_EARLY: Final = 3
_FAILED: Final = 4


def _pass_main(
    db: str,
    policy: MaintenancePolicy,
    interval_s: float,
    holder: str,
    stop: _Stop,
    memory_mb: float | None,
    inherited: tuple[int, tuple[str, str], str],
) -> None:
    """A maintenance pass in its own process, for the member whose lease it renews."""
    parent, log_args, data_path = inherited
    die_with(parent, _ENDED_EARLY)
    setup_logging(*log_args)
    configure_store(data_path)
    limit_memory(memory_mb)
    loop = MaintenanceLoop(db, policy, interval_s, holder=holder, stop=stop)
    try:
        if not loop._lease():  # renewed here, so the pass knows when to renew it next
            raise PassInterrupted("another member took the maintenance lease")
        maintain(loop._store, policy, pause=loop.pause)
    except PassInterrupted as why:
        log.info("lake maintenance pass ended early", extra={"reason": str(why)})
        sys.exit(_ENDED_EARLY)
    except Exception:
        log.exception("lake maintenance failed; it is tried again next interval")
        sys.exit(_FAILED)
    finally:
        loop._store.close()
