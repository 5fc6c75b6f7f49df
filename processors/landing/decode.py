"""Decode and validate one batch of raw Kafka messages: valid events in, dead letters out.

Validation is msgspec against the contract types, each kind with the fields of the
other kinds checked too (about 1 us a message in C, faster
than decoding the batch as one joined JSON array, which also mis-frames hostile input);
columns are then built for the whole batch at once by polars' NDJSON reader with a fixed
schema. Nothing here does I/O, so every rule is unit-tested on in-memory batches.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import polars as pl

from agentwatch.ingest.contract.events import DEFAULT_MAX_MESSAGE_BYTES, CheckedEvent
from agentwatch.processors.store.tables import (
    CONTRACT_FIELDS,
    DEAD_LETTERS_SCHEMA,
    DERIVED_FIELDS,
    EVENTS_SCHEMA,
    UTC_TS,
)

# Each kind, with every field the contract names checked on it too: the columns are typed
# for every kind, so nothing reaches them unchecked.
_DECODER = msgspec.json.Decoder(CheckedEvent)


@dataclass(frozen=True)
class RawBatch:
    """Messages of one topic-partition, in offset order, as they came from Kafka."""

    topic: str
    partition: int
    offsets: Sequence[int]
    timestamps_ms: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass(frozen=True)
class DecodedBatch:
    events: pl.DataFrame
    dead_letters: pl.DataFrame


def classify(message: str) -> str:
    """Map a validation message to a stable reason code that dashboards can group by."""
    for pattern, code in _REASON_PATTERNS:
        if pattern.search(message):
            return code
    return "invalid"


_REASON_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), code)
    for p, code in (
        (r"^Expected `object`, got `\w+`$", "not_object"),
        (r"missing required field", "missing_field"),
        (r"at `\$\.kind`", "unknown_kind"),
        (r"at `\$\.schema_version`", "unsupported_schema_version"),
        (r"Invalid enum value", "unknown_value"),
        (r">= 0", "negative_value"),
        (r"of length >= 1", "empty_value"),
        (r"of length <= ", "too_long"),
        (r"(RFC3339|datetime)", "bad_timestamp"),
        (r"^Expected `", "wrong_type"),
    )
)


def validate(value: bytes | None, max_bytes: int) -> tuple[str, str] | None:
    """The (reason_code, reason) for an invalid message, or None when it is valid."""
    if value is None:
        return "empty_message", "empty_message: the message has no value (a tombstone?)"
    if len(value) > max_bytes:
        return "too_large", f"too_large: {len(value)} bytes is over the {max_bytes}-byte limit"
    try:
        _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        code = classify(str(exc))
        return code, f"{code}: {exc}"
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return "not_utf8", f"not_utf8: {uexc.reason} at byte {uexc.start}"
        return "not_json", f"not_json: {exc}"
    return None


def decode_batch(batch: RawBatch, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> DecodedBatch:
    """Split a batch into an ``events`` frame and a ``dead_letters`` frame; never raises."""
    verdicts = [validate(v, max_bytes) for v in batch.values]
    valid_idx = [i for i, v in enumerate(verdicts) if v is None]
    bad = [(i, v) for i, v in enumerate(verdicts) if v is not None]

    events, unreadable = _read_events(batch, valid_idx)
    bad.extend(unreadable)
    return DecodedBatch(events=events, dead_letters=_dead_letters(batch, sorted(bad)))


def _read_events(
    batch: RawBatch, idx: list[int]
) -> tuple[pl.DataFrame, list[tuple[int, tuple[str, str]]]]:
    if not idx:
        return pl.DataFrame(schema=EVENTS_SCHEMA), []
    values = [_one_line(batch.values[i]) for i in idx]
    try:
        raw = _read_ndjson(values)
        positions = idx
        unreadable: list[tuple[int, tuple[str, str]]] = []
    except Exception:
        frames, positions, unreadable = [], [], []
        for i, value in zip(idx, values, strict=True):
            try:
                frames.append(_read_ndjson([value]))
                positions.append(i)
            except Exception as exc:
                unreadable.append((i, ("unreadable", f"unreadable: {exc}")))
        raw = pl.concat(frames) if frames else pl.DataFrame(schema=CONTRACT_FIELDS)

    frame = raw.with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC", strict=False).cast(UTC_TS),
        pl.col("environment").fill_null("prod"),
        pl.col("status").fill_null("ok"),
        *(pl.lit(None, dtype).alias(name) for name, dtype in DERIVED_FIELDS.items()),
        _topic=pl.lit(batch.topic),
        _partition=pl.lit(batch.partition, pl.Int32),
        _offset=pl.Series([batch.offsets[i] for i in positions], dtype=pl.Int64),
        _kafka_ts=pl.Series([batch.timestamps_ms[i] for i in positions], dtype=pl.Int64)
        .cast(pl.Datetime("ms", "UTC"))
        .cast(UTC_TS),
    ).select(list(EVENTS_SCHEMA))
    # msgspec accepted these timestamps; a form polars cannot read is still not lost.
    bad_ts = frame["ts"].is_null()
    if bad_ts.any():
        for pos in bad_ts.arg_true().to_list():
            unreadable.append(
                (positions[pos], ("bad_timestamp", "bad_timestamp: ts form not supported"))
            )
        frame = frame.filter(~bad_ts)
    return frame, unreadable


def _one_line(value: bytes | None) -> bytes:
    """NDJSON needs one object a line; pretty-printed JSON is re-encoded compactly."""
    assert value is not None
    if b"\n" in value or b"\r" in value:
        return msgspec.json.encode(msgspec.json.decode(value))
    return value


def _read_ndjson(values: list[bytes]) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(b"\n".join(values)), schema=CONTRACT_FIELDS)


def _dead_letters(batch: RawBatch, bad: list[tuple[int, tuple[str, str]]]) -> pl.DataFrame:
    if not bad:
        return pl.DataFrame(schema=DEAD_LETTERS_SCHEMA)
    rows = [i for i, _ in bad]
    values = [batch.values[i] or b"" for i in rows]
    return pl.DataFrame(
        {
            "reason_code": [code for _, (code, _) in bad],
            "reason": [reason for _, (_, reason) in bad],
            "_topic": [batch.topic] * len(rows),
            "_partition": [batch.partition] * len(rows),
            "_offset": [batch.offsets[i] for i in rows],
            "_kafka_ts": pl.Series([batch.timestamps_ms[i] for i in rows], dtype=pl.Int64)
            .cast(pl.Datetime("ms", "UTC"))
            .cast(UTC_TS),
            "key": [batch.keys[i] for i in rows],
            "raw": values,
            "size_bytes": [len(v) for v in values],
        },
        schema=DEAD_LETTERS_SCHEMA,
    )
