"""The ``demo`` command: the whole pipeline on one machine, then a summary.

It starts the local broker, runs ``agentwatch process`` and ``agentwatch alerts run`` as
processes of their own (as in a deployment), drives a simulated fleet into Kafka for a
while, adds a few malformed messages from a "buggy agent" so the dead-letter path shows,
runs one OpenTelemetry-instrumented agent (pydantic-ai) through ``agentwatch otlp``,
and meanwhile lets one SDK agent start failing its policy checks: the alert fires, on-call
is notified, the runbook opens the agent's circuit breaker and the agent halts and
confirms. It waits until the processor has landed everything, prints a summary from
DuckDB with the incident's chain of steps, shows one agent lifecycle (a release registered
before the fleet starts, watched, the agent's access reviewed, the agent retired and its
evidence archive verified: demo_lifecycle.py), replays a drift scenario's days of event time
in seconds and names the drift found, and stops the broker. The data stays under
the data dir (runs accumulate; ``make clean`` starts over).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import polars as pl
from kafka import KafkaProducer
from rich.console import Console

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.response.incident import ChainStep, MisbehavingAgent, wait_for_chain
from agentwatch.broker.launcher import broker_status, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.clock import utc_now
from agentwatch.commands import demo_lifecycle
from agentwatch.commands.options import (
    duration_help,
    fleet_size,
    port,
    positive,
    positive_seconds,
)
from agentwatch.ingest.contract.control import Keyring
from agentwatch.ingest.contract.wire import DEFAULT_TOPIC
from agentwatch.ingest.sim.scenario import Scenario
from agentwatch.ingest.sim.scenario_file import load_scenario
from agentwatch.ingest.sim.simulate import SimulationSummary, run_simulation
from agentwatch.kafka import client_options
from agentwatch.processors.query import report
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.setting_types import MAX_AGENTS
from agentwatch.settings import Settings
from agentwatch.terminal import Table, literal, text

DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "latency-shift.yaml"
# An SDK agent of the shipped catalog that the simulated fleet does not run.
INCIDENT_AGENT = "it-support-3"

BUGGY_MESSAGES: tuple[bytes, ...] = (
    b'{"schema_version": 1, "event_id": "bug-1", "kind": "llm_call", "agent_id": "legacy-bot"',
    b'{"schema_version": 1, "event_id": "bug-2", "ts": "2026-11-20T09:00:00Z", '
    b'"agent_id": "legacy-bot", "session_id": "b1", "kind": "llm_call", "model": "m", '
    b'"input_tokens": 10, "output_tokens": -5}',
    b'{"schema_version": 1, "event_id": "bug-3", "ts": "2026-11-20T09:00:00Z", '
    b'"agent_id": "legacy-bot", "session_id": "b1", "kind": "telepathy"}',
    b'{"schema_version": 1, "event_id": "bug-4", "ts": "last tuesday", '
    b'"agent_id": "legacy-bot", "session_id": "b1", "kind": "session_start"}',
    b"\xff\xfenot even text",
)


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Start the local Kafka broker, a processor and a simulated fleet of AI agents for "
        "--seconds, then print what landed in DuckDB (events, sessions, escalations, "
        "violations, dead letters, throughput) and queries to try. Data stays in "
        "--data-dir; the broker is stopped at the end."
    )
    p = parser
    p.add_argument(
        "--seconds", type=positive_seconds, default=settings.value("demo", "seconds"),
        metavar="DURATION",
        help=duration_help("how long the fleet runs", settings.value("demo", "seconds")),
    )  # fmt: skip
    p.add_argument(
        "--data-dir", type=Path, default=Path(settings.value("demo", "data_dir")),
        help="where the broker and the lake live (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--agents", type=fleet_size, default=settings.value("demo", "agents"),
        help=f"agents in the fleet, at most {MAX_AGENTS} (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--rate", type=positive, default=settings.value("demo", "rate"),
        help="events per second from the fleet (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=settings.value("demo", "seed"))
    p.add_argument(
        "--port", type=port, default=settings.value("demo", "port"),
        help="broker port; 0, the default, for any free one",
    )  # fmt: skip
    p.add_argument(
        "--scenario", type=Path, default=DEMO_SCENARIO if DEMO_SCENARIO.exists() else None,
        help="a drift scenario replayed at full speed after the live part, then drift-tested "
        "(default %(default)s)",
    )  # fmt: skip
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    console = Console(width=max(140, Console().width))
    data_dir: Path = args.data_dir.resolve()
    broker_dir = data_dir / "kafka"
    db = data_dir / METADATA_FILE
    # A scenario file is read before anything starts: a bad one is one line, not a broker
    # left behind.
    scenario = load_scenario(args.scenario) if args.scenario is not None else None
    children: list[subprocess.Popen[bytes]] = []
    restore = _interrupt_on_sigterm()  # so that the cleanup below runs on SIGTERM too
    existing = broker_status(broker_dir)
    info = existing or start_broker(broker_dir, args.port or free_port())
    console.print(f"[bold]Kafka[/] broker at {info.bootstrap} (data in {literal(broker_dir)})")
    try:
        registered = demo_lifecycle.register_release(console, db, args.agents, args.seed)
        metrics_port = free_port()
        processor, processor_log = _start_processor(info.bootstrap, db, data_dir, metrics_port)
        children.append(processor)
        console.print(f"[bold]Processor[/] pid {processor.pid}, logs in {literal(processor_log)}")
        console.print(f"[bold]Prometheus metrics[/] at http://127.0.0.1:{metrics_port}/metrics "
                      "while the demo runs")  # fmt: skip
        console.print(f"[bold]Fleet[/]: {args.agents} agents, ~{args.rate:g} events/s for "
                      f"{args.seconds:g} s")  # fmt: skip
        keys = control_keys_file(data_dir)
        console.print(f"[bold]Control keys[/] (sign breaker records) in {literal(keys)}")
        alerts = _start_alerts(info.bootstrap, db, data_dir, keys)
        children.append(alerts)
        agent = _misbehaving_agent(info.bootstrap, keys)
        console.print(f"[bold]Alerts[/]: evaluated every 2 s; [bold]{literal(agent.agent_id)}[/] "
                      "(an SDK "
                      "agent following its circuit breaker) starts failing its policy checks "
                      f"after {args.seconds / 4:g} s")  # fmt: skip
        burst = threading.Timer(args.seconds / 4, agent.start_burst)
        burst.start()
        sim = run_simulation(
            info.bootstrap, DEFAULT_TOPIC, agents=args.agents, rate=args.rate,
            duration=args.seconds, seed=args.seed, progress=sys.stderr.isatty(),
        )  # fmt: skip
        _send_buggy_messages(info.bootstrap)
        _otel_agent(console, info.bootstrap, data_dir)
        console.print("Waiting for the incident to be contained ...")
        steps = wait_for_chain(db, agent.agent_id, agent.run.started_at, timeout_s=150)
        agent.close()
        alerts.terminate()
        alerts.wait(timeout=60)
        console.print("Waiting for the processor to land everything ...")
        code = processor.wait(timeout=max(120.0, args.seconds))
        if code != 0:
            console.print(f"[red]processor exited with {code}; see {literal(processor_log)}[/]")
            return 1
        _summary(console, db, sim, _last_stats(processor_log))
        _incident(console, agent.agent_id, steps, data_dir)
        demo_lifecycle.finish(console, db, info.bootstrap, registered, keys)
        if scenario is not None:
            _drift_scenario(console, info.bootstrap, scenario, data_dir / "drift")
    finally:
        for child in children:  # the processor and the evaluator, if still running
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=60)
        if existing is None:
            stop_broker(broker_dir)
            console.print("Broker stopped.")
        restore()
    return 0


def _interrupt_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM interrupt the demo as Ctrl-C does; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, before)

    return restore


def _start_processor(
    bootstrap: str, db: Path, data_dir: Path, metrics_port: int
) -> tuple[subprocess.Popen[bytes], Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "processor.log"
    cmd = [
        sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "process",
        "--bootstrap", bootstrap, "--topic", DEFAULT_TOPIC, "--db", str(db),
        "--idle-timeout", "4", "--flush-interval", "1",
        "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
    ]  # fmt: skip
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    return proc, log_path


def control_keys_file(data_dir: Path) -> Path:
    """The demo's control key: made once under the data dir, readable by its owner only."""
    path = data_dir / "control.keys"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"demo-{secrets.token_hex(4)}:{secrets.token_hex(32)}\n")
    return path


