"""``agentwatch process --workers N``: N consumer-group members as processes, supervised.

One Python process lands on one core (the GIL), so the processor scales out by running
more members of its consumer group; each owns some partitions and lands them exactly
once exactly as a lone processor does (``processor``), so nothing here touches data.
The supervisor:

- reaches Kafka and makes the topics once, so a wrong address fails fast, in one line;
- starts N workers (``spawn``: a fresh interpreter each) that die with it (a SIGKILL of
  the supervisor is a SIGKILL of every worker, which the store is safe against);
- restarts a worker that crashes (killed, or an unexpected error), backing off; a fault
  that a restart cannot cure (Kafka refused at start, storage error) stops them all and
  ends the run with that fault's exit code and message as the last line;
- on SIGTERM or SIGINT stops every worker (each lands what it holds) and exits 0; with
  ``--idle-timeout`` it stops them all and exits once one worker has exited idle (it
  exits only when every partition of the topic is landed);
- serves one ``/metrics`` for all: each worker serves its own on a loopback port and
  the supervisor merges them on every scrape (``metrics_merge``), so dashboards and
  alert rules see one processor whatever N is.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from agentwatch.broker.ports import free_port
from agentwatch.kafka import KafkaSecurity, default_security
from agentwatch.kafka import configure as configure_kafka
from agentwatch.logs import setup_logging
from agentwatch.native import die_with, share_cores
from agentwatch.processors.landing.config import ProcessorConfig
from agentwatch.processors.landing.faults import EXIT_KAFKA, EXIT_STORAGE, ProcessorFault
from agentwatch.processors.landing.metrics_merge import MergedMetrics
from agentwatch.processors.store.location import configure as configure_store
from agentwatch.processors.store.location import configured_data_path

log = logging.getLogger("agentwatch.processors.landing.processor")

EXIT_CRASH = 70  # an unexpected error in a worker (EX_SOFTWARE): restarted
RESTART_BACKOFF_S = (1.0, 30.0)  # first delay, cap; doubles while crashes follow quickly
STOP_TIMEOUT_S = 60.0  # a stopping worker lands what it holds; then it is killed


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass
class _Slot:
    index: int
    port: int | None
    process: BaseProcess | None = None
    started: float = 0.0
    restarts: int = 0
    done: bool = False
    backoff_s: float = RESTART_BACKOFF_S[0]


@dataclass
class _Totals:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    batches: int = 0
    commits: int = 0
    first_record_at: float | None = None
    last_commit_at: float | None = None
    peak_rss_mb: list[float] = field(default_factory=list)

    def add(self, stats: dict[str, Any]) -> None:
        for key in ("records", "events", "dead_letters", "duplicates", "batches", "commits"):
            setattr(self, key, getattr(self, key) + int(stats[key]))
        first, last = stats["first_record_at"], stats["last_commit_at"]
        if first is not None:
            self.first_record_at = min(first, self.first_record_at or first)
        if last is not None:
            self.last_commit_at = max(last, self.last_commit_at or last)
        self.peak_rss_mb.append(float(stats["peak_rss_mb"]))


class Supervisor:
    def __init__(
        self, config: ProcessorConfig, workers: int, log_level: str, log_format: str
    ) -> None:
        self.config = config
        self.workers = workers
        self.log_args = (log_level, log_format)
        self.context = multiprocessing.get_context("spawn")
        share_cores(default_workers(), workers)  # inherited by every worker spawned
        self.results: Any = self.context.Queue()
        self.totals = _Totals()
        self.started = time.monotonic()
        self._stop = False
        ports = [free_port() if config.metrics_port is not None else None for _ in range(workers)]
        self.slots = [_Slot(i, port) for i, port in enumerate(ports)]
        self.metrics = MergedMetrics([p for p in ports if p is not None])

    def stop(self) -> None:
        self._stop = True

    def run(self) -> int:
        """Supervise the workers until stopped or all are idle; the exit code of the run."""
        from agentwatch.processors.landing.processor import Processor

        Processor(self.config).check_kafka()  # raises KafkaUnreachable, as a lone one does
        server = None
        if self.config.metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(self.metrics)
            server, _ = start_http_server(
                self.config.metrics_port, self.config.metrics_host, registry
            )
        log.info(
            "supervising workers",
            extra={"workers": self.workers, "group": self.config.group, "pid": os.getpid()},
        )
        fault: tuple[int, str] | None = None
        try:
            for slot in self.slots:
                self._start(slot)
            while not self._stop and not all(s.done for s in self.slots):
                fault = self._tend()
                if fault is not None:
                    break
        finally:
            self._stop_all()
            fault = self._drain() or fault  # a worker's own message beats its exit code
            if server is not None:
                server.shutdown()
        self._log_totals()
        if fault is not None:
            code, message = fault
            logging.shutdown()
            print(f"agentwatch: {message}", file=sys.stderr, flush=True)
            return code
        return 0

    def _log_totals(self) -> None:
        t = self.totals
        elapsed = (t.last_commit_at or 0.0) - (t.first_record_at or 0.0)
        log.info(
            "processor stopped",
            extra={
                "workers": self.workers,
                "records": t.records,
                "events": t.events,
                "dead_letters": t.dead_letters,
                "duplicates": t.duplicates,
                "batches": t.batches,
                "commits": t.commits,
                "elapsed_s": round(time.monotonic() - self.started, 2),
                "records_per_s": round(t.records / elapsed) if elapsed > 0 else 0,
                "peak_rss_mb": max(t.peak_rss_mb, default=0.0),
                "restarts": sum(s.restarts for s in self.slots),
            },
        )

    def _start(self, slot: _Slot) -> None:
        config = self.config
        if slot.port is not None:
            config = replace(config, metrics_port=slot.port, metrics_host="127.0.0.1")
        process = self.context.Process(
            target=worker_main,
            # A spawned worker starts afresh: it gets the process-wide settings the CLI
            # configured (Kafka security, the lake's data path) with its arguments.
            args=(
                config,
                slot.index,
                os.getpid(),
                self.log_args,
                self.results,
                (default_security(), configured_data_path()),
            ),
            name=f"agentwatch-worker-{slot.index}",
        )
        process.start()
        slot.process, slot.started = process, time.monotonic()
        log.info("worker started", extra={"worker": slot.index, "pid": process.pid})

    def _tend(self) -> tuple[int, str] | None:
        """Wait a moment for a worker to exit; restart a crashed one. A fault ends the run."""
        alive = [s.process.sentinel for s in self.slots if s.process is not None and not s.done]
        multiprocessing.connection.wait(alive, timeout=0.5)
        fault = self._drain()
        if fault is not None:
            return fault
        for slot in self.slots:
            process = slot.process
            if slot.done or process is None or process.exitcode is None:
                continue
            code = process.exitcode
            process.join()
            if code == 0:
                slot.done = True
                if self.config.idle_timeout_s is not None:
                    # It found the whole topic landed and no record for the timeout: the
                    # others stop now rather than take over its partitions (rebuilding
                    # their state) only to find the same.
                    log.info("a worker found the topic landed; stopping the others")
                    self._stop = True
                continue
            if code in (EXIT_KAFKA, EXIT_STORAGE):
                return code, f"worker {slot.index} ended with exit code {code}"
            self._restart(slot, code)
        return None

    def _restart(self, slot: _Slot, code: int) -> None:
        ran_s = time.monotonic() - slot.started
        slot.backoff_s = (
            RESTART_BACKOFF_S[0] if ran_s > 60 else min(slot.backoff_s * 2, RESTART_BACKOFF_S[1])
        )
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        log.warning(
            "worker crashed; restarting it",
            extra={"worker": slot.index, "exit": how, "restart_in_s": slot.backoff_s},
        )
        if slot.port is not None:
            self.metrics.retire(slot.port)
        deadline = time.monotonic() + slot.backoff_s
        while not self._stop and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._stop:
            slot.restarts += 1
            self._start(slot)

    def _stop_all(self) -> None:
        running = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in running:
            process.terminate()  # SIGTERM: the worker lands what it holds
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker did not stop in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.join()

    def _drain(self) -> tuple[int, str] | None:
        """Take the workers' reports: run statistics, or a fault."""
        fault = None
        while True:
            try:
                kind, payload = self.results.get_nowait()
            except queue.Empty:
                return fault
            if kind == "stats":
                self.totals.add(payload)
            elif fault is None:
                fault = payload


