"""OTLP receiver throughput: spans/s over OTLP/HTTP protobuf into Kafka, and into the store.

A real broker, one ``agentwatch otlp`` process, and clients posting pre-encoded export
requests (agent runs of an agent, an inference and a tool span, 128 runs a request: about
the 512 spans a BatchSpanProcessor sends at a time) over keep-alive connections.
``--warmup`` requests go first, uncounted, so that the measured ones meet a broker and a
receiver past their start (JIT, imports, topic metadata).

Two measured passes of ``--requests`` each. The first has the receiver and the broker
alone: spans/s into Kafka (first request to last 200; each 200 means acks=all from
Kafka). Then ``agentwatch process`` starts and lands the backlog, and the second pass
posts while it lands them (``while_landing``): into Kafka again, and into the store (first
request until every event has landed). On a 2-core machine the processor is the
receiver's largest neighbour, so the two passes tell the receiver's rate from the
machine's.

The last line printed is one JSON object: ``{"spans_per_s_into_kafka",
"spans_per_s_into_store", "receiver_peak_rss_mb", ...}``, with ``spans_per_receiver_cpu_s``
(spans over the receiver's CPU time while they were posted: on a shared machine a steadier
measure of the receiver's own cost than wall time), ``cpu_s_while_posting`` (what the
receiver shared the machine with: broker, processor and its workers, clients) and
``load_average_1m`` as the last request is answered.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

from agentwatch.broker.launcher import start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.attach import StoreMissing
from agentwatch.processors.store.attach import connect as connect_lake

# Spans a second one receiver process must take into Kafka on a 2-core machine.
TARGET_SPANS_PER_S = 20_000
TOPIC = "bench-otlp-events"
AGENT = sys.executable, "-m", "agentwatch.cli", "--log-format", "json"


def agent_runs(runs: int, offset: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(runs):
        agent: dict[str, str] = {
                 "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai",
                 "gen_ai.agent.name": f"agent-{i % 16}",
                 "gen_ai.conversation.id": f"conv-{offset + i}"}  # fmt: skip
        with tracer.start_as_current_span("invoke_agent", attributes=agent):
            chat: dict[str, str | int] = {
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 900,
                    "gen_ai.usage.output_tokens": 120,
                    "gen_ai.usage.cache_read.input_tokens": 512}  # fmt: skip
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes=chat):
                pass
            tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
            with tracer.start_as_current_span("execute_tool search", attributes=tool):
                pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def post_all(port: int, bodies: list[bytes], clients: int) -> float:
    """Send every body (round robin over clients); seconds until the last 200."""
    errors: list[str] = []

    def client(mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/x-protobuf"}
        for body in mine:
            while True:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    break
                if response.status != 503:
                    errors.append(f"HTTP {response.status}")
                    return
                time.sleep(1)

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"the receiver refused requests: {errors[:3]}")
    return time.perf_counter() - start


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit("the receiver exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the receiver did not start") from None
            time.sleep(0.1)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its living descendants so far (a
    measure the machine's load skews less than wall time: it is what one receiver
    process spent on the spans; the processor's landing workers are its children)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, grown = {pid}, True
    while grown:
        found = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def landed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = connect_lake(db)
        try:
            row = con.execute("SELECT count(*) FROM events").fetchone()
        finally:
            con.close()
    except (duckdb.Error, StoreMissing):
        return 0  # the processor is still creating the lake
    return int(row[0]) if row else 0


def wait_until_landed(db: Path, events: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := landed(db)) < events:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {found} of {events} events landed")
        time.sleep(0.2)


def measured(
    port: int, bodies: list[bytes], clients: int, pids: dict[str, int], spans: int
) -> dict[str, Any]:
    """Post ``bodies``; spans/s into Kafka, and the CPU each process took meanwhile."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    clients_before = time.process_time()
    seconds = post_all(port, bodies, clients)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["clients"] = time.process_time() - clients_before
    return {
        "spans_per_s_into_kafka": round(spans / seconds),
        "receiver_cpu_s": round(cpu["receiver"], 2),
        "spans_per_receiver_cpu_s": round(spans / cpu["receiver"]),
        "cpu_s_while_posting": {k: round(v, 2) for k, v in cpu.items()},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="per measured pass")
    parser.add_argument("--runs-per-request", type=int, default=128)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--warmup", type=int, default=40,
        help="requests posted before the measured ones (not counted)",
    )  # fmt: skip
    args = parser.parse_args()
    console = Console(stderr=True)
    runs, n = args.runs_per_request, args.requests
    total = args.warmup + 2 * n
    console.print(f"encoding {total} requests of {runs} agent runs ...")
    bodies = [encode_spans(agent_runs(runs, r * runs)).SerializeToString() for r in range(total)]
    warmup, alone, landing = bodies[: args.warmup], bodies[args.warmup :][:n], bodies[-n:]
    spans = n * runs * 3
    events_expected = total * runs * 4
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-otlp-") as tmp:
        broker_dir, db = Path(tmp) / "kafka", Path(tmp) / "data" / "agentwatch.sqlite"
        info = start_broker(broker_dir, free_port(), heap="1g")
        port = free_port()
        receiver = subprocess.Popen(
            [*AGENT, "otlp", "--bootstrap", info.bootstrap, "--topic", TOPIC,
             "--http-port", str(port), "--grpc-port", "0"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        processor = None
        try:
            wait_for_port(port, receiver)
            pids = {"receiver": receiver.pid, "broker": info.pid}
            console.print(f"warming up with {args.warmup * runs * 3:,} spans ...")
            post_all(port, warmup, args.clients)
            console.print(f"posting {spans:,} spans, the processor not running ...")
            into_kafka = measured(port, alone, args.clients, pids, spans)
            processor = subprocess.Popen(
                [*AGENT, "process", "--bootstrap", info.bootstrap, "--topic", TOPIC,
                 "--db", str(db), "--flush-interval", "1"],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            pids["processor"] = processor.pid
            console.print("landing what is in Kafka ...")
            wait_until_landed(db, (args.warmup + n) * runs * 4)
            console.print(f"posting {spans:,} spans while the processor lands them ...")
            start = time.perf_counter()
            while_landing = measured(port, landing, args.clients, pids, spans)
            wait_until_landed(db, events_expected)
            while_landing["spans_per_s_into_store"] = round(spans / (time.perf_counter() - start))
            rss = peak_rss_mb(receiver.pid)
        finally:
            for proc in (receiver, processor):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=60)
            stop_broker(broker_dir)
    result: dict[str, Any] = {
        "spans": spans,
        "spans_per_request": runs * 3,
        **into_kafka,
        "spans_per_s_into_store": while_landing["spans_per_s_into_store"],
        "receiver_peak_rss_mb": rss,
        "while_landing": while_landing,
        "events_landed": events_expected,
        "warmup_requests": args.warmup,
        "clients": args.clients,
    }
    result["target_spans_per_s"] = TARGET_SPANS_PER_S
    console.print(result)
    print(json.dumps(result))
    return 0 if result["spans_per_s_into_kafka"] >= TARGET_SPANS_PER_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
