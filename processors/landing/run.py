"""The ``process`` command: flags and settings for a :class:`Processor`, exit codes for faults.

Exit codes: 0 when stopped or idle, 1 when Kafka cannot be used (no broker answers at
--bootstrap, credentials refused), 4 when the data directory cannot be written.
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys
import time
from pathlib import Path

from agentwatch.commands.options import (
    DEFAULT_METRICS_HOST,
    add_bootstrap_option,
    add_db_option,
)
from agentwatch.ingest.contract.events import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPIC
from agentwatch.processors.landing.config import ProcessorConfig
from agentwatch.processors.landing.faults import DEFAULT_CONNECT_TIMEOUT_S, ProcessorFault
from agentwatch.processors.landing.processor import Processor
from agentwatch.settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    p = sub.add_parser(
        "process",
        help="consume trace events from Kafka and land them in DuckDB-queryable storage",
        description=(
            "Consume the events topic as a member of a consumer group (run more instances "
            "to scale out by partitions), validate each event against the contract, land "
            "valid events as Parquet segments behind a DuckDB catalog (--db), and send "
            "invalid ones to the dead-letter topic and table with a reason. A crash or "
            "restart loses and duplicates nothing."
        ),
    )
    add_bootstrap_option(p, settings)
    p.add_argument(
        "--topic",
        default=settings.get("kafka", "topic", DEFAULT_TOPIC),
        help="events topic (default %(default)s)",
    )
    p.add_argument(
        "--group",
        default=settings.get("process", "group", "agentwatch"),
        help="consumer group id (default %(default)s)",
    )
    add_db_option(p, settings, "DuckDB catalog analysts open; segments live beside it")
    p.add_argument(
        "--dlq-topic",
        default=settings.get("process", "dlq_topic", None),
        help="dead-letter topic (default: TOPIC.dlq)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        default=settings.get("process", "idle_timeout", None),
        help="exit 0 after S seconds with no new record (for batch runs and tests)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=settings.get("process", "max_batch", 20_000),
        help="records per partition that force a segment (default %(default)s)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=settings.get("process", "flush_interval", 2.0),
        help="seconds a partition's records may wait before they are landed (default %(default)s)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=settings.get("process", "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
        help="larger messages are dead letters (default %(default)s)",
    )
    p.add_argument(
        "--dedup-horizon",
        type=float,
        metavar="S",
        default=settings.get("process", "dedup_horizon", 3600.0),
        help="an event_id re-sent within S seconds (Kafka time) is stored once "
        "(default %(default)s)",
    )
    p.add_argument(
        "--session-timeout",
        type=float,
        metavar="S",
        default=settings.get("process", "session_timeout", 10.0),
        help="consumer-group session timeout: how soon the partitions of a crashed "
        "instance move to another (default %(default)s)",
    )
    p.add_argument(
        "--allowed-lateness",
        type=float,
        metavar="S",
        default=settings.get("process", "allowed_lateness", 300.0),
        help="events up to S seconds behind the partition's newest event time still update "
        "their one-minute window; later ones are stored and counted as late (default %(default)s)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        default=settings.get("process", "metrics_port", None),
        help="serve Prometheus /metrics on this port (default: off)",
    )
    p.add_argument(
        "--metrics-host",
        default=settings.get("process", "metrics_host", DEFAULT_METRICS_HOST),
        help="address /metrics listens on; 0.0.0.0 for every interface (default %(default)s)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        metavar="S",
        default=settings.get("process", "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S),
        help="give up (exit 1) if no Kafka broker answers within S seconds of starting; "
        "once one has, outages are waited out (default %(default)s)",
    )
    p.add_argument(
        "--max-label-values",
        type=int,
        default=settings.get("process", "max_label_values", 200),
        help="distinct values kept per label before folding into 'other' (default %(default)s)",
    )
    p.add_argument(
        "--pricing",
        type=Path,
        default=_optional_path(settings.get("pricing", "file", "")),
        help="pricing table (default: the one shipped with agentwatch)",
    )
    p.set_defaults(handler=_run)


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def _run(args: argparse.Namespace) -> int:
    processor = Processor(
        ProcessorConfig(
            bootstrap=args.bootstrap,
            db=args.db,
            topic=args.topic,
            group=args.group,
            dlq_topic=args.dlq_topic,
            idle_timeout_s=args.idle_timeout,
            max_batch=args.max_batch,
            flush_interval_s=args.flush_interval,
            max_message_bytes=args.max_message_bytes,
            dedup_horizon_s=args.dedup_horizon,
            session_timeout_s=args.session_timeout,
            allowed_lateness_s=args.allowed_lateness,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            max_label_values=args.max_label_values,
            pricing_file=args.pricing,
            connect_timeout_s=args.connect_timeout,
        )
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    signal.signal(signal.SIGINT, lambda *_: processor.stop())
    try:
        stats = processor.run()
    except ProcessorFault as exc:
        logging.shutdown()  # the kafka-python threads' last lines go before ours
        print(f"agentwatch: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    elapsed = time.monotonic() - stats.started
    log.info(
        "processor stopped",
        extra={
            "records": stats.records,
            "events": stats.events,
            "dead_letters": stats.dead_letters,
            "duplicates": stats.duplicates,
            "segments": stats.segments,
            "elapsed_s": round(elapsed, 2),
            "records_per_s": round(stats.records_per_s),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    )
    return 0
