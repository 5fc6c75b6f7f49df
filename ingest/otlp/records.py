"""Kafka record batches (magic 2, uncompressed, no producer id) written in one pass.

kafka-python's ``DefaultRecordBatchBuilder`` checks types and encodes varints a byte at a
time for every record; a receiver request's records are all ``bytes``, all share one
timestamp and carry no headers, so each record here is a few byte strings joined, with
its varints from a table. The layout is Kafka's (``RecordBatch`` v2): a 61-byte header
whose CRC-32C covers everything from its attributes on, then the records.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from crc32c import crc32c

# base offset, batch length, partition leader epoch, magic, crc
_HEAD: Final = struct.Struct(">qiibI")
# attributes, last offset delta, first and max timestamp, producer id and epoch,
# base sequence, record count: the part the CRC covers before the records
_TAIL: Final = struct.Struct(">hiqqqhii")
HEADER_BYTES: Final = _HEAD.size + _TAIL.size  # 61
_AFTER_LENGTH: Final = 4 + 1 + 4  # leader epoch, magic, crc: counted in the batch length
_RECORD_START: Final = b"\x00\x00"  # attributes, timestamp delta 0
_NO_KEY: Final = b"\x01"  # length -1
_NO_HEADERS: Final = b"\x00"


def varint(n: int) -> bytes:
    """Kafka's zigzag varint of ``n``."""
    v = (n << 1) ^ (n >> 63)
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


_VARINTS: Final = tuple(varint(n) for n in range(1 << 14))


def _v(n: int) -> bytes:
    return _VARINTS[n] if n < 16384 else varint(n)


def record(offset: int, key: bytes | None, value: bytes) -> bytes:
    """One record: its length, then attributes, timestamp delta (0: a batch's records
    share its timestamp), offset delta, key, value, no headers."""
    body = b"".join(
        (
            _RECORD_START,
            _v(offset),
            _NO_KEY if key is None else _v(len(key)),
            key or b"",
            _v(len(value)),
            value,
            _NO_HEADERS,
        )
    )
    return _v(len(body)) + body


def record_batches(
    records: Sequence[tuple[bytes | None, bytes]], ts_ms: int, max_bytes: int
) -> bytes:
    """``records`` in order as record batches of at most ``max_bytes`` each (a record
    larger than that gets a batch of its own)."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = HEADER_BYTES
    for key, value in records:
        encoded = record(len(batch), key, value)
        if batch and size + len(encoded) > max_bytes:
            out.append(_batch(batch, ts_ms))
            batch, size = [], HEADER_BYTES
            encoded = record(0, key, value)
        batch.append(encoded)
        size += len(encoded)
    if batch:
        out.append(_batch(batch, ts_ms))
    return b"".join(out)


def _batch(records: list[bytes], ts_ms: int) -> bytes:
    count = len(records)
    tail = _TAIL.pack(0, count - 1, ts_ms, ts_ms, -1, -1, -1, count)
    body = b"".join(records)
    crc = crc32c(body, crc32c(tail))
    length = _AFTER_LENGTH + len(tail) + len(body)
    return _HEAD.pack(0, length, 0, 2, crc) + tail + body
