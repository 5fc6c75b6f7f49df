"""Record batches read as columns: the same records, offsets and timestamps as kafka-python's
own reader, from any position, compressed or not, and a clear error for a corrupt batch."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

from agentwatch.processors.landing.fetch import (
    Chunk,
    ColumnarRecords,
    _read_any,
    install,
    read_batch,
)

BASE_OFFSET = 1_000
FIRST_TS = 1_700_000_000_000

records_st = st.lists(
    st.tuples(
        st.one_of(st.none(), st.binary(max_size=40)),  # key
        st.one_of(st.none(), st.binary(max_size=300)),  # value
        st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=8))),
                 max_size=2),  # headers
        st.integers(min_value=-10_000, max_value=10**9),  # timestamp delta
    ),
    min_size=1,
    max_size=60,
)  # fmt: skip


def build(records: list[Any], compression: int = 0, log_append_time: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 30,
    )  # fmt: skip
    for delta, (key, value, headers, ts_delta) in enumerate(records):
        builder.append(delta, timestamp=FIRST_TS + ts_delta, key=key, value=value, headers=headers)
    raw = bytearray(builder.build())
    raw[0:8] = BASE_OFFSET.to_bytes(8, "big")
    if log_append_time:
        raw[22] |= 0x08  # attributes' timestamp-type bit (the CRC does not matter here)
    return bytes(raw)


def kafka_python(raw: bytes, from_offset: int) -> Chunk:
    """The batch as kafka-python's own record reader reads it (the fallback for old formats)."""
    return _read_any(DefaultRecordBatch(raw), from_offset)


@settings(max_examples=200, deadline=None)
@given(records=records_st, skip=st.integers(min_value=0, max_value=70))
def test_a_batch_reads_as_kafka_python_reads_it_from_any_position(
    records: list[Any], skip: int
) -> None:
    raw = build(records)
    assert read_batch(DefaultRecordBatch(raw), BASE_OFFSET + skip) == kafka_python(
        raw, BASE_OFFSET + skip
    )


@pytest.mark.parametrize("codec", [DefaultRecordBatch.CODEC_GZIP, DefaultRecordBatch.CODEC_NONE])
def test_a_compressed_batch_reads_as_its_records(codec: int) -> None:
    records: list[Any] = [(b"k%d" % i, b'{"n": %d}' % i, [], i) for i in range(50)]
    raw = build(records, compression=codec)
    chunk = read_batch(DefaultRecordBatch(raw), 0)
    assert chunk.values == [b'{"n": %d}' % i for i in range(50)]
    assert chunk.offsets == list(range(BASE_OFFSET, BASE_OFFSET + 50))


def test_log_append_time_gives_every_record_the_batch_timestamp() -> None:
    raw = build([(None, b"a", [], 5), (None, b"b", [], 9)], log_append_time=True)
    batch = DefaultRecordBatch(raw)
    assert read_batch(batch, 0).timestamps_ms == [batch.max_timestamp] * 2


@settings(max_examples=300, deadline=None)
@given(records=records_st, cut=st.integers(min_value=61, max_value=10_000), junk=st.binary())
def test_a_corrupt_batch_raises_nothing_but_kafka_pythons_corrupt_record_error(
    records: list[Any], cut: int, junk: bytes
) -> None:
    raw = build(records)
    mangled = raw[: min(cut, len(raw) - 1)] + junk
    if mangled == raw:
        return
    with contextlib.suppress(CorruptRecordError):  # anything else fails the test
        read_batch(DefaultRecordBatch(mangled), 0)


def test_install_refuses_a_consumer_without_kafka_pythons_fetcher() -> None:
    class NotAConsumer:
        pass

    with pytest.raises(RuntimeError, match="kafka-python"):
        install(NotAConsumer())  # type: ignore[arg-type]


def fetched(batch_sizes: list[int]) -> bytes:
    """Consecutive record batches, as a fetch response holds them."""
    out, base = bytearray(), 0
    for size in batch_sizes:
        raw = bytearray(build([(None, b"v%d" % (base + i), [], i) for i in range(size)]))
        raw[0:8] = base.to_bytes(8, "big")
        out += raw
        base += size
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(
    batch_sizes=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8),
    start=st.integers(min_value=0, max_value=40),
    takes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=12),
)
def test_takes_return_the_records_and_positions_kafka_pythons_takes_return(
    batch_sizes: list[int], start: int, takes: list[int]
) -> None:
    raw = fetched(batch_sizes)
    tp = TopicPartition("t", 0)
    theirs = Fetcher.PartitionRecords(start, tp, MemoryRecords(raw))
    ours = ColumnarRecords(start, tp, MemoryRecords(raw))
    for n in takes:
        if not theirs:  # drained: the fetcher takes no more from it
            assert not ours.take(n)
            break
        expected = [r.offset for r in theirs.take(n)]
        chunks = ours.take(n)
        assert [o for c in chunks for o in c.offsets] == expected
        assert len(chunks) == len(expected)  # what the fetcher counts against max_records
        if expected:
            assert ours.next_fetch_offset == expected[-1] + 1


def as_control_batch(raw: bytes) -> bytes:
    """The same batch marked as a broker's control batch (a transaction marker)."""
    out = bytearray(raw)
    out[22] |= 0x20  # attributes' control bit (the low byte of the int16 at 21)
    out[17:21] = crc32c(bytes(out[21:])).to_bytes(4, "big")
    return bytes(out)


def test_a_control_batch_is_skipped_and_the_position_moves_past_it() -> None:
    marker = bytearray(as_control_batch(build([(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00", [], 0)])))
    marker[0:8] = (2).to_bytes(8, "big")
    raw = fetched([2]) + bytes(marker)
    tp = TopicPartition("t", 0)
    theirs = Fetcher.PartitionRecords(0, tp, MemoryRecords(raw))
    ours = ColumnarRecords(0, tp, MemoryRecords(raw))
    assert [o for c in ours.take(10) for o in c.offsets] == [r.offset for r in theirs.take(10)]
    assert ours.take(10) == []
    assert ours.next_fetch_offset == 3
