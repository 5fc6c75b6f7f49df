"""End-to-end throughput and freshness of ``agentwatch process``, against Kafka's own consumer.

Throughput: both consumers read the same pre-filled topic in the same run on the same
broker, so the ratio is meaningful on a shared, noisy machine where absolute figures are
not. Rates count from the first record fetched to the last one landed (Kafka's
``fetch.nMsg.sec`` likewise leaves out the group join). Then as many processes as
workers fetch the same topic doing nothing else, and again fetching and decoding only
(``bench.ceiling``): the ceiling that landing and storing share.

Freshness: a live processor with default settings lands a second topic that Kafka's
console producer fills with simulated events at half the rate just measured
(``--load-fraction``), while probe events, one every 0.2 s, are timed from their send
to the moment a query through the read path of ``agentwatch sql`` (its sandboxed
connection, kept open) first sees them.
Probing starts once the group has settled: the start-up rebalances are not landing. The
load is new events throughout, each keyed by its session id as the SDK sends it, paced
here (``Pacer``): a tick's lines are written to the producer's input every
``PACE_TICK_S``, and a tick missed is not made up, so the producer never sends in a
burst above the rate (Kafka's ProducerPerformance catches up after its JVM's slow first
seconds, and picks its payloads at random, so a third of what it sends would be
duplicates, which landing drops cheaply). The producer lingers 50 ms, as the SDK's
does. Probing starts ``LOAD_WARMUP_S`` after the load, once the producer's JVM has
warmed up, and once the group's lag is under ``CAUGHT_UP_S`` of the load (the steady
state; how long that took is reported); the load's rate reported is the one sent while
probing. The largest worker's RSS is sampled throughout, reported minute by minute
(``bench.rss``): whether memory stays flat over a long run.

The last line printed is one JSON object: ``{"events_per_s", "kafka_perf_events_per_s",
"ratio", "peak_rss_mb", "freshness_p50_s", "freshness_p99_s", "workers", "missed",
"fetch_only_ratio", "fetch_decode_ratio", ...}``;
it exits 1 when fewer events landed than were produced or a target is missed (``missed``
names them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from agentwatch.broker.launcher import start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.broker.runtime import kafka_java_command
from agentwatch.ingest.sim.simulate import run_simulation
from agentwatch.processors.landing.workers import default_workers
from agentwatch.processors.query.sandbox import connect as sandbox_connect
from agentwatch.processors.query.sandbox import execute
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.settings import DEFAULTS
from agentwatch.topics import TopicSpec, ensure_topics
from bench.ceiling import ceiling
from bench.load import Pacer, payload_file
from bench.rss import WorkerRss

# The targets on a 2-core machine: the ratio to Kafka's own consumer in the same run, peak
# RSS of one worker, and produced-to-queryable p99 at half the landed rate.
TARGETS = {"ratio": 0.35, "peak_rss_mb": 400.0, "freshness_p99_s": 2.0}
TOPIC = "bench-events"
FRESH_TOPIC = "bench-fresh"
PROBE_EVERY_S = 0.2
# A poll of the probe query costs about 25 ms of CPU: sleeping 50 ms between polls took
# a quarter of a core from a 2-core machine; 0.1 s adds at most that much to a delay.
POLL_EVERY_S = 0.1
FRESH_PARTITIONS = 4
# Distinct events written for the freshness load (about 440 bytes each, read from a file
# as they are sent); a longer or faster run sends them again with new event and session
# ids, so the load stays new events.
MAX_PAYLOADS = 2_000_000
# The load runs this long before the first probe: the producer's JVM compiles its hot
# code in its first seconds.
LOAD_WARMUP_S = 5.0
# Then probing waits until the group's lag is at most this much of the load (in seconds
# of it), or at most CATCH_UP_MAX_S: freshness is measured in the steady state.
CAUGHT_UP_S = 1.0
CATCH_UP_MAX_S = 60.0
# Seconds of distinct events written beyond warm-up and probing, for the catch-up wait.
CATCH_UP_SPARE_S = 5.0
SETTLE_S = 3.0
WARMUP_QUERY = (
    "SELECT count(*) FROM events WHERE agent_id = 'bench-warmup' AND event_id LIKE 'warmup-{}-%'"
)
# Only the files landed since a few seconds before the oldest probe not yet seen: the
# lake skips the others by their Kafka timestamps' range, so a poll costs the same at
# any size of the table (a scan of all of it grew to a third of a core in 30 s).
PROBE_QUERY = (
    "SELECT event_id FROM events WHERE agent_id = 'bench-probe' "
    "AND _kafka_ts >= TIMESTAMPTZ '{since}'"
)
PROBE_MARGIN_S = 5.0


def fill(bootstrap: str, events: int, partitions: int) -> dict[str, Any]:
    summary = run_simulation(
        bootstrap, TOPIC, agents=16, rate=None, duration=86_400.0, seed=42,
        progress=sys.stderr.isatty(), max_events=events, partitions=partitions,
    )  # fmt: skip
    return {"events": summary.events, "fill_events_per_s": round(summary.events_per_second)}


def kafka_consumer_perf(bootstrap: str, events: int) -> float:
    cmd = kafka_java_command(
        "org.apache.kafka.tools.ConsumerPerformance",
        ["--bootstrap-server", bootstrap, "--topic", TOPIC, "--messages", str(events),
         "--group", f"perf-{time.time_ns()}", "--timeout", "120000"],
        heap="1g",
    )  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    header = [h.strip() for h in lines[0].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(header, values, strict=True))
    return float(row["fetch.nMsg.sec"])


def process_cmd(
    bootstrap: str, topic: str, db: Path, workers: int, *extra: str, group: str = ""
) -> list[str]:
    return [
        sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "process",
        "--bootstrap", bootstrap, "--topic", topic, "--group", group or f"bench-{time.time_ns()}",
        "--db", str(db), "--workers", str(workers), *extra,
    ]  # fmt: skip


def agentwatch_process(bootstrap: str, db: Path, workers: int) -> dict[str, Any]:
    cmd = process_cmd(bootstrap, TOPIC, db, workers, "--idle-timeout", "3")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"processor failed:\n{done.stderr[-3000:]}")
    stopped = [json.loads(x) for x in done.stderr.splitlines() if '"processor stopped"' in x]
    return dict(stopped[-1])


def probe(event_id: str, agent: str = "bench-probe") -> bytes:
    return msgspec.json.encode(
        {
            "schema_version": 1, "kind": "tool_call", "event_id": event_id,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "agent_id": agent, "session_id": f"session-{event_id}",
            "tool_name": "probe", "latency_ms": 1.0,
        }
    )  # fmt: skip


def freshness(
    bootstrap: str, tmp: Path, rate: float, seconds: float, workers: int, flush: float | None
) -> dict[str, Any]:
    """Probe events timed from send to visible in the store, under load at ``rate``."""

    ensure_topics(bootstrap, [TopicSpec(FRESH_TOPIC, FRESH_PARTITIONS)])
    wanted = max(1, min(int(rate * (seconds + LOAD_WARMUP_S + CATCH_UP_SPARE_S)), MAX_PAYLOADS))
    payloads = tmp / "payloads.ndjson"
    distinct = payload_file(payloads, wanted, rate)
    db = tmp / "fresh" / METADATA_FILE
    log = tmp / "fresh.log"
    group = f"bench-fresh-{time.time_ns()}"
    port = free_port()
    with log.open("wb") as err:
        processor = subprocess.Popen(
            process_cmd(
                bootstrap,
                FRESH_TOPIC,
                db,
                workers,
                "--metrics-port",
                str(port),
                *(("--flush-interval", str(flush)) if flush is not None else ()),
                group=group,
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    memory = WorkerRss(processor.pid, workers, f"http://127.0.0.1:{port}/metrics")
    try:
        wait_settled(bootstrap, db, log, processor, workers)
        memory.start()
        load = subprocess.Popen(
            kafka_java_command(
                "org.apache.kafka.tools.ConsoleProducer",
                ["--bootstrap-server", bootstrap, "--topic", FRESH_TOPIC,
                 "--request-required-acks", "all", "--timeout", "50",
                 "--property", "parse.key=true",
                 "--producer-property", "batch.size=1048576"],
                heap="512m",
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert load.stdin is not None
        pacer = Pacer(load.stdin, payloads, rate)
        collector_off()
        pacer.start()
        try:
            time.sleep(LOAD_WARMUP_S)
            caught_up_s = wait_caught_up(bootstrap, group, rate)
            sent_before = pacer.sent
            started = time.monotonic()
            sent, seen = probe_until(bootstrap, db, seconds)
            load_rate = (pacer.sent - sent_before) / (time.monotonic() - started)
        finally:  # the producer's JVM goes with the run, however it ends
            gc.enable()
            pacer.stop()
            load.terminate()
            load.wait()
    finally:
        if memory.is_alive():
            memory.stop()
        processor.send_signal(signal.SIGTERM)
        processor.wait(timeout=120)
    delays = sorted(seen[i] - sent[i] for i in seen)
    if not delays:
        raise SystemExit("no probe event became visible")
    return {
        "freshness_p50_s": round(delays[len(delays) // 2], 3),
        "freshness_p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3),
        "freshness_max_s": round(delays[-1], 3),
        "probes": len(sent),
        # after the warm-up, how long the processor took to work off the load's start
        "freshness_caught_up_after_s": caught_up_s,
        "probes_unseen": len(sent) - len(seen),
        "freshness_load_events_per_s": round(load_rate),
        "freshness_distinct_events": distinct,
        "flush_interval_s": flush if flush is not None else DEFAULTS.process.flush_interval,
        # the largest worker's peak RSS, minute by minute from the load's start
        "live_rss_mb_by_minute": memory.by_minute(),
        # what the largest worker's memory holds, by minute, from the processor's /metrics
        "live_held_by_minute": memory.held_by_minute(),
        # DuckDB's limit doubled for a set that needed more (each stays doubled)
        "duckdb_limit_doublings": log.read_text().count("limit doubled"),
    }


def collector_off() -> None:
    """Collect this process's garbage now and keep the cyclic collector off until the
    probes are done, as ``timeit`` does: the objects left by writing the payload file
    made one full collection during probing hold the GIL for 1.3 s, which stalled the
    probes' sender and poller alike and counted as 1.3 s of staleness (measured). What
    the probing loop leaves for the collector in a minute or two is small."""
    gc.collect()
    gc.disable()


def wait_settled(
    bootstrap: str, db: Path, log: Path, processor: subprocess.Popen[bytes], workers: int
) -> None:
    """Return once every worker has joined and the group lands all partitions.

    Two workers join one after the other, so the group rebalances more than once at start
    and each assignment rebuilds partition state; timing probes meanwhile would measure
    the start, not the landing. Settled: every worker started, no partition assigned for
    ``SETTLE_S``, then one warm-up event sent to each partition is visible.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    deadline = time.monotonic() + 180
    assigned, quiet_since, attempt = -1, time.monotonic(), 0
    con = None
    try:
        while True:
            if time.monotonic() > deadline or processor.poll() is not None:
                raise SystemExit(f"the live processor did not settle:\n{log.read_text()[-3000:]}")
            text = log.read_text()
            now = time.monotonic()
            if text.count('"partition assigned"') != assigned:
                assigned, quiet_since = text.count('"partition assigned"'), now
            started = text.count('"processor started"') >= workers
            if started and assigned >= FRESH_PARTITIONS and now - quiet_since >= SETTLE_S:
                attempt += 1
                for p in range(FRESH_PARTITIONS):
                    event = probe(f"warmup-{attempt}-{p}", agent="bench-warmup")
                    producer.send(FRESH_TOPIC, value=event, partition=p)
                producer.flush()
                until = time.monotonic() + 10
                while time.monotonic() < until:
                    try:
                        con = con or sandbox_connect(db)
                        rows = execute(con, WARMUP_QUERY.format(attempt)).fetchall()
                    except Exception:  # the store is not there yet
                        rows = [(0,)]
                    if rows[0][0] == FRESH_PARTITIONS:
                        return
                    time.sleep(POLL_EVERY_S)
            time.sleep(0.2)
    finally:
        producer.close()
        if con is not None:
            con.close()


