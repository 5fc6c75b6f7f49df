"""End-to-end throughput: a pre-filled topic into DuckDB, against Kafka's own consumer.

Both consumers read the same topic in the same run on the same broker, so the ratio
is meaningful on a shared, noisy machine where absolute figures are not. The last line
printed is one JSON object:
``{"events_per_s", "kafka_perf_events_per_s", "ratio", "peak_rss_mb", ...}``.
Rates count from the first record fetched to the last one landed (Kafka's
``fetch.nMsg.sec`` likewise leaves out the group join).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentwatch.broker.launcher import start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.broker.runtime import kafka_java_command
from agentwatch.ingest.sim.simulate import run_simulation
from agentwatch.processors.store.lake import connect as connect_lake

TOPIC = "bench-events"


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


def agentwatch_process(bootstrap: str, db: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "process",
        "--bootstrap", bootstrap, "--topic", TOPIC, "--group", f"bench-{time.time_ns()}",
        "--db", str(db), "--idle-timeout", "3",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"processor failed:\n{done.stderr[-3000:]}")
    stopped = [json.loads(x) for x in done.stderr.splitlines() if '"processor stopped"' in x]
    return dict(stopped[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
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
            db = Path(tmp) / "data" / "agentwatch.sqlite"
            stats = agentwatch_process(info.bootstrap, db)
            con = connect_lake(db)
            landed = con.execute("SELECT count(*) FROM events").fetchone()
            con.close()
        finally:
            stop_broker(broker_dir)
    ours = float(stats["records_per_s"])
    result = {
        "events_per_s": round(ours),
        "kafka_perf_events_per_s": round(kafka_rate),
        "ratio": round(ours / kafka_rate, 4),
        "peak_rss_mb": stats["peak_rss_mb"],
        "events": filled["events"],
        "landed": landed[0] if landed else 0,
        "fill_events_per_s": filled["fill_events_per_s"],
    }
    table = Table(title="throughput (events/s)")
    for key in result:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in result.values()))
    console.print(table)
    print(json.dumps(result))
    return 0 if result["landed"] == result["events"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
