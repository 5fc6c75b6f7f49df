"""Decode and validate one batch of raw Kafka messages: valid events in, dead letters out.

Each message is parsed once, by msgspec, into a struct per kind whose fields are every
field the contract names (the other kinds' fields checked too, since the columns are
typed for every kind), in one shared column order. The structs become columns a chunk
at a time (a C-level transpose, then one typed polars Series per field), so no byte is
parsed twice and no Python code runs per field.

Two checks are cheaper on columns than per message, so the per-message decoder leaves
them out: ``ts`` is read as text and parsed by polars when it has the RFC 3339 form
msgspec accepts, and ``attributes`` is kept as the raw JSON text of an object. A
message that fails either, or the per-message decoder, is judged again by the full
contract decoder (``validate``), whose verdict and error text are the dead letter's.
Nothing here does I/O, so every rule is unit-tested on in-memory batches.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

import msgspec
import polars as pl
from msgspec.structs import astuple

from agentwatch.ingest.contract.events import CHECKED_TYPES, CheckedEvent, Event
from agentwatch.ingest.contract.wire import DEFAULT_MAX_MESSAGE_BYTES
from agentwatch.processors.store.tables import (
    CONTRACT_FIELDS,
    DEAD_LETTERS_SCHEMA,
    DERIVED_FIELDS,
    EVENTS_SCHEMA,
    UTC_TS,
)

# Each kind, with every field the contract names checked on it too: the columns are typed
# for every kind, so nothing reaches them unchecked. The judge of every rejected message.
_DECODER = msgspec.json.Decoder(CheckedEvent)

# The columns the structs fill, in their field order (``kind`` is the tag, not a field).
_FIELDS: tuple[str, ...] = tuple(name for name in CONTRACT_FIELDS if name != "kind")
_NULL = msgspec.Raw(b"null")
# The RFC 3339 forms both msgspec and polars read to the same instant; others are judged
# by the contract decoder.
_RFC3339 = (
    r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
_INT64_MAX = 2**63 - 1
# Structs turned into columns while they are still in the CPU cache: a whole batch of
# them at once is slower than these chunks, measured on 20,000 simulated events.
CHUNK = 2048


def _columnar(checked: type[Event]) -> type[msgspec.Struct]:
    """``checked`` with its fields in column order, ``ts`` as text, ``attributes`` raw."""
    fields = {f.name: f for f in msgspec.structs.fields(checked)}
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name in _FIELDS:
        f = fields[name]
        if name == "ts":
            spec.append((name, str))
        elif name == "attributes":
            spec.append((name, msgspec.Raw, _NULL))
        elif f.required:
            spec.append((name, f.type))
        else:
            spec.append((name, f.type, f.default))
    return msgspec.defstruct(
        checked.__name__,
        spec,
        tag_field="kind",
        tag=checked.__struct_config__.tag,
        kw_only=True,
        gc=False,  # no cycles: the cyclic GC need not track a batch of them
    )


_COLUMNAR_TYPES = tuple(_columnar(t) for t in CHECKED_TYPES)
_COLUMNAR = msgspec.json.Decoder(Union[_COLUMNAR_TYPES])  # type: ignore[arg-type]  # noqa: UP007
_KIND = {t: str(t.__struct_config__.tag) for t in _COLUMNAR_TYPES}


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

Verdict = tuple[str, str]  # (reason_code, reason)


def validate(value: bytes | None, max_bytes: int) -> Verdict | None:
    """The (reason_code, reason) for an invalid message, or None when it is valid."""
    verdict, _ = _judge(value, max_bytes)
    return verdict


def _judge(value: bytes | None, max_bytes: int) -> tuple[Verdict | None, Any]:
    """The contract decoder's verdict on one message, and the event when it is valid."""
    if value is None:
        return ("empty_message", "empty_message: the message has no value (a tombstone?)"), None
    if len(value) > max_bytes:
        size = f"{len(value)} bytes is over the {max_bytes}-byte limit"
        return ("too_large", f"too_large: {size}"), None
    try:
        return None, _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        code = classify(str(exc))
        return (code, f"{code}: {exc}"), None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return ("not_utf8", f"not_utf8: {uexc.reason} at byte {uexc.start}"), None
        return ("not_json", f"not_json: {exc}"), None