def _start_alerts(bootstrap: str, db: Path, data_dir: Path, keys: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "alerts", "run",
        "--db", str(db), "--interval", "2", "--bootstrap", bootstrap,
        "--catalog", str(EXAMPLE_CATALOG), "--control-keys-file", str(keys),
    ]  # fmt: skip
    with (data_dir / "alerts.log").open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out)


def _misbehaving_agent(bootstrap: str, keys: Path) -> MisbehavingAgent:
    entry = load_catalog(EXAMPLE_CATALOG).get(INCIDENT_AGENT)
    assert entry is not None, f"{INCIDENT_AGENT} is not in the shipped catalog"
    keyring = Keyring.from_file(keys)
    return MisbehavingAgent(bootstrap, entry, topic=DEFAULT_TOPIC, keyring=keyring).start()


def _incident(console: Console, agent_id: str, steps: list[ChainStep], data_dir: Path) -> None:
    console.rule(f"[bold]Incident: {literal(agent_id)} contained")
    table = Table("time (UTC)", "step", "detail", title_justify="left")
    for step in sorted(steps, key=lambda s: (s.at is None, s.at or dt.datetime.min)):
        at = (
            text(step.at.strftime("%H:%M:%S.%f")[:-3]) if step.at else text("did not happen", "red")
        )
        table.add_row(at, step.step, step.detail)
    console.print(table)
    console.print(
        f"Notifications are in {literal(data_dir / 'notifications')}; every step is in the "
        "alert_events, notifications and actions tables; `agentwatch breaker status --catalog "
        f"{EXAMPLE_CATALOG} --control-keys-file {literal(data_dir / 'control.keys')}` shows the "
        "breaker."
    )


