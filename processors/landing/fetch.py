"""Fetched Kafka record batches read as columns, one chunk a batch, not one object a record.

kafka-python turns every fetched record into a ``ConsumerRecord`` through a chain of
generators (its batch reader decodes each varint in a call of its own, then the fetcher
sizes its key, value and headers, deserializes and wraps it): 6 to 7 us of CPU a record
in a micro-benchmark, against 1.4 to 1.9 us here. The processor needs four fields of
each record, so here each record batch (Kafka's ``RecordBatch`` v2, the only format a
Kafka 4 broker serves) is read in one loop with its varints decoded inline, into a
:class:`Chunk` of four columns; kafka-python still fetches, checks the batch CRC,
decompresses, skips control and aborted batches and keeps the positions. A batch of any
other format is read through kafka-python's own records.

``install`` puts :class:`ColumnarRecords` in place on one consumer: its ``poll`` then
returns chunks instead of records, and ``max_poll_records`` still counts records.
It relies on kafka-python's fetcher internals, so the version is pinned below 3.1 and
``install`` refuses a consumer that lacks them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from kafka import KafkaConsumer
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel  # type: ignore[import-untyped]
from kafka.record.default_records import DefaultRecordBatch

_MAGIC_V2: Final = 2


@dataclass(slots=True)
class Chunk:
    """A record batch's records from the position on, as columns, in offset order."""

    offsets: list[int] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


def read_batch(batch: Any, from_offset: int) -> Chunk:
    """The records of ``batch`` (CRC already checked) at or after ``from_offset``."""
    if batch.magic != _MAGIC_V2:
        return _read_any(batch, from_offset)
    batch._maybe_uncompress()  # then _buffer holds the records from _pos
    buf = bytes(batch._buffer)
    pos = batch._pos
    base, first_ts = batch.base_offset, batch.first_timestamp
    append_time = batch.timestamp_type == DefaultRecordBatch.LOG_APPEND_TIME
    chunk = Chunk()
    offsets, timestamps, keys, values = chunk.offsets, chunk.timestamps_ms, chunk.keys, chunk.values
    size = len(buf)
    try:
        for _ in range(batch.records_count):
            # Record: length, attributes, timestamp delta, offset delta, key, value,
            # headers; every integer a zigzag varint, decoded inline (a function call
            # per varint made the whole read 1.72 us a record instead of 1.42).
            b = buf[pos]
            v, shift, pos = b & 0x7F, 7, pos + 1
            while b & 0x80:
                b = buf[pos]
                v, shift, pos = v | (b & 0x7F) << shift, shift + 7, pos + 1
            end = pos + ((v >> 1) ^ -(v & 1))
            if end > size:
                raise IndexError("a record runs past its batch")
            b = buf[pos]
            pos += 1
            while b & 0x80:  # attributes: unused by Kafka so far
                b = buf[pos]
                pos += 1
            b = buf[pos]
            v, shift, pos = b & 0x7F, 7, pos + 1
            while b & 0x80:
                b = buf[pos]
                v, shift, pos = v | (b & 0x7F) << shift, shift + 7, pos + 1
            ts = first_ts + ((v >> 1) ^ -(v & 1))
            b = buf[pos]
            v, shift, pos = b & 0x7F, 7, pos + 1
            while b & 0x80:
                b = buf[pos]
                v, shift, pos = v | (b & 0x7F) << shift, shift + 7, pos + 1
            offset = base + ((v >> 1) ^ -(v & 1))
            b = buf[pos]
            v, shift, pos = b & 0x7F, 7, pos + 1
            while b & 0x80:
                b = buf[pos]
                v, shift, pos = v | (b & 0x7F) << shift, shift + 7, pos + 1
            length = (v >> 1) ^ -(v & 1)
            key = None
            if length >= 0:
                key, pos = buf[pos : pos + length], pos + length
            b = buf[pos]
            v, shift, pos = b & 0x7F, 7, pos + 1
            while b & 0x80:
                b = buf[pos]
                v, shift, pos = v | (b & 0x7F) << shift, shift + 7, pos + 1
            length = (v >> 1) ^ -(v & 1)
            value = None
            if length >= 0:
                value, pos = buf[pos : pos + length], pos + length
            if pos > end:
                raise IndexError("a record's fields run past its length")
            pos = end  # the headers, which landing does not read
            if offset >= from_offset:
                offsets.append(offset)
                timestamps.append(ts)
                keys.append(key)
                values.append(value)
    except IndexError as exc:
        raise CorruptRecordError(f"Found invalid record structure: {exc}") from exc
    if pos != size:
        raise CorruptRecordError(f"{size - pos} unconsumed bytes after all records consumed")
    if append_time:
        chunk.timestamps_ms[:] = [batch.max_timestamp] * len(chunk)
    return chunk


def _read_any(batch: Any, from_offset: int) -> Chunk:
    """Any record batch, through kafka-python's own record reader."""
    chunk = Chunk()
    for record in batch:
        if record.offset >= from_offset:
            chunk.offsets.append(record.offset)
            chunk.timestamps_ms.append(record.timestamp)
            chunk.keys.append(record.key)
            chunk.values.append(record.value)
    return chunk


