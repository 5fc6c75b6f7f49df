"""The pipeline health dashboard: the processors themselves, for the engineers who run them.

From ``agentwatch process --metrics-port``: consumer lag, throughput, dead letters,
processing delay, label values folded by the cardinality guard, and OTLP spans in.
"""

from __future__ import annotations

from typing import Final

from agentwatch.dashboards.panels import (
    COUNT,
    PER_MINUTE,
    PER_SECOND,
    SECONDS,
    TOPIC,
    TOPIC_SCOPE,
    DashboardSpec,
    Query,
    Row,
    higher_is_worse,
    increase,
    rate,
    selector,
    stat,
    timeseries,
)
from agentwatch.processors.metrics import series

PIPELINE_RECORDS: Final = series.PIPELINE_RECORDS.name
LAG: Final = series.CONSUMER_LAG.name
DELAY: Final = series.PROCESSING_DELAY.name
LAST_COMMIT: Final = series.LAST_COMMIT.name
DEAD_LETTERS: Final = series.DEAD_LETTERS.name
FOLDED: Final = series.LABELS_FOLDED.name
OTLP_SPANS: Final = series.OTLP_SPANS.name
PARTITION: Final = ("partition",)
LAG_LEVELS: Final = higher_is_worse(1_000, 10_000)
DELAY_LEVELS: Final = higher_is_worse(60, 300)


def _topic(metric: str) -> str:
    return selector(metric, scope=TOPIC_SCOPE)


def _pipeline_rate(counter: series.Series, per: int = 1) -> str:
    return rate(counter.name, per=per, scope=TOPIC_SCOPE)


_LAG_TEXT: Final = (
    "Records in Kafka not yet consumed, over all partitions. Growing lag means processors "
    "cannot keep up: add partitions and processor instances. Yellow from 1,000, red from "
    "10,000."
)
_DELAY_TEXT: Final = (
    "Time from the newest event of a batch to its landing, for the slowest partition. "
    "Yellow from 1 minute, red from 5 (events later than that count as late)."
)
_COMMIT_TEXT: Final = (
    "Time since a partition's last landed batch. High while events are flowing means a "
    "stalled processor; an idle topic also grows it. Yellow from 1 minute, red from 5."
)

PIPELINE: Final = DashboardSpec(
    uid="agentwatch-pipeline",
    title="agentwatch / Pipeline health",
    description="The processors themselves: consumer lag, throughput, dead letters and "
    "processing delay, for the platform engineers who run them.",
    variables=(TOPIC,),
    rows=(
        Row("Now", (
            stat("Consumer lag", _LAG_TEXT, f"sum({_topic(LAG)})", COUNT, LAG_LEVELS,
                 width=4),
            stat("Processing delay", _DELAY_TEXT, f"max({_topic(DELAY)})", SECONDS,
                 DELAY_LEVELS, decimals=1, width=4),
            stat("Throughput", "Kafka records landed per second (valid or not).",
                 _pipeline_rate(series.PIPELINE_RECORDS), PER_SECOND, width=4),
            stat("Dead letters", "Invalid messages over the time range, sent to the dead-"
                 "letter topic and table with a reason. Yellow from 1, red from 100.",
                 increase(DEAD_LETTERS, scope=""), COUNT, higher_is_worse(1, 100), width=4),
            stat("Since last commit", _COMMIT_TEXT, f"time() - max({_topic(LAST_COMMIT)})",
                 SECONDS, DELAY_LEVELS, decimals=0, width=4),
            stat("Label values folded", "Metric label values folded into 'other' by the "
                 "cardinality guard over the time range: some agents, models or tools then "
                 "show as 'other'. Raise --max-label-values if that matters.",
                 increase(FOLDED, scope=""), COUNT, higher_is_worse(1, 1000), width=4),
        )),
        Row("Flow", (
            timeseries("Throughput", "Per second: records consumed, valid events landed, "
                       "re-sent duplicates dropped, and events that arrived after their "
                       "window closed.", PER_SECOND,
                       Query(_pipeline_rate(series.PIPELINE_RECORDS), "records"),
                       Query(_pipeline_rate(series.PIPELINE_EVENTS), "events"),
                       Query(_pipeline_rate(series.PIPELINE_DUPLICATES), "duplicates"),
                       Query(_pipeline_rate(series.PIPELINE_LATE), "late events")),
            timeseries("Consumer lag by partition", _LAG_TEXT, COUNT,
                       Query(f"sum by (partition) ({_topic(LAG)})", "partition {{partition}}"),
                       thresholds=LAG_LEVELS, stack=True),
            timeseries("Processing delay by partition", _DELAY_TEXT, SECONDS,
                       Query(f"max by (partition) ({_topic(DELAY)})",
                             "partition {{partition}}"), thresholds=DELAY_LEVELS, width=8),
            timeseries("Since last commit by partition", _COMMIT_TEXT, SECONDS,
                       Query(f"time() - max by (partition) ({_topic(LAST_COMMIT)})",
                             "partition {{partition}}"), thresholds=DELAY_LEVELS, width=8),
            timeseries("Dead letters by reason", "Invalid messages per minute, by reason "
                       "code (see the trace-event contract).", PER_MINUTE,
                       Query(rate(DEAD_LETTERS, by=("reason_code",), per=60, scope=""),
                             "{{reason_code}}"), stack=True, width=8),
            timeseries("Label values folded", "Label values folded into 'other' per minute, "
                       "by label.", PER_MINUTE,
                       Query(rate(FOLDED, by=("label",), per=60, scope=""), "{{label}}"),
                       width=24, height=6),
        )),
        Row("OpenTelemetry in", (
            timeseries("OTLP spans by outcome", "OpenTelemetry spans per minute, from the "
                       "OTLP receivers and the Collector topic, by outcome and reason: mapped "
                       "to events, skipped (nothing to record), unmapped (sampled in the "
                       "otlp_unmapped table) or rejected (reported to the exporter).",
                       PER_MINUTE,
                       Query(rate(OTLP_SPANS, by=("outcome", "reason"), per=60, scope=""),
                             "{{outcome}} {{reason}}"), stack=True, width=24, height=6),
        )),
    ),
)  # fmt: skip
