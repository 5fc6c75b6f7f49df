"""Kafka record batches written in one pass: the bytes kafka-python's builder writes."""

from __future__ import annotations

from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from agentwatch.ingest.otlp.records import record_batches, varint

TS = 1_764_000_000_123


def _builder_bytes(records: list[tuple[bytes | None, bytes]]) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30,
    )  # fmt: skip
    for offset, (key, value) in enumerate(records):
        builder.append(offset, TS, key, value, [])
    return bytes(builder.build())


def test_a_batch_is_byte_for_byte_the_one_kafka_pythons_builder_writes() -> None:
    records: list[tuple[bytes | None, bytes]] = [
        (f"conv-{i}".encode(), b"v" * (i * 97)) for i in range(300)
    ]
    records += [(None, b"keyless"), (b"", b"empty key"), (b"k" * 20_000, b"x" * 70_000)]
    assert record_batches(records, TS, 1 << 30) == _builder_bytes(records)


def test_batches_split_at_the_size_limit_keep_order_and_valid_checksums() -> None:
    records: list[tuple[bytes | None, bytes]] = [
        (b"conv-1", f"event-{i}".encode() * 30) for i in range(100)
    ]
    blob = record_batches(records, TS, 4096)
    found: list[bytes | None] = []
    batches = MemoryRecords(blob)
    count = 0
    while batches.has_next():
        batch = batches.next_batch()
        assert batch.validate_crc()
        found += [r.value for r in batch]
        count += 1
    assert count > 1
    assert found == [v for _, v in records]
    sizes, pos = [], 0
    while pos < len(blob):  # each batch: 12 bytes of offset and length, then its length
        sizes.append(12 + int.from_bytes(blob[pos + 8 : pos + 12], "big"))
        pos += sizes[-1]
    assert len(sizes) == count and max(sizes) <= 4096


def test_varints_are_kafkas_zigzag_encoding() -> None:
    assert varint(0) == b"\x00"
    assert varint(-1) == b"\x01"
    assert varint(1) == b"\x02"
    assert varint(63) == b"\x7e"
    assert varint(64) == b"\x80\x01"
    assert varint(300) == b"\xd8\x04"
