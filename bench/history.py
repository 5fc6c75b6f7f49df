"""History benchmark: does the store stay fast as weeks of history land in small commits?

A simulated fleet's events, their timestamps spread over ``--days`` of event time, trickle
into a real broker at ``--rate`` events/s while ``agentwatch process`` lands them (every
``--flush-interval``, so in many small commits, maintaining the lake every
``--maintain-interval`` s as it does in production). The history lands in three stages;
after each (the processor stopped), at that history size:

- every ```sql example of docs/sql.md, ``--query-runs`` times through the sql command's
  own path (the sandboxed read-only attach and the query; the interpreter's start left
  out): p50 and p95;
- one evaluation of the shipped alert rules (the evaluator's second, as a running
  ``alerts run`` has its connections; the first is reported too);
- data files in the lake's current snapshot (``ducklake_list_files``) and Parquet files
  and bytes on disk, per event;
- restart to first commit: the processor started again, from its start to its first
  commit (the last one after the third stage).

Commit latency is each processor commit, timed around the store's ``commit_batches``
(:mod:`bench.timed_process`); growth is the median of the last 10% of commits over the
median of the first 10%. ``--scale`` lands for longer (more commits, events and files).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from agentwatch.alerts.evaluation.evaluator import Evaluator
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.rules import load_rules
from agentwatch.broker.launcher import start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.simulate import PRODUCER_CONFIG
from agentwatch.kafka import client_options
from agentwatch.processors.query.sql import query
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import DATA_FOLDER, METADATA_FILE
from agentwatch.processors.store.maintain import data_files
from bench.timed_process import COMMIT_TIMES_ENV

TOPIC = "history-events"
DOCS_SQL = Path(__file__).resolve().parent.parent / "docs" / "sql.md"
TARGETS = {"query_p95_ms": 1000.0, "eval_ms": 1000.0, "restart_s": 10.0, "commit_growth": 1.3}
STAGES = 3


class Trickle:
    """A fleet's events produced at a steady real rate, their event time running faster."""

    def __init__(self, bootstrap: str, days: float, rate: float, seconds: float) -> None:
        from kafka import KafkaProducer

        self.speed = days * 86_400 / seconds  # simulated seconds per real second
        start = time.time() - days * 86_400  # the history ends about now
        self.fleet = Fleet(
            make_agents(16, 7), seed=7, start=start, events_per_second=rate / self.speed
        )
        self.sim_now = start
        self.sent = 0
        self.producer = KafkaProducer(**client_options(bootstrap), **PRODUCER_CONFIG)
        self.encode = msgspec.json.Encoder().encode

    def run_for(self, seconds: float) -> None:
        """Produce ``seconds`` of real time worth of events, then wait for every ack."""
        began = last = time.monotonic()
        while last - began < seconds:
            time.sleep(0.05)
            now = time.monotonic()
            self.sim_now += (now - last) * self.speed
            last = now
            for event in self.fleet.events_until(self.sim_now):
                self.producer.send(TOPIC, key=event.session_id.encode(), value=self.encode(event))
                self.sent += 1
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


