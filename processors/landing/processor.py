"""The processor: a consumer-group member that lands events exactly once.

Kafka is the edge here; decoding and dedup are pure (``pipeline``) and storage is the
lake (``store.lake``). Once one partition's batch is due, every partition's pending
records land together, a batch each, on the landing thread while the next records are
fetched (``handoff``); the order of effects is what makes a crash safe:

1. dead letters go to the dead-letter topic (flushed);
2. one lake transaction stores the batches' events, dead letters and other rows and moves
   each partition's stored offset (read and moved in it): its commit commits the batches;
3. the consumed offsets are committed to Kafka, for lag tooling only;
4. the set's metrics are exported (``export``), once the next set is landing.

On (re)assignment a partition resumes after its stored offset, not after the group's
Kafka offset, so a SIGKILL between 2 and 3 neither loses nor repeats anything, and a
member that lost the partition cannot commit over its new owner. Dead-letter messages
on the topic may repeat after a crash (at least once); the ``dead_letters`` table does
not. Kafka outages and storage errors: see ``faults``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import duckdb
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from agentwatch.errors import first_line
from agentwatch.ingest.otlp.collector import OtlpTopics
from agentwatch.kafka import client_options
from agentwatch.logs import quiet_library_logs
from agentwatch.native import release_free_heap
from agentwatch.processors.landing import fetch
from agentwatch.processors.landing.batching import Due, Pending, due, poll_timeout_s, room
from agentwatch.processors.landing.catchup import partitions_behind, update_lag
from agentwatch.processors.landing.config import ProcessorConfig, RunStats
from agentwatch.processors.landing.dead_letters import send_dead_letters
from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.dedup import ids_within
from agentwatch.processors.landing.export import SetTimer, StoredBatch, export_stored
from agentwatch.processors.landing.faults import (
    KafkaUnreachable,
    Outage,
    StorageFault,
    is_transient,
)
from agentwatch.processors.landing.handoff import Handoff
from agentwatch.processors.landing.memory import MemoryCollector
from agentwatch.processors.landing.pipeline import (
    STATE_COLUMNS,
    LandedBatch,
    PartitionState,
    land_batch,
    land_set,
)
from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
from agentwatch.processors.metrics.exporter import FleetCollector, PartitionHealth
from agentwatch.processors.store import wal_keeper
from agentwatch.processors.store.attach import limit_memory
from agentwatch.processors.store.lake import Batch, LakeStore
from agentwatch.processors.store.partition_rows import recent_slices, recent_window
from agentwatch.topics import BrokerUnreachable, TopicError, TopicSpec, ensure_topics

log = logging.getLogger(__name__)


class Processor:
    def __init__(self, config: ProcessorConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.store = LakeStore(config.db)
        self.stats = RunStats()
        self.settings = config.landing_settings()
        self._price = partial(apply_pricing, table=load_pricing(config.pricing_file))
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = FleetCollector(config.topic, config.max_label_values)
        self.registry.register(self.collector)
        held = MemoryCollector(lambda: self._state.values(), lambda: self._pending.values())
        self.registry.register(held)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU
        self.otlp = OtlpTopics(
            config.otlp_topic or None,
            config.otlp_unmapped_topic or f"{config.topic}.otlp-unmapped",
            config.otlp_format,
        )
        self.otlp.register(self.registry)
        self._pending: dict[TopicPartition, Pending] = {}
        self._state: dict[TopicPartition, PartitionState] = {}
        self._lag_checked = 0.0
        self._stop = False
        # None until the group first assigns partitions: waiting for a rebalance is not idling.
        self._last_activity: float | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._outage = Outage()
        self._resumed_after: dict[TopicPartition, int | None] = {}
        self._callback_fault: Exception | None = None
        self._landing: Handoff[list[tuple[RawBatch, LandedBatch, bool]]] = Handoff("landing")
        self._handed: list[RawBatch] = []  # the batches in flight on the landing thread
        self._stored: list[StoredBatch] = []  # stored, not yet exported

    def stop(self) -> None:
        self._stop = True

    def run(self) -> RunStats:
        """Land records until stopped or idle; raise ProcessorFault for what ends the run."""
        cfg = self.config
        self._connect()
        limit_memory(cfg.duckdb_memory_mb)
        try:
            self.store.prepare()
        except (OSError, duckdb.Error) as exc:  # e.g. the metadata database's "disk I/O error"
            # a storage fault, not a crash: workers are not restarted into it
            where = self.store.location.describe()
            raise StorageFault(f"cannot use the store {where}: {first_line(exc)}") from exc
        maintenance = cfg.maintenance_loop(self.store.db)  # None: no maintenance here
        if maintenance is not None:
            maintenance.start()
        server = None
        if cfg.metrics_port is not None:
            server, _ = start_http_server(cfg.metrics_port, cfg.metrics_host, self.registry)
            log.info("serving /metrics", extra={"port": cfg.metrics_port, "host": cfg.metrics_host})
        log.info(
            "processor started",
            extra={"topic": cfg.topic, "group": cfg.group, "db": str(cfg.db)},
        )
        keeper = wal_keeper.keep(self.store.location.metadata_file)
        try:
            while not self._stop:
                try:
                    if self._step():
                        break
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self._wait_out(exc, "consuming")
            self._flush_all()
        except BaseException:
            self._pending.clear()  # nothing of it committed: the next run lands it again
            raise
        finally:
            self._landing.close()  # a transaction in flight ends, committed or not
            if maintenance is not None:
                maintenance.stop()
            keeper.stop()
            self._close(server)
        return self.stats

    def check_kafka(self) -> None:
        """Reach Kafka and make the topics as ``run`` does first, then let go of the clients."""
        try:
            self._connect()
        finally:
            self._close(None)
            self._consumer = self._producer = None

    def _connect(self) -> None:
        """Make the topics and clients: give up on a broker never reached, ride out others."""
        cfg = self.config
        topics = [TopicSpec(t) for t in (cfg.topic, cfg.dead_letter_topic, *self.otlp.topics)]
        deadline = time.monotonic() + cfg.connect_timeout_s
        reached = False
        while True:
            remaining = deadline - time.monotonic()
            try:
                with quiet_library_logs():
                    ensure_topics(cfg.bootstrap, topics, timeout=max(1.0, remaining))
                break
            except BrokerUnreachable as exc:
                if not reached and (deadline - time.monotonic() < 1.0 or self._stop):
                    raise KafkaUnreachable(
                        f"no Kafka broker answered at {cfg.bootstrap} within "
                        f"{cfg.connect_timeout_s:g} s (check --bootstrap and the [kafka] "
                        f"settings): {exc.__cause__ or exc}"
                    ) from exc
                if reached:
                    self._wait_out(exc, "creating topics")
                else:
                    time.sleep(min(0.5, max(0.0, remaining - 1.0)))
            except TopicError as exc:  # a broker answered: e.g. leaders not elected yet
                reached = True
                self._wait_out(exc, "creating topics")
            if self._stop:
                raise KafkaUnreachable("stopped before the topics were ready")
        # A broker answered once: from now on every Kafka error is an outage to wait out.
        while not self._stop:
            try:
                if self._producer is None:
                    self._producer = KafkaProducer(
                        **client_options(cfg.bootstrap), acks="all", linger_ms=20
                    )
                if self._consumer is None:
                    self._consumer = self._new_consumer()
                self._outage.recovered()
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._wait_out(exc, "connecting")
        raise KafkaUnreachable("stopped before Kafka was reachable")

    def _new_consumer(self) -> KafkaConsumer:
        cfg = self.config
        consumer = KafkaConsumer(
            **client_options(cfg.bootstrap),
            group_id=cfg.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A crashed member holds its partitions until its session expires.
            session_timeout_ms=int(cfg.session_timeout_s * 1000),
            heartbeat_interval_ms=max(500, int(cfg.session_timeout_s * 1000 / 4)),
            **fetch.sizing(cfg.max_batch),
            receive_message_max_bytes=cfg.max_message_bytes * 4 + 64 * 1024 * 1024,
        )
        # Fetch the topic's metadata before joining the group, so that a topic created
        # a moment ago is not assigned as "no partition metadata".
        for topic in (cfg.topic, *self.otlp.topics):
            consumer.partitions_for_topic(topic)
        consumer.subscribe([cfg.topic, *self.otlp.topics], listener=_Rebalance(self))
        fetch.install(consumer)  # poll returns a chunk of columns a record batch
        return consumer

    def _step(self) -> bool:
        """One poll and what is due after it; True once the idle timeout is reached."""
        assert self._consumer is not None
        cfg = self.config
        now = time.monotonic()
        wait = poll_timeout_s(
            self._pending.values(), now, cfg.flush_interval_s, landing=self._landing.busy
        )
        polled = self._consumer.poll(
            timeout_ms=int(wait * 1000), max_records=room(self._pending.values(), cfg.max_batch)
        )
        now = time.monotonic()  # after the wait: what is due is due now
        self._raise_callback_fault()
        if polled and self.stats.first_record_at is None:
            self.stats.first_record_at = now
        for tp, chunks in polled.items():
            self.stats.records += self._pending.setdefault(tp, Pending()).extend(chunks, now)
            self._last_activity = now
        if self._landing.holding and not self._landing.busy:
            self._settle()
        ready = due(self._pending.values(), now, cfg.max_batch, cfg.flush_interval_s)
        if ready is Due.FULL or (ready is Due.WAITED and not self._landing.busy):
            self._flush(list(self._pending))  # the others ride along: one commit for all
        self._export()
        if now - self._lag_checked >= 1.0:
            update_lag(self._consumer, self.collector.partitions)
            self._lag_checked = now
            self._outage.recovered()
        if self._idle(now):
            log.info("idle timeout reached", extra={"idle_s": cfg.idle_timeout_s})
            return True
        return False

    def _wait_out(self, exc: BaseException, during: str) -> None:
        """Back off after a Kafka error; uncommitted batches are landed again afterwards."""
        delay = self._outage.failed(exc, during)
        try:
            self._settle()
        except Exception as failed:  # its partitions are resumed: waited out below too
            if not is_transient(failed):
                raise
        if self._consumer is not None:
            for tp in list(self._pending):
                self._resume(tp)
        deadline = time.monotonic() + delay
        while not self._stop and time.monotonic() < deadline:
            time.sleep(0.05)

    def _flush_all(self) -> None:
        partitions = list(self._pending)
        try:
            self._flush(partitions, wait=True)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "Kafka unreachable at shutdown; the batches land on the next run",
                extra={"partitions": [tp.partition for tp in partitions], "error": repr(exc)},
            )

    def _close(self, server: Any) -> None:
        for client in (self._consumer, self._producer):
            if client is None:
                continue
            try:
                client.close(**({"autocommit": False} if client is self._consumer else {}))
            except Exception as exc:  # leaving anyway; the group notices by itself
                log.debug("closing a Kafka client failed", extra={"error": repr(exc)})
        if server is not None:
            server.shutdown()

    def _idle(self, now: float) -> bool:
        """True once no record came for the idle timeout and every partition is caught up."""
        timeout, last = self.config.idle_timeout_s, self._last_activity
        if self._pending or self._landing.holding or timeout is None or last is None:
            return False
        if now - last < timeout:
            return False
        assert self._consumer is not None
        behind = partitions_behind(self._consumer, self.store, self.config.topic)
        if behind:
            log.debug("idle but partitions are behind", extra={"partitions": behind})
            self._last_activity = now
            return False
        return True

    # -- partition lifecycle -------------------------------------------------------------

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        assert self._consumer is not None
        try:  # the landing thread reads the settings and states changed here
            self._settle()
        except Exception as exc:  # raised after this poll; the assignment goes on
            self._callback_fault = exc
        self._share_dedup_budget(max(len(self._consumer.assignment()), len(partitions)))
        for tp in partitions:
            state = self._resume(tp)
            self.collector.partitions[tp.partition] = PartitionHealth()
            self._last_activity = time.monotonic()
            log.info(
                "partition assigned",
                extra={
                    "partition": tp.partition,
                    "resume_after": self._resumed_after.get(tp),
                    "dedup_ids": state.dedup.size,
                    "open_sessions": len(state.sessions.open),
                    "watermark": state.watermark.isoformat() if state.watermark else None,
                },
            )

    def _share_dedup_budget(self, partitions: int) -> None:
        """Split the process's dedup memory budget evenly over its assigned partitions."""
        cfg = self.config
        cap = min(cfg.dedup_max_ids, ids_within(cfg.dedup_memory_mb, partitions))
        self.settings = replace(self.settings, dedup_max_ids=cap)
        for state in self._state.values():
            state.dedup.max_ids = cap

    def _resume(self, tp: TopicPartition) -> PartitionState:
        """Drop what is pending and continue after the partition's last committed batch."""
        assert self._consumer is not None
        last = self.store.recover(tp.topic, tp.partition)
        # State lives only as long as the dedup horizon, the lateness allowance or a
        # session's timeout: rebuilding it reads that much history, not all of it.
        config = self.config
        within = max(config.dedup_horizon_s, config.allowed_lateness_s, config.session_timeout_s)
        window = recent_window(self.store, "events", tp.topic, tp.partition, within)
        if window is None:  # nothing landed yet
            state = PartitionState.replayed(self.settings, (), None)
        else:  # one slice of the window in memory at a time
            slices = recent_slices(
                self.store, "events", tp.topic, tp.partition, STATE_COLUMNS, window
            )
            state = PartitionState.replayed(self.settings, slices, window.newest_ts)
        self._state[tp] = state
        self._pending.pop(tp, None)
        self._resumed_after[tp] = last
        if last is None:
            self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, last + 1)
        return state

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        try:
            self._flush([tp for tp in partitions if tp in self._pending], wait=True)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.info("batches of revoked partitions left to their next owner")
        self._export()
        for tp in partitions:
            self._pending.pop(tp, None)
            self._state.pop(tp, None)
            self.collector.forget_partition(tp.partition)

    def _raise_callback_fault(self) -> None:
        """kafka-python logs and swallows what a rebalance callback raises: raise it here."""
        fault, self._callback_fault = self._callback_fault, None
        if fault is not None:
            raise fault

    # -- one batch -----------------------------------------------------------------------
    def _flush(self, partitions: Sequence[TopicPartition], wait: bool = False) -> None:
        """Hand the pending records of ``partitions`` to the landing thread: one batch
        each, one transaction; with ``wait``, settle them before returning."""
        self._settle()
        raw = []
        for tp in partitions:
            pending = self._pending.pop(tp, None)
            if pending is not None and pending.offsets:
                raw.append(pending.batch(tp.topic, tp.partition))
        if raw:
            states = [self._state[TopicPartition(b.topic, b.partition)] for b in raw]
            self._handed = raw
            self._landing.submit(partial(self._land, raw, states))
        if wait:
            self._settle()
        self._export()  # while the set just handed off lands

    def _land(
        self, raw: Sequence[RawBatch], states: Sequence[PartitionState]
    ) -> list[tuple[RawBatch, LandedBatch, bool]]:
        """On the landing thread: land each batch and store them in one transaction."""
        timer = SetTimer(self.store)
        otlp = [self.otlp.lands(b.topic) for b in raw]
        together = [(b, s) for b, s, o in zip(raw, states, otlp, strict=True) if not o]
        landed = iter(land_set(together, self.settings, self._price))
        work = [
            (b, self.otlp.land(b, s, self.settings, self._price, land_batch) if o else next(landed))
            for b, s, o in zip(raw, states, otlp, strict=True)
        ]
        dlq = partial(send_dead_letters, self._producer, self.config.dead_letter_topic)
        timer.landed()
        committed = self.store.commit_batches(
            [
                Batch(
                    b.topic,
                    b.partition,
                    (b.offsets[0], b.offsets[-1]),
                    landed.tables,
                    before_commit=partial(dlq, landed.dead_letters),
                )
                for b, landed in work
            ]
        )
        timer.stored(raw)
        return [(b, landed, c) for (b, landed), c in zip(work, committed, strict=True)]

    def _settle(self) -> None:
        """Take the batches in flight: commit their offsets to Kafka and export them, or,
        if they failed, resume their partitions after what is stored and raise."""
        handed, self._handed = self._handed, []
        try:
            done = self._landing.take()
        except (OSError, duckdb.IOException) as exc:
            where = self.store.location.describe()
            what = ", ".join(
                f"partition {b.partition} offsets {b.offsets[0]}-{b.offsets[-1]}" for b in handed
            )
            raise StorageFault(f"storing {what} in {where} failed: {first_line(exc)}") from exc
        except Exception:
            for b in handed:  # the batches' dedup and session state never committed
                tp = TopicPartition(b.topic, b.partition)
                if tp in self._state:
                    self._resume(tp)
            raise
        if not done:
            return
        stored = [(batch, landed) for batch, landed, was_stored in done if was_stored]
        if not stored:
            return
        self.stats.commits += 1
        assert self._consumer is not None  # Kafka's copy of the offsets is advisory
        self._consumer.commit_async(
            {
                TopicPartition(b.topic, b.partition): OffsetAndMetadata(b.offsets[-1] + 1, "", -1)
                for b, _ in stored
            }
        )
        self.stats.last_commit_at = time.monotonic()
        for _, landed in stored:
            self.stats.count(landed)
        self._stored.extend(StoredBatch.of(batch, landed) for batch, landed in stored)

    def _export(self) -> None:
        """Export the sets stored since the last export (export.py), then free them."""
        export_stored(self.collector, self._stored)
        if self._stored:
            self._stored = []
            release_free_heap()  # what they held leaves the process (native.py)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        try:
            self.processor._revoked(revoked)
        except Exception as exc:
            self.processor._callback_fault = exc
            raise

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        try:
            self.processor._assigned(assigned)
        except Exception as exc:
            self.processor._callback_fault = exc
            raise
