"""How fast landing could go at most on this stack: members that only fetch, or fetch and decode.

``agentwatch process`` spends its CPU fetching (kafka-python, with the columnar record
reader of ``processors/landing/fetch.py``), decoding (``decode.py``), then landing and
storing. Running the first steps alone, in as many processes as the processor has
workers, on the same topic and in the same run as Kafka's own consumer, says how much
of the ratio to Kafka is left for the rest: a ceiling no change to landing or storing
can lift. Each process reads its share of the partitions from the start to the end
offsets the run began with, accumulates each poll as the processor does (``Pending``)
and, in the decoding pass, decodes each partition's poll as one batch.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Literal

from kafka import KafkaConsumer, TopicPartition

from agentwatch.kafka import client_options
from agentwatch.processors.landing import fetch
from agentwatch.processors.landing.batching import Pending
from agentwatch.processors.landing.decode import decode_batch
from agentwatch.settings import DEFAULTS

Pass = Literal["fetch", "decode"]
POLL_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class Reading:
    """One process's pass: records read, valid events decoded (none when only fetching),
    seconds from first record to last, CPU seconds of the whole process (its network
    thread included)."""

    records: int
    events: int
    seconds: float
    cpu_s: float


@dataclass(frozen=True)
class Ceiling:
    """The processes' pass together."""

    records: int
    events: int
    events_per_s: int
    cpu_us_per_event: float


def _read(
    bootstrap: str, topic: str, partitions: list[int], what: Pass, out: Queue[Reading]
) -> None:
    max_batch = DEFAULTS.process.max_batch
    consumer = KafkaConsumer(
        **client_options(bootstrap), enable_auto_commit=False, **fetch.sizing(max_batch)
    )
    fetch.install(consumer)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    wanted = sum(consumer.end_offsets(tps).values())
    records, events, started, cpu = 0, 0, 0.0, 0.0
    while records < wanted:
        polled = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=max_batch)
        if polled and not records:
            started, cpu = time.perf_counter(), time.process_time()
        for tp, chunks in polled.items():
            pending = Pending()
            records += pending.extend(chunks, 0.0)
            if what == "decode":
                events += decode_batch(pending.batch(tp.topic, tp.partition)).events.height
    out.put(Reading(records, events, time.perf_counter() - started, time.process_time() - cpu))
    consumer.close()


def ceiling(bootstrap: str, topic: str, partitions: int, workers: int, what: Pass) -> Ceiling:
    """Records a second of ``workers`` processes doing only ``what``, and their CPU a record."""
    spawn = multiprocessing.get_context("spawn")
    out: Queue[Reading] = spawn.Queue()
    shares = [list(range(w, partitions, workers)) for w in range(min(workers, partitions))]
    procs = [spawn.Process(target=_read, args=(bootstrap, topic, s, what, out)) for s in shares]
    for p in procs:
        p.start()
    readings = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    records = sum(r.records for r in readings)
    if not records:
        raise ValueError(f"topic {topic!r} has no records to read")
    return Ceiling(
        records=records,
        events=sum(r.events for r in readings),
        events_per_s=round(records / max(r.seconds for r in readings)),
        cpu_us_per_event=round(sum(r.cpu_s for r in readings) / records * 1e6, 2),
    )
