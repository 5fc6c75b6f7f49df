"""Dead letters to their topic: each invalid record as it came, with why, where from."""

from __future__ import annotations

import polars as pl
from kafka import KafkaProducer

REASON_MAX_BYTES = 1024


def send_dead_letters(producer: KafkaProducer, topic: str, dead_letters: pl.DataFrame) -> None:
    """Send a batch's dead letters and wait for them: the batch commits only after."""
    if dead_letters.is_empty():
        return
    for row in dead_letters.select(
        "reason_code", "reason", "_topic", "_partition", "_offset", "key", "raw"
    ).iter_rows():
        code, reason, source_topic, partition, offset, key, raw = row
        headers = [
            ("reason_code", code.encode()),
            ("reason", reason.encode()[:REASON_MAX_BYTES]),
            ("source", f"{source_topic}/{partition}/{offset}".encode()),
        ]
        producer.send(topic, key=key, value=raw, headers=headers)
    producer.flush()
