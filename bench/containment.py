"""Containment latency: from an agent's first bad event to its breaker open.

The production path end to end on one machine (broker, ``agentwatch process``,
``agentwatch alerts run`` with the shipped rules, an SDK agent following its breaker).
The violation-burst rule must hold for its ``for`` before it fires, so the figure that
measures agentwatch is the time beyond ``for``; the target is at most 5 s. The burst
starts once the pipeline is up (the processor lands every partition of the topic, see
:func:`wait_for_pipeline`) and the agent has sent the rule's ``min_samples`` passing
checks (:func:`run_normally`), so the figure is the running system's reaction, not its
start-up nor the agent's pace. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.response.incident import VIOLATION_RULE, MisbehavingAgent, wait_for_chain
from agentwatch.alerts.rules import load_rules
from agentwatch.broker.launcher import start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.clock import utc_now
from agentwatch.commands.demo import control_keys_file
from agentwatch.ingest.contract.control import Keyring
from agentwatch.ingest.contract.wire import DEFAULT_TOPIC
from agentwatch.ingest.sdk.tracer import Tracer
from agentwatch.processors.store.attach import StoreMissing
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.topics import TopicSpec, ensure_topics
from bench.hanging_receiver import HangingReceiver, hanging_receiver

AGENT = "it-support-3"
PROBE = "it-support-1"  # another catalogued agent, whose sessions show the pipeline is up
TARGET_BEYOND_FOR_S = 5.0
FRESH = dt.timedelta(seconds=3)


def wait_for_pipeline(bootstrap: str, db: Path, partitions: int, timeout_s: float) -> float:
    """Send one session per round of a probe agent (an approved tool call, nothing an
    alert counts) until the lake holds its events of the last few seconds from every
    partition of the topic (the consumer group has settled and keeps up); return how
    long that took. Sessions are keyed by id, so they cross all partitions."""
    entry = load_catalog(EXAMPLE_CATALOG).get(PROBE)
    assert entry is not None and entry.approved_tools
    tracer = Tracer.to_kafka(
        bootstrap, DEFAULT_TOPIC, agent_id=PROBE, agent_version=entry.pinned.agent_version
    )
    started = time.monotonic()
    try:
        for n in range(int(timeout_s / 0.25)):
            session = tracer.session(f"{PROBE}-probe-{n}", intent="probe")
            with session as s, s.tool_call(min(entry.approved_tools), "function"):
                pass
            tracer.flush()
            if _landed_partitions(db, utc_now() - FRESH) >= partitions:
                return time.monotonic() - started
            time.sleep(0.25)
    finally:
        tracer.close(timeout=10)
    raise TimeoutError(f"the processor did not land every partition in {timeout_s:.0f} s")


def _landed_partitions(db: Path, since: dt.datetime) -> int:
    try:
        con = connect_lake(db)
    except (StoreMissing, duckdb.Error):
        return 0
    try:
        row = con.execute(
            "SELECT count(DISTINCT _partition) FROM events WHERE agent_id = ? AND ts >= ?",
            [PROBE, since],
        ).fetchone()
    except duckdb.Error:
        return 0
    finally:
        con.close()
    return int(row[0]) if row else 0


def nth_check(db: Path, agent_id: str, since: dt.datetime, n: int) -> dt.datetime | None:
    """When ``agent_id`` sent its ``n``-th policy check since ``since``: until then the
    rule has too few samples to go pending, however fast the pipeline is."""
    con = connect_lake(db)
    try:
        row = con.execute(
            "SELECT ts FROM events WHERE agent_id = ? AND ts >= ? AND kind = 'policy_check' "
            "ORDER BY ts LIMIT 1 OFFSET ?",
            [agent_id, since, n - 1],
        ).fetchone()
    finally:
        con.close()
    return row[0] if row and isinstance(row[0], dt.datetime) else None


def run_normally(db: Path, since: dt.datetime, checks: int, timeout_s: float) -> float:
    """Wait until the agent's first ``checks`` passing checks have landed, so that the
    rule has its samples when the burst begins and the figure is agentwatch's reaction,
    not the agent's pace; return how long the agent ran normally."""
    started = time.monotonic()
    while nth_check(db, AGENT, since, checks) is None:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{AGENT} did not send {checks} checks in {timeout_s:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--hanging-receiver",
        action="store_true",
        help="route every notification to a webhook that answers only after 60 s",
    )
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    rule = next(r for r in load_rules() if r.name == VIOLATION_RULE)
    for_s = rule.for_.total_seconds()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentwatch-containment-"))
        hanging: HangingReceiver | None = None
        notify: list[str] = []
        if args.hanging_receiver:
            hanging = stack.enter_context(hanging_receiver())
            notify = ["--notify-config", str(hanging.notify_config(Path(tmp) / "notify.yaml"))]
        broker_dir = Path(tmp) / "kafka"
        db = Path(tmp) / "data" / "agentwatch.sqlite"
        keys = control_keys_file(db.parent)
        info = start_broker(broker_dir, free_port())
        procs: list[subprocess.Popen[bytes]] = []
        agent = None
        ready_s = normal_s = 0.0
        try:
            ensure_topics(info.bootstrap, [TopicSpec(DEFAULT_TOPIC)])
            cli = [sys.executable, "-m", "agentwatch.cli", "--log-format", "json"]
            procs.append(subprocess.Popen(
                [*cli, "process", "--bootstrap", info.bootstrap, "--db", str(db),
                 "--flush-interval", "0.25"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            procs.append(subprocess.Popen(
                [*cli, "alerts", "run", "--db", str(db), "--interval", "1",
                 "--bootstrap", info.bootstrap, "--catalog", str(EXAMPLE_CATALOG),
                 "--control-keys-file", str(keys), *notify],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            ready_s = wait_for_pipeline(
                info.bootstrap, db, TopicSpec(DEFAULT_TOPIC).partitions, 120
            )
            entry = load_catalog(EXAMPLE_CATALOG).get(AGENT)
            assert entry is not None
            keyring = Keyring.from_file(keys)
            agent = MisbehavingAgent(info.bootstrap, entry, keyring=keyring).start()
            console.print(f"{AGENT} runs normally, then fails 60% of its policy checks ...")
            normal_s = run_normally(db, agent.run.started_at, rule.min_samples, 60)
            agent.start_burst()
            steps = {s.step: s.at for s in wait_for_chain(db, AGENT, agent.run.started_at, 180)}
        finally:
            if agent is not None:
                agent.close()
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)
            stop_broker(broker_dir)
    first, opened = steps.get("first policy violation"), steps.get("breaker opened")
    halted = steps.get("agent halted and confirmed")
    if first is None or opened is None:
        print(json.dumps({"error": "the breaker did not open", "steps": str(steps)}))
        return 1
    to_open = (opened - first).total_seconds()
    result = {
        "first_bad_event_to_breaker_open_s": round(to_open, 2),
        "rule_for_s": for_s,
        "beyond_for_s": round(to_open - for_s, 2),
        "target_beyond_for_s": TARGET_BEYOND_FOR_S,
        "pipeline_up_after_s": round(ready_s, 2),
        "breaker_open_to_agent_halted_s": round((halted - opened).total_seconds(), 2)
        if halted
        else None,
        # Where the time goes: each step of the chain, in seconds after the first bad event.
        "steps_s": {s: round((at - first).total_seconds(), 2) for s, at in steps.items() if at},
        # Before its burst the agent sent the rule's min_samples passing checks.
        "normal_run_s": round(normal_s, 2),
        # With --hanging-receiver: the notifications that met a receiver hanging for 60 s.
        "hanging_receiver_requests": hanging.requests if hanging is not None else None,
    }
    table = Table("measure", "value", title="containment latency")
    for key, value in result.items():
        if key != "steps_s":
            table.add_row(key, str(value))
    console.print(table)
    print(json.dumps(result))
    return 0 if to_open - for_s <= TARGET_BEYOND_FOR_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