class _Taken(list[Chunk]):
    """Chunks taken from a fetch; its length is their records', which the fetcher counts
    against ``max_records`` (iterating and extending see the chunks)."""

    records = 0

    def __len__(self) -> int:
        return self.records


class ColumnarRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """A completed fetch of one partition, yielding a :class:`Chunk` a record batch.

    ``take(n)`` takes at most ``n`` records, as kafka-python's does: a chunk that would
    go past them is split, and its rest comes first at the next take.
    """

    _rest: tuple[Chunk, int] | None = None  # a split chunk's rest and its batch's end

    def _maybe_skip_record(self, record: Chunk) -> bool:
        return False  # each chunk starts at the fetch offset already

    def take(self, n: int | None = None) -> list[Chunk]:
        self._maybe_raise_next_inline_exception()
        taken = _Taken()
        records = self.record_iterator
        try:
            while records is not None and (n is None or taken.records < n):
                if self._rest is not None:
                    (chunk, end), self._rest = self._rest, None
                    self.next_fetch_offset = end
                else:
                    following: Chunk | None = next(records, None)
                    if following is None:
                        break
                    chunk = following
                room = len(chunk) if n is None else n - taken.records
                if len(chunk) > room:
                    rest = Chunk(*(column[room:] for column in _columns(chunk)))
                    self._rest = (rest, self.next_fetch_offset)
                    chunk = Chunk(*(column[:room] for column in _columns(chunk)))
                    self.next_fetch_offset = rest.offsets[0]
                taken.append(chunk)
                taken.records += len(chunk)
        except Exception as exc:
            if not taken:
                raise
            self._next_inline_exception = exc  # raised at the next take, as kafka-python does
        return taken

    def drain(self) -> None:
        self._rest = None
        super().drain()

    def _unpack_records(
        self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[Chunk]:
        batch = records.next_batch()
        while batch is not None:
            if self.check_crcs and not batch.validate_crc():
                where = f"partition {tp} at offset {batch.base_offset}"
                raise CorruptRecordError(f"Record batch for {where} failed crc check")
            if batch.magic == _MAGIC_V2:
                self.leader_epoch = batch.leader_epoch
                if self._skipped(batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            chunk = read_batch(batch, self.fetch_offset)
            self.records_read += len(chunk)
            self.bytes_read += batch.size_in_bytes
            if batch.magic == _MAGIC_V2:
                # The batch's end, even when compaction removed its last records.
                self.next_fetch_offset = batch.next_offset
            elif chunk.offsets:
                self.next_fetch_offset = chunk.offsets[-1] + 1
            if chunk.offsets:
                yield chunk
            batch = records.next_batch()
        self.drain()

    def _skipped(self, batch: Any) -> bool:
        """Control batches, and with read_committed a transaction's aborted batches."""
        if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
            self._consume_aborted_transactions_up_to(batch.last_offset)
            if self._contains_abort_marker(batch):
                self.aborted_producer_ids.discard(batch.producer_id)
                return True
            if self._is_batch_aborted(batch):
                return True
        return bool(batch.is_control_batch)


def _columns(chunk: Chunk) -> tuple[list[Any], ...]:
    return chunk.offsets, chunk.timestamps_ms, chunk.keys, chunk.values


def sizing(max_batch: int) -> dict[str, int]:
    """How much a poll returns and a fetch asks for: consumer options measured here."""
    return {
        "max_poll_records": max_batch,  # the most a poll returns; batching.room asks less
        # kafka-python copies a response about 4 times: two workers landing 1,000,000
        # events peaked at 370 MB each with fetches of 2 MB (512 KB a partition), 380 with
        # 4 MB and 392 to 403 with 8 MB, at the same CPU; 32 MB cost 35 MB more than 8.
        "fetch_max_bytes": 2 << 20,
        "max_partition_fetch_bytes": 512 << 10,
        # Under a live load the broker answers a fetch with the few records that came
        # since the last: a worker polled 180 to 320 times a second at 31,000 events/s.
        # Waiting for 256 KB or 100 ms, whichever comes first, took that to 25 to 145 and
        # the freshness p50 from 1.6 to 1.1-1.5 s.
        "fetch_min_bytes": 256 << 10,
        "fetch_max_wait_ms": 100,
    }


def install(consumer: KafkaConsumer) -> None:
    """Make ``consumer.poll`` return :class:`Chunk` s (refused if kafka-python changed)."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    original = getattr(fetcher, "PartitionRecords", None)
    needed = ("_unpack_records", "_maybe_skip_record", "_consume_aborted_transactions_up_to")
    if original is not Fetcher.PartitionRecords or not all(hasattr(original, n) for n in needed):
        raise RuntimeError(
            "this kafka-python's fetcher has no PartitionRecords to read columns with: "
            "install a kafka-python the project's pyproject.toml allows"
        )
    fetcher.PartitionRecords = ColumnarRecords
