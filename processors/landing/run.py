"""The ``process`` command: a consumer-group member that lands events exactly once.

Kafka is the edge here; decoding and dedup are pure (``pipeline``) and storage is the
segment store. The order of effects per partition batch is what makes a crash safe:

1. dead letters go to the dead-letter topic (flushed) and to a ``dead_letters`` segment;
2. the ``events`` segment is renamed into place: this commits the batch;
3. the consumed offset is committed to Kafka, for lag tooling only.

On (re)assignment a partition resumes after its last committed segment, not after the
group's Kafka offset, so a SIGKILL between 2 and 3 neither loses nor repeats anything.
Dead-letter messages on the topic may repeat after a crash (at least once); the
``dead_letters`` table does not.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server

from agentwatch.ingest.otlp.collector import OtlpTopics
from agentwatch.kafka import client_options
from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.pipeline import (
    STATE_COLUMNS,
    LandedBatch,
    LandingSettings,
    PartitionState,
    land_batch,
)
from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
from agentwatch.processors.landing.redact import load_redaction
from agentwatch.processors.metrics.exporter import FleetCollector, PartitionHealth
from agentwatch.processors.store.segments import SegmentStore
from agentwatch.settings import DEFAULTS
from agentwatch.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)
_PROCESS = DEFAULTS.process


@dataclass(frozen=True)
class ProcessorConfig:
    bootstrap: str
    db: Path
    """What ``agentwatch process`` runs with; the defaults are the settings' (``[process]``)."""

    topic: str = DEFAULTS.kafka.topic
    group: str = _PROCESS.group
    dlq_topic: str | None = _PROCESS.dlq_topic
    idle_timeout_s: float | None = _PROCESS.idle_timeout
    max_batch: int = _PROCESS.max_batch
    flush_interval_s: float = _PROCESS.flush_interval
    max_message_bytes: int = _PROCESS.max_message_bytes
    dedup_horizon_s: float = _PROCESS.dedup_horizon
    dedup_max_ids: int = _PROCESS.dedup_max_ids
    session_timeout_s: float = _PROCESS.session_timeout
    allowed_lateness_s: float = _PROCESS.allowed_lateness
    metrics_port: int | None = _PROCESS.metrics_port
    metrics_host: str = _PROCESS.metrics_host
    max_label_values: int = _PROCESS.max_label_values
    pricing_file: Path | None = None
    otlp_topic: str | None = None  # OpenTelemetry Collector spans, also landed
    otlp_format: str = "otlp_proto"
    otlp_unmapped_topic: str | None = None
    redaction_file: Path | None = None  # None: the shipped redaction.yaml

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


@dataclass
class RunStats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    segments: int = 0
    started: float = field(default_factory=time.monotonic)
    first_record_at: float | None = None
    last_commit_at: float | None = None

    @property
    def records_per_s(self) -> float:
        """Records landed per second, from the first record polled to the last commit."""
        if self.first_record_at is None or self.last_commit_at is None:
            return 0.0
        return self.records / max(self.last_commit_at - self.first_record_at, 1e-9)


@dataclass
class _Pending:
    offsets: list[int] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)

    def extend(self, records: Sequence[Any]) -> None:
        if not self.offsets:
            self.since = time.monotonic()
        self.offsets.extend(r.offset for r in records)
        self.timestamps_ms.extend(r.timestamp for r in records)
        self.keys.extend(r.key for r in records)
        self.values.extend(r.value for r in records)


