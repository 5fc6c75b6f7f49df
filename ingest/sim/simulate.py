"""The ``simulate`` command: a simulated fleet of agents writing trace events into Kafka.

Two ways to run. Real time (``rate > 0``): event timestamps are the wall clock and events
leave at about ``rate`` per second for ``duration`` seconds, which is what the demo and a
live dashboard want. As fast as possible (``rate`` 0 or None): the fleet runs on a
simulated clock over the ``duration`` seconds before now (or from ``start``), at
``sim_rate`` events per simulated second, and the producer goes at full speed, which is
what benchmarks and back-fills want: with ``--start`` in the past, days of event time
take minutes. A scenario (``--scenario FILE``, see :mod:`agentwatch.ingest.sim.scenario`)
schedules behaviour changes on the fleet, timed from the start of the run.
``run_simulation`` is the same thing without the CLI.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from agentwatch.ingest.contract.events import EVENT_TYPES, Event, SessionEnd
from agentwatch.ingest.contract.wire import DEFAULT_TOPIC
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.scenario import Scenario, Scheduled
from agentwatch.kafka import client_options
from agentwatch.settings import DEFAULTS
from agentwatch.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)

# The settings' defaults ([simulate], [kafka] timeout), for callers without a CLI.
DEFAULT_AGENTS: Final = DEFAULTS.simulate.agents
DEFAULT_RATE: Final = DEFAULTS.simulate.rate
DEFAULT_DURATION: Final = DEFAULTS.simulate.duration
DEFAULT_SIM_RATE: Final = DEFAULTS.simulate.sim_rate
DEFAULT_TIMEOUT: Final = DEFAULTS.kafka.timeout
LOG_EVERY_S: Final = 5.0

# Throughput over latency: a few ms of linger fills large batches; acks=all with the
# idempotent producer keeps a session's events exactly once and in order per partition.
PRODUCER_CONFIG: Final[Mapping[str, Any]] = {
    "client_id": "agentwatch-simulate",
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "request_timeout_ms": 30_000,
}

_KIND: Final[dict[type[Event], str]] = {cls: str(cls.__struct_config__.tag) for cls in EVENT_TYPES}


@dataclass
class SimulationSummary:
    """What a run produced, counted from the events handed to the producer."""

    topic: str
    seed: int
    agents: int
    realtime: bool
    events: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_agent: Counter[str] = field(default_factory=Counter)
    sessions_by_agent: Counter[str] = field(default_factory=Counter)
    resolutions: Counter[str] = field(default_factory=Counter)
    delivery_errors: int = 0
    elapsed_s: float = 0.0
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    start: float | None = None  # epoch seconds the fleet's clock started from
    scenario: str | None = None
    changes: list[Scheduled] = field(default_factory=list)

    @property
    def sessions_started(self) -> int:
        return self.by_kind["session_start"]

    @property
    def sessions_ended(self) -> int:
        return self.by_kind["session_end"]

    @property
    def sessions_open(self) -> int:
        """Sessions still running when the run stopped: they have no session_end."""
        return self.sessions_started - self.sessions_ended

    @property
    def events_per_second(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def count(self, event: Event) -> None:
        self.events += 1
        self.by_kind[_KIND[type(event)]] += 1
        self.by_agent[event.agent_id] += 1
        if isinstance(event, SessionEnd):
            self.resolutions[event.resolution] += 1
        elif _KIND[type(event)] == "session_start":
            self.sessions_by_agent[event.agent_id] += 1
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for logs and benchmark reports."""
        return {
            "topic": self.topic,
            "seed": self.seed,
            "agents": self.agents,
            "realtime": self.realtime,
            "events": self.events,
            "events_per_second": round(self.events_per_second, 1),
            "elapsed_s": round(self.elapsed_s, 3),
            "sessions_started": self.sessions_started,
            "sessions_ended": self.sessions_ended,
            "sessions_open": self.sessions_open,
            "by_kind": dict(self.by_kind),
            "resolutions": dict(self.resolutions),
            "delivery_errors": self.delivery_errors,
            "first_ts": self.first_ts.isoformat() if self.first_ts else None,
            "last_ts": self.last_ts.isoformat() if self.last_ts else None,
            "start": _iso(self.start),
            "scenario": self.scenario,
            "changes": [
                {
                    "agent_id": c.agent_id,
                    "start": _iso(c.start),
                    "end": _iso(c.end),
                    "change": c.description,
                }
                for c in self.changes
            ],
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


class _Reporter:
    """Progress on stderr: a rich bar for people at a terminal, log lines for everyone else.

    Progress is the larger of time done and, when a run is capped, events done, so a
    capped back-fill over a long window still shows how far it is.
    """

    def __init__(self, total_s: float, max_events: int | None, show_bar: bool) -> None:
        self.total_s = total_s
        self.max_events = max_events
        self.done_s = 0.0
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._last_log = time.monotonic()
        if show_bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]simulate[/]"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn(
                    "{task.fields[events]:>10,} events  {task.fields[sessions]:>7,} sessions"
                ),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("simulate", total=1.0, events=0, sessions=0)

    def update(self, done_s: float | None, summary: SimulationSummary, force: bool = False) -> None:
        """Show ``done_s`` seconds of ``total_s`` done (None: as last shown), rate-limited."""
        now = time.monotonic()
        if done_s is None:
            done_s = self.done_s
        self.done_s = done_s
        fraction = done_s / self.total_s
        if self.max_events:
            fraction = max(fraction, summary.events / self.max_events)
        fraction = min(fraction, 1.0)
        if self._bar is not None:
            if force or now - self._last >= 0.1:
                self._last = now
                self._bar.update(
                    self._task,
                    completed=fraction,
                    events=summary.events,
                    sessions=summary.sessions_started,
                )
        elif force or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.info(
                "simulating",
                extra={
                    "events": summary.events,
                    "sessions": summary.sessions_started,
                    "progress": round(fraction, 3),
                    "events_per_s": round(summary.events / max(summary.elapsed_s, 1e-9), 1),
                },
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_simulation(
    bootstrap: str,
    topic: str = DEFAULT_TOPIC,
    agents: int = DEFAULT_AGENTS,
    rate: float | None = DEFAULT_RATE,
    duration: float = DEFAULT_DURATION,
    seed: int | None = None,
    progress: bool = False,
    *,
    sim_rate: float = DEFAULT_SIM_RATE,
    start: float | dt.datetime | None = None,
    max_events: int | None = None,
    create_topic: bool = True,
    partitions: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
    producer_config: Mapping[str, Any] | None = None,
    scenario: Scenario | None = None,
) -> SimulationSummary:
    """Run a simulated fleet into ``topic`` and return what was sent (flushed and acked).

    ``rate`` > 0 paces in real time (ts = wall clock, about ``rate`` events/s for
    ``duration`` s). ``rate`` 0 or None runs as fast as possible on a simulated clock
    covering ``duration`` seconds from ``start`` (default: ending now) at ``sim_rate``
    events per simulated second. ``max_events`` stops either mode early. The count is
    approximate: it follows from sessions, which are whole conversations. ``timeout``
    bounds the wait for Kafka at the start, so a wrong address fails fast. ``scenario``
    schedules its changes on the fleet, its offsets counted from the run's start; it is
    checked against the fleet before anything is sent (:class:`ScenarioError`).
    """
    if agents < 1:
        raise ValueError("agents must be at least 1")
    if duration <= 0:
        raise ValueError("duration must be positive")
    realtime = bool(rate and rate > 0)
    if realtime and start is not None:
        raise ValueError("start is for as-fast-as-possible runs; real time starts now")
    if seed is None:
        seed = secrets.randbits(32)
    if realtime:
        t0 = time.time()
    else:
        first = time.time() - duration if start is None else start
        t0 = first.timestamp() if isinstance(first, dt.datetime) else float(first)
    fleet_agents = make_agents(agents, seed)
    scheduled = scenario.apply(fleet_agents, t0) if scenario is not None else []
    if create_topic:
        ensure_topics(bootstrap, [TopicSpec(topic, partitions=partitions)], timeout=timeout)

    from kafka import KafkaProducer

    summary = SimulationSummary(
        topic=topic,
        seed=seed,
        agents=agents,
        realtime=realtime,
        start=t0,
        scenario=scenario.name if scenario is not None else None,
        changes=scheduled,
    )
    config = {"bootstrap_timeout_ms": int(timeout * 1000), **PRODUCER_CONFIG}
    producer = KafkaProducer(**client_options(bootstrap), **{**config, **(producer_config or {})})
    log.info(
        "simulation starting",
        extra={
            "bootstrap": bootstrap,
            "topic": topic,
            "agents": agents,
            "rate": rate if realtime else None,
            "sim_rate": None if realtime else sim_rate,
            "duration_s": duration,
            "seed": seed,
            "start": _iso(t0),
            "scenario": summary.scenario,
        },
    )
    for change in scheduled:
        if change.start >= t0 + duration:
            log.warning(
                "scenario change falls after the end of the run",
                extra={"agent_id": change.agent_id, "at": _iso(change.start)},
            )
    reporter = _Reporter(
        duration, max_events, progress
    )  # after the log line: a live bar owns the line
    began = time.monotonic()
    try:
        send = _sender(producer, topic, summary)
        if realtime:
            assert rate is not None
            fleet = Fleet(fleet_agents, seed=seed, start=t0, events_per_second=rate)
            _run_realtime(send, fleet, duration, summary, reporter, max_events, began)
        else:
            fleet = Fleet(fleet_agents, seed=seed, start=t0, events_per_second=sim_rate)
            _run_fast(send, fleet, duration, summary, reporter, max_events, began)
        producer.flush()
    finally:
        summary.elapsed_s = time.monotonic() - began
        reporter.update(None, summary, force=True)
        reporter.close()
        producer.close()
    if summary.delivery_errors:
        log.error("events not delivered", extra={"delivery_errors": summary.delivery_errors})
    log.info("simulation finished", extra=summary.as_dict())
    return summary


def _sender(producer: Any, topic: str, summary: SimulationSummary) -> Callable[[Event], None]:
    """A function that produces one event, keyed by session id.

    The partition is the default partitioner's (murmur2 of the key, as the Java client
    does), computed once per session and passed explicitly: kafka-python's pure-Python
    hash per message would otherwise cost about a tenth of the producer's throughput.
    """
    from kafka.partitioner.default import murmur2

    encode = msgspec.json.Encoder().encode
    send = producer.send
    partitions = sorted(producer.partitions_for(topic))
    count = len(partitions)
    by_session: dict[str, int] = {}

    def on_error(exc: BaseException) -> None:
        if not summary.delivery_errors:
            log.error("delivery failed", extra={"error": repr(exc)})
        summary.delivery_errors += 1

    def deliver(event: Event) -> None:
        session_id = event.session_id
        key = session_id.encode()
        partition = by_session.get(session_id)
        if partition is None:
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % count]
            by_session[session_id] = partition
        if type(event) is SessionEnd:
            del by_session[session_id]
        send(topic, key=key, value=encode(event), partition=partition).add_errback(on_error)
        summary.count(event)

    return deliver