def wait_caught_up(bootstrap: str, group: str, rate: float) -> float | None:
    """Seconds until the group's lag on the load's topic is at most ``CAUGHT_UP_S`` of the
    load (None: not within ``CATCH_UP_MAX_S``). The processor commits its offsets to Kafka
    after each set it stores, so its lag there is what is not yet queryable."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    partitions = [TopicPartition(FRESH_TOPIC, p) for p in range(FRESH_PARTITIONS)]
    # Reads the group's offsets without joining it (it subscribes to nothing).
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    start = time.monotonic()
    try:
        while time.monotonic() - start < CATCH_UP_MAX_S:
            end = reader.end_offsets(partitions)
            lag = sum(end[tp] - (reader.committed(tp) or 0) for tp in partitions)
            if lag <= rate * CAUGHT_UP_S:
                return round(time.monotonic() - start, 1)
            time.sleep(0.2)
        return None
    finally:
        reader.close(autocommit=False)


def probe_until(
    bootstrap: str, db: Path, seconds: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Send probes for ``seconds``; poll the store for them until all are seen."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    sent: dict[int, float] = {}
    sent_at: dict[int, float] = {}  # wall clock, as Kafka stamps the probe
    seen: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        # One connection for the run, as an analyst's session: each query reads the newest
        # committed snapshot, and a new connection per poll would cost the machine a
        # DuckDB instance, its extensions and the lake's attachment every 50 ms.
        con = None
        while not (done.is_set() and len(seen) == len(sent)):
            try:
                con = con or sandbox_connect(db)
                unseen = [sent_at[i] for i in list(sent_at) if i not in seen]
                oldest = min(unseen, default=time.time()) - PROBE_MARGIN_S
                since = dt.datetime.fromtimestamp(oldest, dt.UTC).isoformat()
                rows = execute(con, PROBE_QUERY.format(since=since)).fetchall()
            except Exception:  # the store is not there yet
                rows = []
            now = time.monotonic()
            for (event_id,) in rows:
                seen.setdefault(int(event_id.removeprefix("probe-")), now)
            time.sleep(POLL_EVERY_S)
        if con is not None:
            con.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        sent[i], sent_at[i] = time.monotonic(), time.time()
        producer.send(FRESH_TOPIC, key=f"probe-{i}".encode(), value=probe(f"probe-{i}"))
        i += 1
        time.sleep(PROBE_EVERY_S)
    producer.flush()
    producer.close()
    done.set()
    poller.join(timeout=60)
    return sent, dict(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--fresh-seconds", type=float, default=30.0)
    parser.add_argument(
        "--load-fraction",
        type=float,
        default=0.5,
        help="the live load as a fraction of the rate landed (default 0.5: freshness at half "
        "the sustainable rate; 1 with a long --fresh-seconds: memory at the most the "
        "producer sends)",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=None,
        help="the live processor's --flush-interval (default: the processor's default)",
    )
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-") as tmp:
        broker_dir = Path(tmp) / "kafka"
        info = start_broker(broker_dir, free_port(), heap="1g")
        try:
            console.print(f"filling {TOPIC} with {args.events:,} simulated events ...")
            filled = fill(info.bootstrap, args.events, args.partitions)
            console.print("Kafka's ConsumerPerformance ...")
            kafka_rate = kafka_consumer_perf(info.bootstrap, filled["events"])
            console.print("agentwatch process ...")
            db = Path(tmp) / "data" / METADATA_FILE
            stats = agentwatch_process(info.bootstrap, db, args.workers)
            con = connect_lake(db)
            landed = con.execute("SELECT count(*) FROM events").fetchone()
            con.close()
            console.print("the same members fetching only, then fetching and decoding only ...")
            floors = {
                what: ceiling(info.bootstrap, TOPIC, args.partitions, args.workers, what)
                for what in ("fetch", "decode")
            }
            rate = float(stats["records_per_s"]) * args.load_fraction
            share = f"{args.load_fraction:g} of the rate landed"
            console.print(f"freshness at {rate:,.0f} events/s ({share}) ...")
            fresh = freshness(
                info.bootstrap,
                Path(tmp),
                rate,
                args.fresh_seconds,
                args.workers,
                args.flush_interval,
            )
        finally:
            stop_broker(broker_dir)
    ours = float(stats["records_per_s"])
    result = {
        "events_per_s": round(ours),
        "kafka_perf_events_per_s": round(kafka_rate),
        "ratio": round(ours / kafka_rate, 4),
        "peak_rss_mb": stats["peak_rss_mb"],
        "freshness_p50_s": fresh["freshness_p50_s"],
        "freshness_p99_s": fresh["freshness_p99_s"],
        "workers": args.workers,
        "events": filled["events"],
        "landed": landed[0] if landed else 0,
        "fill_events_per_s": filled["fill_events_per_s"],
        # The ceiling: what fetching alone, and fetching and decoding alone, reach.
        "fetch_only_ratio": round(floors["fetch"].events_per_s / kafka_rate, 4),
        "fetch_decode_ratio": round(floors["decode"].events_per_s / kafka_rate, 4),
        **{
            f"{name}_{key}": getattr(floors[what], key)
            for what, name in (("fetch", "fetch_only"), ("decode", "fetch_decode"))
            for key in ("events_per_s", "cpu_us_per_event")
        },
        **{k: v for k, v in fresh.items() if k not in ("freshness_p50_s", "freshness_p99_s")},
    }
    table = Table(title="throughput and freshness")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        for name, each in value.items() if isinstance(value, dict) else [("", value)]:
            label = f"{key} {name}" if name else key
            table.add_row(label, f"{each:,}" if isinstance(each, int) else str(each))
    console.print(table)
    result["missed"] = [
        name
        for name, target in TARGETS.items()
        if (result[name] < target if name == "ratio" else result[name] > target)
    ]
    print(json.dumps(result))
    return 0 if result["landed"] == result["events"] and not result["missed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