class Processor:
    def __init__(self, config: ProcessorConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.store = SegmentStore(config.db.parent, config.db.name)
        self.stats = RunStats()
        self.settings = LandingSettings(
            max_message_bytes=config.max_message_bytes,
            allowed_lateness_s=config.allowed_lateness_s,
            dedup_horizon_s=config.dedup_horizon_s,
            dedup_max_ids=config.dedup_max_ids,
            redactor=load_redaction(config.redaction_file),
        )
        pricing = load_pricing(config.pricing_file)
        self._price = lambda events: apply_pricing(events, pricing)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = FleetCollector(config.topic, config.max_label_values)
        self.registry.register(self.collector)
        self.otlp = OtlpTopics(
            config.otlp_topic or None,
            config.otlp_unmapped_topic or f"{config.topic}.otlp-unmapped",
            config.otlp_format,
        )
        self.otlp.register(self.registry)
        self._pending: dict[TopicPartition, _Pending] = {}
        self._state: dict[TopicPartition, PartitionState] = {}
        self._lag_checked = 0.0
        self._stop = False
        # None until the group first assigns partitions: waiting for a rebalance is not idling.
        self._last_activity: float | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None

    def stop(self) -> None:
        self._stop = True

    def run(self) -> RunStats:
        cfg = self.config
        self.store.prepare()
        ensure_topics(
            cfg.bootstrap,
            [TopicSpec(t) for t in (cfg.topic, cfg.dead_letter_topic, *self.otlp.topics)],
        )
        self._producer = KafkaProducer(**client_options(cfg.bootstrap), acks="all", linger_ms=20)
        self._consumer = KafkaConsumer(
            **client_options(cfg.bootstrap),
            group_id=cfg.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A crashed member holds its partitions until its session expires.
            session_timeout_ms=int(cfg.session_timeout_s * 1000),
            heartbeat_interval_ms=max(500, int(cfg.session_timeout_s * 1000 / 4)),
            max_poll_records=10_000,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            receive_message_max_bytes=cfg.max_message_bytes * 4 + 64 * 1024 * 1024,
        )
        self._consumer.subscribe([cfg.topic, *self.otlp.topics], listener=_Rebalance(self))
        server = None
        if cfg.metrics_port is not None:
            server, _ = start_http_server(cfg.metrics_port, cfg.metrics_host, self.registry)
            log.info("serving /metrics", extra={"port": cfg.metrics_port})
        log.info(
            "processor started",
            extra={"topic": cfg.topic, "group": cfg.group, "db": str(cfg.db)},
        )
        try:
            while not self._stop:
                polled = self._consumer.poll(timeout_ms=200)
                now = time.monotonic()
                if polled and self.stats.first_record_at is None:
                    self.stats.first_record_at = now
                for tp, records in polled.items():
                    self._pending.setdefault(tp, _Pending()).extend(records)
                    self.stats.records += len(records)
                    self._last_activity = now
                for tp, pending in list(self._pending.items()):
                    due = now - pending.since >= cfg.flush_interval_s
                    if pending.offsets and (len(pending.offsets) >= cfg.max_batch or due):
                        self._flush(tp)
                if now - self._lag_checked >= 1.0:
                    self._update_lag()
                    self._lag_checked = now
                if self._idle(now):
                    log.info("idle timeout reached", extra={"idle_s": cfg.idle_timeout_s})
                    break
            for tp in list(self._pending):
                self._flush(tp)
        finally:
            self._consumer.close(autocommit=False)
            self._producer.close()
            if server is not None:
                server.shutdown()
        return self.stats

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            health = self.collector.partitions.get(tp.partition)
            if high is not None and health is not None:
                health.lag = max(0, high - self._consumer.position(tp))

    def _idle(self, now: float) -> bool:
        """True once no record came for the idle timeout and every partition is caught up."""
        timeout = self.config.idle_timeout_s
        if timeout is None or self._last_activity is None or self._pending:
            return False
        if now - self._last_activity < timeout:
            return False
        assert self._consumer is not None
        assigned = list(self._consumer.assignment())
        ends = self._consumer.end_offsets(assigned) if assigned else {}
        behind = [tp for tp in assigned if self._consumer.position(tp) < ends.get(tp, 0)]
        if behind:
            self._last_activity = now
            return False
        return True

    # -- partition lifecycle -------------------------------------------------------------

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in partitions:
            last = self.store.recover(tp.topic, tp.partition)
            stored = self.store.read_partition("events", tp.topic, tp.partition, STATE_COLUMNS)
            state = PartitionState.rebuilt(self.settings, stored)
            self._state[tp] = state
            self._pending.pop(tp, None)
            self.collector.partitions[tp.partition] = PartitionHealth()
            self._last_activity = time.monotonic()
            if last is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, last + 1)
            log.info(
                "partition assigned",
                extra={
                    "partition": tp.partition,
                    "resume_after": last,
                    "dedup_ids": state.dedup.size,
                    "open_sessions": len(state.sessions.open),
                    "watermark": state.watermark.isoformat() if state.watermark else None,
                },
            )

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            if tp in self._pending:
                self._flush(tp)
            self._pending.pop(tp, None)
            self._state.pop(tp, None)
            self.collector.forget_partition(tp.partition)

    # -- one batch -----------------------------------------------------------------------

    def _flush(self, tp: TopicPartition) -> None:
        pending = self._pending.pop(tp, None)
        if pending is None or not pending.offsets:
            return
        batch = RawBatch(
            tp.topic,
            tp.partition,
            pending.offsets,
            pending.timestamps_ms,
            pending.keys,
            pending.values,
        )
        if self.otlp.lands(tp.topic):
            landed = self.otlp.land(batch, self._state[tp], self.settings, self._price, land_batch)
        else:
            landed = land_batch(batch, self._state[tp], self.settings, self._price)
        if self._commit(batch, landed):
            self._export(batch, landed)

    def _commit(self, batch: RawBatch, landed: LandedBatch) -> bool:
        assert self._consumer is not None
        first, last = batch.offsets[0], batch.offsets[-1]
        committed = self.store.commit_batch(
            batch.topic,
            batch.partition,
            (first, last),
            landed.events,
            landed.dead_letters,
            before_commit=lambda: self._send_dead_letters(landed),
            extra=landed.extra_tables,
        )
        if not committed:
            return False
        tp = TopicPartition(batch.topic, batch.partition)
        self._consumer.commit_async({tp: OffsetAndMetadata(last + 1, "", -1)})
        self.stats.events += landed.events.height
        self.stats.dead_letters += landed.dead_letters.height
        self.stats.duplicates += landed.duplicates
        self.stats.segments += 1
        self.stats.last_commit_at = time.monotonic()
        log.debug(
            "batch committed",
            extra={
                "partition": batch.partition,
                "first_offset": first,
                "last_offset": last,
                "events": landed.events.height,
                "dead_letters": landed.dead_letters.height,
                "duplicates": landed.duplicates,
            },
        )
        return True

    def _export(self, batch: RawBatch, landed: LandedBatch) -> None:
        self.collector.apply(landed.metric_deltas())
        pipeline = self.collector.pipeline
        pipeline["records"] += len(batch)
        pipeline["events"] += landed.events.height
        pipeline["duplicates"] += landed.duplicates
        pipeline["late_events"] += landed.late
        health = self.collector.partitions.setdefault(batch.partition, PartitionHealth())
        now = time.time()
        newest = landed.events["ts"].max()
        if isinstance(newest, dt.datetime):
            health.processing_delay_s = max(0.0, now - newest.timestamp())
        health.last_commit_ts = now
        health.records += len(batch)

    def _send_dead_letters(self, landed: LandedBatch) -> None:
        assert self._producer is not None
        dl = landed.dead_letters
        if dl.is_empty():
            return
        for row in dl.select(
            "reason_code", "reason", "_topic", "_partition", "_offset", "key", "raw"
        ).iter_rows():
            code, reason, topic, partition, offset, key, raw = row
            headers = [
                ("reason_code", code.encode()),
                ("reason", reason.encode()[:1024]),
                ("source", f"{topic}/{partition}/{offset}".encode()),
            ]
            self._producer.send(self.config.dead_letter_topic, key=key, value=raw, headers=headers)
        self._producer.flush()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.processor._revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.processor._assigned(assigned)