def _run_realtime(
    send: Callable[[Event], None],
    fleet: Fleet,
    duration: float,
    summary: SimulationSummary,
    reporter: _Reporter,
    max_events: int | None,
    began: float,
) -> None:
    start = fleet.start
    end = start + duration
    limit = max_events if max_events is not None else -1
    while True:
        now = time.time()
        for event in fleet.events_until(min(now, end)):
            send(event)
            if summary.events == limit:
                return
        summary.elapsed_s = time.monotonic() - began
        reporter.update(now - start, summary)
        if now >= end:
            reporter.update(duration, summary)
            return
        due = fleet.next_ts()
        wait = (end if due is None else min(due, end)) - time.time()
        # At least 2 ms: at high rates this batches a few events per wake-up.
        time.sleep(min(max(wait, 0.002), 0.1))


def _run_fast(
    send: Callable[[Event], None],
    fleet: Fleet,
    duration: float,
    summary: SimulationSummary,
    reporter: _Reporter,
    max_events: int | None,
    began: float,
) -> None:
    limit = max_events if max_events is not None else -1
    end = fleet.start + duration
    horizon = fleet.start
    while horizon < end:
        horizon = min(horizon + 1.0, end)
        for event in fleet.events_until(horizon):
            send(event)
            if summary.events == limit:
                return
        summary.elapsed_s = time.monotonic() - began
        reporter.update(horizon - fleet.start, summary)


