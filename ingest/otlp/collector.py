"""OTLP topics in ``agentwatch process``: the Collector's spans and the receivers' samples.

The OpenTelemetry Collector's Kafka exporter writes one ``ExportTraceServiceRequest`` per
record (encoding ``otlp_proto``, or ``otlp_json``). Per batch, each record is mapped by
the same mapping as the receiver and its events take the record's place in the batch,
carrying its offset, so the landing pipeline (validation, dedup, sessions, pricing) and
the exactly-once commit are those of the events topic. A record that is not an export
becomes a dead letter; unmapped spans become ``otlp_unmapped`` rows. Records of the
receivers' unmapped-samples topic become ``otlp_unmapped`` rows as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import polars as pl

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.pipeline import LandedBatch, LandingSettings, PartitionState
from agentwatch.processors.store.tables import DEAD_LETTERS_SCHEMA, OTLP_UNMAPPED_SCHEMA, UTC_TS
from agentwatch.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from agentwatch.ingest.otlp.mapping import MappingConfig
    from agentwatch.ingest.otlp.metrics import OtlpMetrics

FORMATS: Final = ("otlp_proto", "otlp_json")
UNMAPPED_TABLE: Final = "otlp_unmapped"
Lander = Callable[[RawBatch, PartitionState, LandingSettings, Any], LandedBatch]


def add_process_options(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "--otlp-topic",
        default=settings.value("otlp", "collector_topic"),
        help="also land this topic of OpenTelemetry Collector spans (Kafka exporter; "
        "default: none)",
    )
    parser.add_argument(
        "--otlp-format",
        choices=FORMATS,
        default=settings.value("otlp", "collector_format"),
        help="the Kafka exporter's encoding of --otlp-topic (default %(default)s)",
    )
    parser.add_argument(
        "--otlp-unmapped-topic",
        default=settings.value("otlp", "unmapped_topic"),
        help="the receivers' unmapped-span samples, landed as otlp_unmapped "
        "(default TOPIC.otlp-unmapped)",
    )


@dataclass
class OtlpTopics:
    """Which of the processor's topics carry OTLP, and how each is landed."""

    collector_topic: str | None
    unmapped_topic: str
    encoding: str = "otlp_proto"
    mapping: MappingConfig | None = None
    metrics: OtlpMetrics | None = None

    @property
    def topics(self) -> list[str]:
        return [t for t in (self.collector_topic, self.unmapped_topic) if t]

    def register(self, registry: CollectorRegistry) -> None:
        from agentwatch.ingest.otlp.metrics import OtlpMetrics

        self.metrics = OtlpMetrics(registry)

    def lands(self, topic: str) -> bool:
        return topic in (self.collector_topic, self.unmapped_topic)

    def land(
        self,
        batch: RawBatch,
        state: PartitionState,
        settings: LandingSettings,
        price: Any,
        land_batch: Lander,
    ) -> LandedBatch:
        if batch.topic == self.unmapped_topic:
            return _empty(state, _sample_rows(batch))
        events, unmapped, bad = self._expand(batch)
        landed = land_batch(events, state, settings, price)
        dead = pl.concat([landed.dead_letters, _dead_letters(batch, bad)], how="vertical")
        extra = {**landed.extra_tables, UNMAPPED_TABLE: unmapped}
        return dataclasses.replace(landed, dead_letters=dead, extra_tables=extra)

    def _expand(self, batch: RawBatch) -> tuple[RawBatch, pl.DataFrame, list[tuple[int, str]]]:
        """Each record's events in its place, its unmapped samples, and unreadable records."""
        from agentwatch.ingest.otlp.mapping import MappingConfig, map_spans
        from agentwatch.ingest.otlp.spans import RequestError, flatten, parse_json, parse_protobuf

        parse = parse_protobuf if self.encoding == "otlp_proto" else parse_json
        config = self.mapping or MappingConfig()
        offsets: list[int] = []
        stamps: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        samples: list[dict[str, Any]] = []
        bad: list[tuple[int, str]] = []
        for i, value in enumerate(batch.values):
            try:
                mapped = map_spans(flatten(parse(value or b"")), config)
            except RequestError as exc:
                bad.append((i, str(exc)))
                continue
            if self.metrics is not None:
                self.metrics.record(mapped)
            for key, event in mapped.encoded():
                offsets.append(batch.offsets[i])
                stamps.append(batch.timestamps_ms[i])
                keys.append(key)
                values.append(event)
            for sample in mapped.unmapped:
                samples.append({**sample, **_coordinates(batch, i)})
        events = RawBatch(batch.topic, batch.partition, offsets, stamps, keys, values)
        return events, _unmapped_frame(samples), bad


def _coordinates(batch: RawBatch, i: int) -> dict[str, Any]:
    return {
        "_topic": batch.topic,
        "_partition": batch.partition,
        "_offset": batch.offsets[i],
        "_kafka_ts": batch.timestamps_ms[i],
    }


def _unmapped_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    columns = {name: [r.get(name) for r in rows] for name in OTLP_UNMAPPED_SCHEMA}
    return pl.DataFrame(
        {
            **columns,
            "ts": pl.Series(columns["ts"], dtype=pl.String).str.to_datetime(
                time_zone="UTC", strict=False
            ),
            "_kafka_ts": pl.Series(columns["_kafka_ts"], dtype=pl.Int64).cast(
                pl.Datetime("ms", "UTC")
            ),
        }
    ).cast(pl.Schema({**OTLP_UNMAPPED_SCHEMA, "ts": UTC_TS}))


def _sample_rows(batch: RawBatch) -> pl.DataFrame:
    rows = []
    for i, value in enumerate(batch.values):
        try:
            sample = msgspec.json.decode(value or b"{}")
        except msgspec.DecodeError:
            continue  # not written by a receiver: nothing to sample
        if isinstance(sample, dict):
            rows.append({**sample, **_coordinates(batch, i)})
    return _unmapped_frame(rows)


def _empty(state: PartitionState, unmapped: pl.DataFrame) -> LandedBatch:
    from agentwatch.processors.store.tables import EVENTS_SCHEMA

    events = pl.DataFrame(schema=EVENTS_SCHEMA)
    return LandedBatch(
        events=events,
        dead_letters=pl.DataFrame(schema=DEAD_LETTERS_SCHEMA),
        sessions_ended=state.sessions.update(events),
        duplicates=0,
        extra_tables={UNMAPPED_TABLE: unmapped},
    )


def _dead_letters(batch: RawBatch, bad: list[tuple[int, str]]) -> pl.DataFrame:
    if not bad:
        return pl.DataFrame(schema=DEAD_LETTERS_SCHEMA)
    values = [batch.values[i] or b"" for i, _ in bad]
    return pl.DataFrame(
        {
            "reason_code": ["not_otlp"] * len(bad),
            "reason": [f"not_otlp: {why}" for _, why in bad],
            "_topic": [batch.topic] * len(bad),
            "_partition": [batch.partition] * len(bad),
            "_offset": [batch.offsets[i] for i, _ in bad],
            "_kafka_ts": pl.Series([batch.timestamps_ms[i] for i, _ in bad], dtype=pl.Int64)
            .cast(pl.Datetime("ms", "UTC"))
            .cast(UTC_TS),
            "key": [batch.keys[i] for i, _ in bad],
            "raw": values,
            "size_bytes": [len(v) for v in values],
        },
        schema=DEAD_LETTERS_SCHEMA,
    )
