"""``agentwatch process``: land trace events from Kafka in DuckDB-queryable storage.

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
    add_bootstrap_option,
    add_db_option,
    add_metrics_options,
    at_least_one,
    duration_help,
    given,
    positive,
    positive_seconds,
    seconds,
    topic_name,
    worker_count,
)
from agentwatch.commands.store import add_maintenance_options, retention_from_args
from agentwatch.ingest.otlp.collector import add_process_options
from agentwatch.setting_types import MAX_WORKERS
from agentwatch.settings import Settings

log = logging.getLogger("agentwatch.processors.landing.processor")


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Consume the events topic as members of a consumer group (--workers processes, "
        "one per core by default; run more instances to scale out further by partitions), "
        "validate each event against the contract, land "
        "valid events in the lake (--db) exactly once, and send "
        "invalid ones to the dead-letter topic and table with a reason. A crash or "
        "restart loses and duplicates nothing."
    )
    p = parser
    add_bootstrap_option(p, settings)
    p.add_argument(
        "--maintain-interval",
        type=seconds,
        default=settings.value("storage", "maintain_interval"),
        metavar="DURATION",
        help=duration_help(
            "time between lake maintenance passes (retention, merging, expiry), run by "
            "one member at a time; 0 turns them off here",
            settings.value("storage", "maintain_interval"),
        ),
    )
    add_maintenance_options(p, settings)
    p.add_argument(
        "--topic",
        type=topic_name,
        default=settings.value("kafka", "topic"),
        help="events topic (default %(default)s)",
    )
    p.add_argument(
        "--group",
        type=given,
        default=settings.value("process", "group"),
        help="consumer group id (default %(default)s)",
    )
    add_db_option(
        p,
        settings,
        "the lake's metadata database (a SQLite file, or postgres:DSN); its data files live "
        "beside it",
    )
    p.add_argument(
        "--dlq-topic",
        default=settings.value("process", "dlq_topic"),
        help="dead-letter topic (default: TOPIC.dlq)",
    )
    p.add_argument(
        "--idle-timeout",
        type=seconds,
        metavar="DURATION",
        default=settings.value("process", "idle_timeout"),
        help=duration_help(
            "exit 0 after this long with no new record (for batch runs and tests)",
            settings.value("process", "idle_timeout"),
            unset="never",
        ),
    )
    p.add_argument(
        "--max-batch",
        type=at_least_one,
        default=settings.value("process", "max_batch"),
        help="the most records, all partitions together, that land at once; twice this is "
        "held at most, one set landing and one pending (default %(default)s)",
    )
    p.add_argument(
        "--flush-interval",
        type=seconds,
        metavar="DURATION",
        default=settings.value("process", "flush_interval"),
        help=duration_help(
            "how long a record may wait before its batch lands: the data's freshness",
            settings.value("process", "flush_interval"),
        ),
    )
    p.add_argument(
        "--max-message-bytes",
        type=at_least_one,
        default=settings.value("process", "max_message_bytes"),
        help="larger messages are dead letters (default %(default)s)",
    )
    p.add_argument(
        "--dedup-horizon",
        type=seconds,
        metavar="DURATION",
        default=settings.value("process", "dedup_horizon"),
        help=duration_help(
            "an event_id re-sent within this long (Kafka time) is stored once",
            settings.value("process", "dedup_horizon"),
        ),
    )
    p.add_argument(
        "--workers",
        type=worker_count,
        metavar="N",
        default=settings.value("process", "workers"),
        help="run N members of the consumer group as processes, restarted if they crash, "
        "with one /metrics for all; 1 runs in this process; 0 one per core; at most "
        f"{MAX_WORKERS}, as each is a process with its own memory and members beyond the "
        "topic's partitions sit idle (default: one per core)",
    )
    p.add_argument(
        "--dedup-memory-mb",
        type=positive,
        metavar="MB",
        default=settings.value("process", "dedup_memory_mb"),
        help="memory the dedup indexes of this process share, 8 bytes an event id; past it "
        "a partition forgets its oldest ids before the horizon (default %(default)s)",
    )
    p.add_argument(
        "--duckdb-memory-mb",
        type=positive,
        metavar="MB",
        default=settings.value("process", "duckdb_memory_mb"),
        help="DuckDB's memory limit in each worker: what it caches stays within it instead "
        "of growing with every commit; a set that needs more doubles it, with a warning "
        "(default %(default)s)",
    )
    p.add_argument(
        "--session-timeout",
        type=positive_seconds,
        metavar="DURATION",
        default=settings.value("process", "session_timeout"),
        help=duration_help(
            "consumer-group session timeout: how soon the partitions of a crashed "
            "instance move to another",
            settings.value("process", "session_timeout"),
        ),
    )
    p.add_argument(
        "--allowed-lateness",
        type=seconds,
        metavar="DURATION",
        default=settings.value("process", "allowed_lateness"),
        help=duration_help(
            "events up to this far behind the partition's newest event time still update "
            "their one-minute window; later ones are stored and counted as late",
            settings.value("process", "allowed_lateness"),
        ),
    )
    add_metrics_options(p, settings, "process", "the processor's metrics")
    p.add_argument(
        "--connect-timeout",
        type=positive_seconds,
        metavar="DURATION",
        default=settings.value("process", "connect_timeout"),
        help=duration_help(
            "give up (exit 1) if no Kafka broker answers this long after starting; "
            "once one has, outages are waited out",
            settings.value("process", "connect_timeout"),
        ),
    )
    p.add_argument(
        "--max-label-values",
        type=at_least_one,
        default=settings.value("process", "max_label_values"),
        help="distinct values kept per label before folding into 'other' (default %(default)s)",
    )
    p.add_argument(
        "--pricing",
        type=Path,
        default=_optional_path(settings.value("pricing", "file")),
        help="pricing table (default: the one shipped with agentwatch)",
    )
    p.add_argument(
        "--redaction",
        type=Path,
        default=_optional_path(settings.value("redaction", "file")),
        help="redaction rules applied before storage ([redaction] file; default: the shipped "
        "redaction.yaml, which redacts attributes, reasons and labels)",
    )
    add_process_options(p, settings)
    p.set_defaults(handler=_run)


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def _run(args: argparse.Namespace) -> int:
    from agentwatch.processors.landing.config import ProcessorConfig
    from agentwatch.processors.landing.faults import ProcessorFault
    from agentwatch.processors.landing.processor import Processor
    from agentwatch.processors.landing.workers import Supervisor, default_workers

    config = ProcessorConfig(
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
        dedup_memory_mb=args.dedup_memory_mb,
        duckdb_memory_mb=args.duckdb_memory_mb,
        session_timeout_s=args.session_timeout,
        allowed_lateness_s=args.allowed_lateness,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        max_label_values=args.max_label_values,
        pricing_file=args.pricing,
        otlp_topic=args.otlp_topic,
        otlp_format=args.otlp_format,
        otlp_unmapped_topic=args.otlp_unmapped_topic,
        redaction_file=args.redaction,
        connect_timeout_s=args.connect_timeout,
        maintain_interval_s=args.maintain_interval,
        retention_days=retention_from_args(args),
        legal_hold=tuple(args.legal_hold),
        snapshot_grace_s=args.snapshot_grace,
    )
    workers = args.workers or default_workers()  # --workers is 0 to MAX_WORKERS
    if workers > 1:
        supervisor = Supervisor(config, workers, args.log_level, args.log_format)
        signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
        signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
        try:
            return supervisor.run()
        except ProcessorFault as exc:
            logging.shutdown()
            print(f"agentwatch: {exc}", file=sys.stderr, flush=True)
            return exc.exit_code
    processor = Processor(config)
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
            "batches": stats.batches,
            "commits": stats.commits,
            "elapsed_s": round(elapsed, 2),
            "records_per_s": round(stats.records_per_s),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    )
    return 0