def decode_batch(batch: RawBatch, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> DecodedBatch:
    """Split a batch into an ``events`` frame and a ``dead_letters`` frame; never raises."""
    decode = _COLUMNAR.decode
    chunks: list[pl.DataFrame] = []
    structs: list[Any] = []
    positions: list[int] = []
    bad: list[tuple[int, Verdict]] = []
    with _collector_paused():
        for i, value in enumerate(batch.values):  # the one pass per message
            if value is not None and len(value) <= max_bytes:
                try:
                    structs.append(decode(value))
                    positions.append(i)
                    if len(structs) == CHUNK:
                        chunks.append(_columns(structs, positions, bad))
                        structs, positions = [], []
                    continue
                except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError included
                    pass
            verdict, _ = _judge(value, max_bytes)
            bad.append((i, verdict or ("unreadable", "unreadable: rejected by the decoder")))
        if structs:
            chunks.append(_columns(structs, positions, bad))
    events = _events(batch, pl.concat(chunks), bad, max_bytes) if chunks else None
    if events is None:
        events = pl.DataFrame(schema=EVENTS_SCHEMA)
    return DecodedBatch(events=events, dead_letters=_dead_letters(batch, sorted(bad)))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off Python's cyclic GC while a batch decodes.

    Each struct's tuple of values is tracked by the collector, so a 20,000-message batch
    would trigger hundreds of collections that find nothing (the structs hold no cycles).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _columns(
    structs: list[Any], positions: list[int], bad: list[tuple[int, Verdict]]
) -> pl.DataFrame:
    """One chunk of structs as raw columns (``ts`` as text, ``attributes`` as bytes)."""
    data: dict[str, pl.Series] = {"_pos": pl.Series("_pos", positions, dtype=pl.Int64)}
    for name, column in zip(_FIELDS, zip(*map(astuple, structs), strict=True), strict=True):
        if name == "attributes":
            data[name] = pl.Series(name, list(map(bytes, column)), dtype=pl.Binary)
            continue
        dtype = pl.String() if name == "ts" else CONTRACT_FIELDS[name]
        try:
            data[name] = pl.Series(name, column, dtype=dtype)
        except (OverflowError, TypeError):  # msgspec reads integers up to 2**64 - 1
            rows = {r for r, v in enumerate(column) if v is not None and v > _INT64_MAX}
            verdict = ("unreadable", f"unreadable: `{name}` does not fit a 64-bit integer")
            bad.extend((positions[r], verdict) for r in sorted(rows))
            fitting = [None if r in rows else v for r, v in enumerate(column)]
            data[name] = pl.Series(name, fitting, dtype=dtype)
    data["kind"] = pl.Series("kind", list(map(_KIND.__getitem__, map(type, structs))))
    return pl.DataFrame(data)


def _events(
    batch: RawBatch, raw: pl.DataFrame, bad: list[tuple[int, Verdict]], max_bytes: int
) -> pl.DataFrame:
    """The events frame from the raw columns; rows found invalid go to ``bad``."""
    text = raw["ts"]
    ts = text.str.to_datetime(_TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    attributes = raw["attributes"]
    is_null = attributes.bin.starts_with(b"n")  # the one JSON value starting with n
    attributes_text, bad_text = _utf8(attributes)
    suspect = (
        ~text.str.contains(_RFC3339)
        | ts.is_null()
        | ~(attributes.bin.starts_with(b"{") | is_null)
        | bad_text
    )
    frame = raw.with_columns(
        ts=ts, attributes=pl.when(is_null).then(None).otherwise(attributes_text)
    )
    if suspect.any():
        frame = _judge_suspects(batch, frame, suspect, bad, max_bytes)
    if bad:
        frame = frame.filter(~pl.col("_pos").is_in([i for i, _ in bad]))
    offsets = pl.Series("_offset", batch.offsets, dtype=pl.Int64)
    kafka_ts = pl.Series("_kafka_ts", batch.timestamps_ms, dtype=pl.Int64)
    positions = frame["_pos"]
    return frame.with_columns(
        pl.col("environment").fill_null("prod"),
        pl.col("status").fill_null("ok"),
        *(pl.lit(None, dtype).alias(name) for name, dtype in DERIVED_FIELDS.items()),
        _topic=pl.lit(batch.topic),
        _partition=pl.lit(batch.partition, pl.Int32),
        _offset=offsets.gather(positions),
        _kafka_ts=kafka_ts.gather(positions).cast(pl.Datetime("ms", "UTC")).cast(UTC_TS),
    ).select(list(EVENTS_SCHEMA))


def _utf8(attributes: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Raw attribute texts as strings, and which were not UTF-8 (msgspec keeps them raw)."""
    try:
        return attributes.cast(pl.String), pl.Series([False] * len(attributes))
    except pl.exceptions.PolarsError:
        texts = [_text(v) for v in attributes]
        return pl.Series(texts, dtype=pl.String), pl.Series([t is None for t in texts])


def _text(value: bytes | None) -> str | None:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _judge_suspects(
    batch: RawBatch,
    frame: pl.DataFrame,
    suspect: pl.Series,
    bad: list[tuple[int, Verdict]],
    max_bytes: int,
) -> pl.DataFrame:
    """The contract decoder's verdicts on rows the column checks doubt (rare).

    An event it accepts stays, with ``ts`` and ``attributes`` as it read them.
    """
    fixed_rows: list[int] = []
    fixed_ts: list[Any] = []
    fixed_attributes: list[str | None] = []
    positions = frame["_pos"]
    for row in suspect.arg_true().to_list():
        verdict, event = _judge(batch.values[positions[row]], max_bytes)
        if verdict is not None:
            bad.append((positions[row], verdict))
            continue
        fixed_rows.append(row)
        fixed_ts.append(event.ts)
        attributes = event.attributes
        fixed_attributes.append(
            None if attributes is None else msgspec.json.encode(attributes).decode()
        )
    if fixed_rows:
        frame = frame.with_columns(
            frame["ts"].scatter(fixed_rows, pl.Series(fixed_ts, dtype=UTC_TS)),
            frame["attributes"].scatter(fixed_rows, pl.Series(fixed_attributes, dtype=pl.String)),
        )
    return frame


def _dead_letters(batch: RawBatch, bad: list[tuple[int, Verdict]]) -> pl.DataFrame:
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