def worker_main(
    config: ProcessorConfig,
    index: int,
    parent: int,
    log_args: tuple[str, str],
    results: Any,
    inherited: tuple[KafkaSecurity, str],
) -> None:
    """One consumer-group member, in its own process; reports its statistics or fault."""
    if not die_with(parent, EXIT_CRASH):
        log.debug("cannot tie the worker's life to the supervisor's")
    setup_logging(*log_args)
    security, data_path = inherited
    configure_kafka(security)
    configure_store(data_path)
    from agentwatch.processors.landing.processor import Processor

    processor = Processor(config)
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    signal.signal(signal.SIGINT, lambda *_: processor.stop())
    try:
        stats = processor.run()
    except ProcessorFault as exc:
        results.put(("fault", (exc.exit_code, str(exc))))
        results.close()
        results.join_thread()
        sys.exit(exc.exit_code)
    except Exception:
        log.exception("worker failed", extra={"worker": index})
        sys.exit(EXIT_CRASH)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put(
        (
            "stats",
            {
                "records": stats.records,
                "events": stats.events,
                "dead_letters": stats.dead_letters,
                "duplicates": stats.duplicates,
                "batches": stats.batches,
                "commits": stats.commits,
                "first_record_at": stats.first_record_at,
                "last_commit_at": stats.last_commit_at,
                "peak_rss_mb": round(peak, 1),
            },
        )
    )
    results.close()
    results.join_thread()