# --------------------------------------------------------------------------- CLI


def print_summary(summary: SimulationSummary, file: Any = None) -> None:
    """The end-of-run tables: events by kind, and sessions and events per agent."""
    from rich.console import Console

    from agentwatch.terminal import Table, literal

    console = Console(file=file or sys.stdout, highlight=False)
    mode = "real time" if summary.realtime else "as fast as possible"
    console.print(
        f"[bold]{summary.events:,}[/] events to [bold]{literal(summary.topic)}[/] in "
        f"{summary.elapsed_s:.1f}s ({summary.events_per_second:,.0f}/s, {mode}, "
        f"seed {summary.seed}); sessions: {summary.sessions_started:,} started, "
        f"{summary.sessions_ended:,} ended, {summary.sessions_open:,} still open"
        + (
            f"; [red]{summary.delivery_errors:,} not delivered[/]"
            if summary.delivery_errors
            else ""
        )
    )
    kinds = Table(title="events by kind", title_justify="left")
    kinds.add_column("kind")
    kinds.add_column("events", justify="right")
    kinds.add_column("share", justify="right")
    for kind, n in summary.by_kind.most_common():
        kinds.add_row(kind, f"{n:,}", f"{n / max(summary.events, 1):.1%}")
    console.print(kinds)
    if summary.resolutions:
        ended = max(summary.sessions_ended, 1)
        console.print(
            "resolutions: "
            + ", ".join(
                f"{r} {n:,} ({n / ended:.0%})" for r, n in summary.resolutions.most_common()
            ),
            markup=False,
        )
    agents = Table(title="per agent", title_justify="left")
    agents.add_column("agent")
    agents.add_column("sessions", justify="right")
    agents.add_column("events", justify="right")
    for agent in sorted(summary.by_agent):
        agents.add_row(
            agent, f"{summary.sessions_by_agent[agent]:,}", f"{summary.by_agent[agent]:,}"
        )
    console.print(agents)
    if summary.scenario is not None:
        console.print(
            f"scenario [bold]{literal(summary.scenario)}[/]: {len(summary.changes)} change(s)"
        )
        for change in summary.changes:
            until = f" until {_iso(change.end)}" if change.end is not None else ""
            console.print(
                f"  {change.agent_id} from {_iso(change.start)}{until}: {change.description}",
                markup=False,
            )


__all__ = ["SimulationSummary", "print_summary", "run_simulation"]