class Processor:
    """``agentwatch process`` (commits timed) on the benchmark's topic and lake."""

    def __init__(self, bootstrap: str, db: Path, commit_times: Path, args: argparse.Namespace):
        self.command = [
            sys.executable, "-m", "bench.timed_process", "--log-format", "json", "process",
            "--bootstrap", bootstrap, "--topic", TOPIC, "--group", "history", "--db", str(db),
            "--workers", "1",  # commits are timed in this process; spawned workers are not
            "--flush-interval", str(args.flush_interval),
            "--maintain-interval", str(args.maintain_interval),
            "--snapshot-grace", str(args.snapshot_grace),
        ]  # fmt: skip
        self.env = {**os.environ, COMMIT_TIMES_ENV: str(commit_times)}
        self.log = commit_times.with_name("process.log")
        self.commit_times = commit_times
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=err, env=self.env
            )

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(timeout=120) != 0:
            raise SystemExit(f"the processor failed:\n{self.log.read_text()[-3000:]}")

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"the processor exited:\n{self.log.read_text()[-3000:]}")

    def commits(self) -> list[dict[str, Any]]:
        if not self.commit_times.exists():
            return []
        return [json.loads(line) for line in self.commit_times.read_text().splitlines()]

    def restart_s(self) -> float | None:
        """Seconds from the latest start to the first commit after it."""
        after = [c["at"] for c in self.commits() if c["stored"] and c["at"] > self.started]
        return min(after) - self.started if after else None

    def maintenance_passes(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [json.loads(x) for x in lines if '"lake maintained"' in x]


def landed_offsets(db: Path) -> int:
    """Records of the topic whose batches are committed (events, duplicates, dead letters)."""
    if not db.exists():
        return 0
    con = connect_lake(db)
    try:
        row = con.execute(
            "SELECT coalesce(sum(last_offset + 1), 0) FROM _offsets WHERE topic = ?", [TOPIC]
        ).fetchone()
    except Exception:  # the lake is being created
        return 0
    finally:
        con.close()
    return int(row[0]) if row else 0


def wait_landed(db: Path, processor: Processor, records: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while landed_offsets(db) < records:
        processor.alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"{records - landed_offsets(db)} records not landed in {timeout} s")
        time.sleep(0.5)


def sql_examples() -> dict[str, str]:
    """docs/sql.md's ```sql blocks, by the bold question before each."""
    text = DOCS_SQL.read_text(encoding="utf-8")
    examples = {}
    for block in re.finditer(r"```sql\n(.*?)```", text, flags=re.DOTALL):
        question = re.findall(r"\*\*(.+?)\*\*", text[: block.start()])[-1]
        examples[question] = block.group(1).strip()
    return examples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(db: Path, runs: int) -> dict[str, Any]:
    """Queries, one evaluation, files and bytes at the lake's current size."""
    per_query: dict[str, list[float]] = {}
    for question, sql in sql_examples().items():
        times = per_query.setdefault(question, [])
        for _ in range(runs):
            began = time.perf_counter()
            query(db, sql)
            times.append((time.perf_counter() - began) * 1000)
    pooled = [t for times in per_query.values() for t in times]
    evaluator = Evaluator(db, load_rules(), load_catalog(EXAMPLE_CATALOG))
    evals = []
    for _ in range(2):
        began = time.perf_counter()
        evaluator.evaluate()
        evals.append((time.perf_counter() - began) * 1000)
    evaluator.store.close()
    store = LakeStore(db)
    files = data_files(store)
    row = store.con.execute("SELECT count(*) FROM events").fetchone()
    events = int(row[0]) if row else 0
    store.close()
    parquet = list((db.parent / DATA_FOLDER).rglob("*.parquet"))
    size = sum(p.stat().st_size for p in parquet)
    metadata = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    slowest = max(per_query, key=lambda q: percentile(per_query[q], 0.95))
    return {
        "events": events,
        "query_p50_ms": round(statistics.median(pooled), 1),
        "query_p95_ms": round(percentile(pooled, 0.95), 1),
        "slowest_query": slowest,
        "slowest_query_p95_ms": round(percentile(per_query[slowest], 0.95), 1),
        "eval_first_ms": round(evals[0], 1),
        "eval_ms": round(evals[1], 1),
        "files": files,
        "files_on_disk": len(parquet),
        "bytes_per_event": round(size / events, 1) if events else None,
        "metadata_bytes": metadata,
        "per_query_p50_p95_ms": {
            q: [round(statistics.median(t), 1), round(percentile(t, 0.95), 1)]
            for q, t in per_query.items()
        },
    }


def commit_growth(commits: list[dict[str, Any]]) -> dict[str, Any]:
    stored = [c for c in commits if c["stored"]]
    seconds = [c["s"] for c in stored]
    tenth = max(1, len(seconds) // 10)
    first, last = seconds[:tenth], seconds[-tenth:]
    return {
        "commits": len(seconds),
        "commit_first10_p50_ms": round(statistics.median(first) * 1000, 1),
        "commit_last10_p50_ms": round(statistics.median(last) * 1000, 1),
        "commit_first10_p95_ms": round(percentile(first, 0.95) * 1000, 1),
        "commit_last10_p95_ms": round(percentile(last, 0.95) * 1000, 1),
        "commit_growth": round(statistics.median(last) / statistics.median(first), 2),
        **{
            f"commit_{part}_{tenth_name}_p50_ms": round(
                statistics.median(c.get(f"{part}_s", 0.0) for c in tenth_commits) * 1000, 1
            )
            for part in ("lock", "cpu")
            for tenth_name, tenth_commits in (
                ("first10", stored[:tenth]),
                ("last10", stored[-tenth:]),
            )
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="land for this many times longer (default 1: about 15 minutes)",
    )
    parser.add_argument(
        "--stage-seconds", type=float, default=180.0, help="seconds of trickle per stage at scale 1"
    )
    parser.add_argument("--rate", type=float, default=1500.0, help="events per real second")
    parser.add_argument("--days", type=float, default=21.0, help="event time the history spans")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--maintain-interval", type=float, default=30.0)
    parser.add_argument("--snapshot-grace", type=float, default=60.0)
    parser.add_argument("--query-runs", type=int, default=5)
    parser.add_argument(
        "--keep", type=Path, help="work in this new folder and keep it (the lake, for a look)"
    )
    args = parser.parse_args()  # fmt: skip
    console = Console(stderr=True)
    stage_s = args.stage_seconds * args.scale
    began = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True)  # a new folder: an old lake would skew every figure
    kept = contextlib.nullcontext(str(args.keep)) if args.keep is not None else None
    with kept or tempfile.TemporaryDirectory(prefix="agentwatch-history-") as tmp:
        root = Path(tmp)
        db = root / "data" / METADATA_FILE
        info = start_broker(root / "kafka", free_port(), heap="512m")
        try:
            from agentwatch.topics import TopicSpec, ensure_topics

            ensure_topics(info.bootstrap, [TopicSpec(TOPIC, partitions=args.partitions)])
            trickle = Trickle(info.bootstrap, args.days, args.rate, stage_s * STAGES)
            processor = Processor(info.bootstrap, db, root / "commits.jsonl", args)
            sizes: list[dict[str, Any]] = []
            try:
                for stage in range(1, STAGES + 1):
                    if sizes:  # a backlog for the restart's first commit
                        trickle.run_for(2.0)
                    processor.start()
                    if sizes:  # the restart at the previous size
                        wait_for_commit(processor)
                        sizes[-1]["restart_s"] = round(processor.restart_s() or 0.0, 2)
                    console.print(f"stage {stage}: {stage_s:.0f} s of trickle at {args.rate:g}/s")
                    trickle.run_for(stage_s)
                    wait_landed(db, processor, trickle.sent, 600)
                    processor.stop()
                    console.print(f"stage {stage}: {trickle.sent:,} records landed; measuring")
                    sizes.append(measure(db, args.query_runs))
                trickle.run_for(2.0)
                processor.start()  # the restart at the largest size
                wait_for_commit(processor)
                sizes[-1]["restart_s"] = round(processor.restart_s() or 0.0, 2)
                wait_landed(db, processor, trickle.sent, 600)
                processor.stop()
            finally:
                trickle.close()
                if processor.proc is not None and processor.proc.poll() is None:
                    processor.proc.kill()
            commits = processor.commits()
            passes = processor.maintenance_passes()
        finally:
            stop_broker(root / "kafka")
    growth = commit_growth(commits)
    largest = sizes[-1]
    result: dict[str, Any] = {
        "query_p50_ms": largest["query_p50_ms"],
        "query_p95_ms": largest["query_p95_ms"],
        "eval_ms": largest["eval_ms"],
        "restart_s": largest["restart_s"],
        "commit_growth": growth["commit_growth"],
        "files": largest["files"],
        "files_on_disk": largest["files_on_disk"],
        "bytes_per_event": largest["bytes_per_event"],
        "events": largest["events"],
        **{k: v for k, v in growth.items() if k != "commit_growth"},
        "maintenance_passes": len(passes),
        "days": args.days,
        "minutes": round((time.monotonic() - began) / 60, 1),
        "load": [round(x, 1) for x in os.getloadavg()],
        "sizes": [{k: v for k, v in s.items() if k != "per_query_p50_p95_ms"} for s in sizes],
        "per_query_p50_p95_ms": largest["per_query_p50_p95_ms"],
        "targets": TARGETS,
    }
    show(console, sizes, growth)
    missed = [k for k, limit in TARGETS.items() if result[k] is None or result[k] > limit]
    result["missed"] = missed
    print(json.dumps(result))
    return 1 if missed else 0


def wait_for_commit(processor: Processor, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while processor.restart_s() is None:
        processor.alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"no commit within {timeout} s of the processor's start")
        time.sleep(0.05)


def show(console: Console, sizes: list[dict[str, Any]], growth: dict[str, Any]) -> None:
    table = Table(title="history: the store as it grows")
    keys = ["events", "query_p50_ms", "query_p95_ms", "eval_ms", "restart_s", "files",
            "files_on_disk", "bytes_per_event"]  # fmt: skip
    for key in keys:
        table.add_column(key, justify="right")
    for size in sizes:
        table.add_row(*(f"{size[k]:,}" if isinstance(size[k], int) else str(size[k]) for k in keys))
    console.print(table)
    console.print(growth)


if __name__ == "__main__":
    raise SystemExit(main())