def _drift_scenario(console: Console, bootstrap: str, scenario: Scenario, data_dir: Path) -> None:
    """Replay a scenario's days of event time in seconds, land them, and test for drift."""
    from agentwatch.processors.drift import backfill, load_config

    hours = (scenario.run.duration_s or 36 * 3600) / 3600
    console.rule(f"[bold]Drift: scenario {literal(scenario.name)}")
    console.print(
        f"{literal(scenario.description.strip())}\nReplaying {hours:g} h of event time ..."
    )
    end = utc_now().replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(hours=hours)
    topic = f"drift-{scenario.name}"
    sim = run_simulation(
        bootstrap, topic, agents=scenario.run.agents or 4, rate=0, duration=hours * 3600,
        seed=scenario.run.seed or 0, sim_rate=scenario.run.sim_rate or 3.0,
        start=start.timestamp(), scenario=scenario, progress=sys.stderr.isatty(),
    )  # fmt: skip
    db = data_dir / METADATA_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "processor.log").open("ab") as out:
        subprocess.run(
            [sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "process",
             "--bootstrap", bootstrap, "--topic", topic, "--group", topic, "--db", str(db),
             "--idle-timeout", "3"],
            stdout=out, stderr=out, check=True, timeout=600,
        )  # fmt: skip
    rows = backfill(db, start, end, dt.timedelta(hours=1), load_config())
    found = (
        rows.filter(pl.col("verdict") == "drift")
        .group_by("agent_id", "comparison", "signal")
        .agg(
            pl.col("window_end").min().alias("first"),
            pl.col("window_end").n_unique().alias("windows"),
            pl.col("score").max().alias("score"),
        )
        .sort("first")
    )  # fmt: skip
    table = Table("agent", "comparison", "signal", "first drifted window", "windows",
                  title=f"Drift found in {sim.events:,} events", title_justify="left")  # fmt: skip
    for agent, comparison, measured, first, windows, _ in found.iter_rows():
        when = first.strftime("%Y-%m-%d %H:%M UTC")
        table.add_row(agent, comparison, measured, when, str(windows))
    if found.is_empty():
        table.add_row("-", "-", "no drift found", "-", "-")
    console.print(table)
    for change in scenario.changes:
        at = dt.datetime.fromtimestamp(change.at.resolve(start.timestamp()), dt.UTC)
        console.print(f"The scenario: {change.describe()}, from {at:%Y-%m-%d %H:%M} UTC.")
    console.print(f"Details: agentwatch drift report --agent AGENT --db {literal(db)}")


def _otel_agent(console: Console, bootstrap: str, data_dir: Path, runs: int = 5) -> None:
    """An OpenTelemetry-instrumented agent (pydantic-ai) through ``agentwatch otlp``."""
    from agentwatch.commands import demo_otel

    missing = demo_otel.missing_packages()
    if missing:  # they come with the dev extra, which `make demo` installs
        console.print(f"[yellow]No OpenTelemetry agent: {', '.join(missing)} not installed[/]")
        return
    port = free_port()
    receiver = demo_otel.start_receiver(bootstrap, DEFAULT_TOPIC, data_dir, port)
    try:
        spans = demo_otel.run_agent(f"http://127.0.0.1:{port}/v1/traces", runs)
        console.print(f"[bold]OpenTelemetry agent[/] {demo_otel.AGENT_NAME} (pydantic-ai) sent "
                      f"{spans} spans through agentwatch otlp")  # fmt: skip
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


def _send_buggy_messages(bootstrap: str) -> None:
    producer = KafkaProducer(**client_options(bootstrap), acks="all")
    for message in BUGGY_MESSAGES:
        producer.send(DEFAULT_TOPIC, key=b"legacy-bot", value=message)
    producer.flush()
    producer.close()


def _last_stats(processor_log: Path) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for line in processor_log.read_text(errors="replace").splitlines():
        if '"processor stopped"' in line:
            stats = json.loads(line)
    return stats


def _summary(console: Console, db: Path, sim: SimulationSummary, stats: dict[str, Any]) -> None:
    console.rule("[bold]agentwatch demo summary")
    console.print(
        f"Fleet sent {sim.events:,} events in {sim.elapsed_s:.1f} s "
        f"({sim.events_per_second:,.0f}/s) plus {len(BUGGY_MESSAGES)} malformed messages."
    )
    console.print(
        f"Processor landed {stats.get('events', 0):,} events and "
        f"{stats.get('dead_letters', 0):,} dead letters this run, at "
        f"{stats.get('records_per_s', 0):,} records/s (peak RSS {stats.get('peak_rss_mb')} MB)."
    )
    report.render(db, console)
    console.rule("[bold]Try these")
    for title, sql in report.TRY_QUERIES:
        console.print(f"[bold]# {literal(title)}[/]")
        console.print(f'.venv/bin/agentwatch sql "{sql}" --db {db}\n', soft_wrap=True, markup=False)
    console.print(
        "Or in plain DuckDB: `agentwatch store attach --db "
        f"{literal(db)} > attach.sql; duckdb -init attach.sql`"
    )
