"""End-to-end throughput and freshness of ``agentwatch process``, against Kafka's own consumer.

Throughput: both consumers read the same pre-filled topic in the same run on the same
broker, so the ratio is meaningful on a shared, noisy machine where absolute figures are
not. Rates count from the first record fetched to the last one landed (Kafka's
``fetch.nMsg.sec`` likewise leaves out the group join).

Freshness: a live processor with default settings lands a second topic that Kafka's
ProducerPerformance fills with simulated events at half the rate just measured, while
probe events, one every 0.2 s, are timed from their send to the moment a query through
the read path of ``agentwatch sql`` first sees them.

The last line printed is one JSON object: ``{"events_per_s", "kafka_perf_events_per_s",
"ratio", "peak_rss_mb", "freshness_p50_s", "freshness_p99_s", "workers", ...}``.
"""

from __future__ import annotations

import argparse
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
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.simulate import run_simulation
from agentwatch.processors.landing.workers import default_workers
from agentwatch.processors.query.sql import query
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.location import CATALOG_FILE
from agentwatch.settings import DEFAULTS
from agentwatch.topics import TopicSpec, ensure_topics

TOPIC = "bench-events"
FRESH_TOPIC = "bench-fresh"
PROBE_EVERY_S = 0.2
POLL_EVERY_S = 0.05


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


def process_cmd(bootstrap: str, topic: str, db: Path, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "process",
        "--bootstrap", bootstrap, "--topic", topic, "--group", f"bench-{time.time_ns()}",
        "--db", str(db), "--workers", str(workers), *extra,
    ]  # fmt: skip


def agentwatch_process(bootstrap: str, db: Path, workers: int) -> dict[str, Any]:
    cmd = process_cmd(bootstrap, TOPIC, db, workers, "--idle-timeout", "3")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"processor failed:\n{done.stderr[-3000:]}")
    stopped = [json.loads(x) for x in done.stderr.splitlines() if '"processor stopped"' in x]
    return dict(stopped[-1])


def payload_file(path: Path, events: int) -> Path:
    """Simulated events, one JSON object a line, for ProducerPerformance to send."""
    fleet = Fleet(make_agents(16, seed=7), seed=7, start=time.time() - 3600.0)
    encode = msgspec.json.Encoder().encode
    lines: list[bytes] = []
    horizon = fleet.start
    while len(lines) < events:
        horizon += 1.0
        lines.extend(encode(e) for e in fleet.events_until(horizon))
    path.write_bytes(b"\n".join(lines[:events]) + b"\n")
    return path


def probe(i: int) -> bytes:
    return msgspec.json.encode(
        {
            "schema_version": 1, "kind": "tool_call", "event_id": f"probe-{i}",
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "agent_id": "bench-probe", "session_id": f"probe-session-{i}",
            "tool_name": "probe", "latency_ms": 1.0,
        }
    )  # fmt: skip


def freshness(
    bootstrap: str, tmp: Path, rate: float, seconds: float, workers: int, flush: float | None
) -> dict[str, Any]:
    """Probe events timed from send to visible in the store, under load at ``rate``."""

    ensure_topics(bootstrap, [TopicSpec(FRESH_TOPIC, 4)])
    payloads = payload_file(tmp / "payloads.ndjson", 50_000)
    db = tmp / "fresh" / CATALOG_FILE
    log = tmp / "fresh.log"
    with log.open("wb") as err:
        processor = subprocess.Popen(
            process_cmd(
                bootstrap,
                FRESH_TOPIC,
                db,
                workers,
                *(("--flush-interval", str(flush)) if flush is not None else ()),
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count('"partition assigned"') < 4:
            if time.monotonic() > deadline or processor.poll() is not None:
                raise SystemExit(f"the live processor did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        load = subprocess.Popen(
            kafka_java_command(
                "org.apache.kafka.tools.ProducerPerformance",
                ["--topic", FRESH_TOPIC, "--num-records", str(int(rate * seconds)),
                 "--throughput", str(int(rate)), "--payload-file", str(payloads),
                 "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
                 "linger.ms=5"],
                heap="512m",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sent, seen = probe_until(bootstrap, db, load, seconds)
    finally:
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
        "probes_unseen": len(sent) - len(seen),
        "freshness_load_events_per_s": round(rate),
        "flush_interval_s": flush if flush is not None else DEFAULTS.process.flush_interval,
    }


def probe_until(
    bootstrap: str, db: Path, load: subprocess.Popen[bytes], seconds: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Send probes while the load runs; poll the store for them until all are seen."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        while not (done.is_set() and len(seen) == len(sent)):
            try:
                _, rows = query(db, "SELECT event_id FROM events WHERE agent_id = 'bench-probe'")
            except Exception:  # the store is not there yet
                rows = []
            now = time.monotonic()
            for (event_id,) in rows:
                seen.setdefault(int(event_id.removeprefix("probe-")), now)
            time.sleep(POLL_EVERY_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        sent[i] = time.monotonic()
        producer.send(FRESH_TOPIC, key=f"probe-session-{i}".encode(), value=probe(i))
        i += 1
        time.sleep(PROBE_EVERY_S)
    producer.flush()
    producer.close()
    done.set()
    poller.join(timeout=60)
    load.terminate()
    load.wait()
    return sent, dict(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--fresh-seconds", type=float, default=60.0)
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
            db = Path(tmp) / "data" / CATALOG_FILE
            stats = agentwatch_process(info.bootstrap, db, args.workers)
            con = connect_lake(db)
            landed = con.execute("SELECT count(*) FROM events").fetchone()
            con.close()
            rate = float(stats["records_per_s"]) / 2
            console.print(f"freshness at {rate:,.0f} events/s (half the rate landed) ...")
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
        **{k: v for k, v in fresh.items() if k not in ("freshness_p50_s", "freshness_p99_s")},
    }
    table = Table(title="throughput and freshness")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    print(json.dumps(result))
    return 0 if result["landed"] == result["events"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
