"""``agentwatch simulate``: a simulated fleet of agents writing trace events into Kafka."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentwatch.commands.options import (
    DURATION_HELP,
    add_bootstrap_option,
    at_least_one,
    duration_help,
    fleet_size,
    non_negative,
    positive,
    positive_seconds,
    topic_name,
)
from agentwatch.durations import TIME_EXAMPLES, format_duration
from agentwatch.ingest.sim.scenario import Scenario, ScenarioError, parse_start
from agentwatch.ingest.sim.scenario_file import load_scenario
from agentwatch.ingest.sim.simulate import (
    print_summary,
    run_simulation,
)
from agentwatch.setting_types import MAX_AGENTS
from agentwatch.settings import Settings


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Simulate a fleet of agents (HR assistant, IT support, finance/compliance, member "
        "services, cycling) holding interleaved sessions: model calls, tool calls, "
        "guardrail checks, escalations, feedback, errors and security events, as contract "
        "events keyed by session_id. With --rate > 0 timestamps are the wall clock and "
        "about RATE events/s are sent for DURATION; the total is approximate, "
        "since sessions are whole conversations and ramp up over the first seconds. With "
        "--rate 0 the fleet runs as fast as possible on a simulated clock over the "
        "DURATION before now, at --sim-rate events per simulated second; --start "
        "TIME runs that way from TIME (until now unless --duration says otherwise), so "
        "days of event time take minutes. --scenario FILE applies a YAML timeline of "
        "behaviour changes (see docs/scenarios.md); its run: block supplies --agents and "
        "--seed, and when running as fast as possible --duration and --sim-rate, when "
        "those flags are not given. The same "
        "--seed, start time and scenario give the same events, ids included."
    )
    fallbacks = {
        "agents": settings.value("simulate", "agents"),
        "rate": settings.value("simulate", "rate"),
        "duration": settings.value("simulate", "duration"),
        "sim_rate": settings.value("simulate", "sim_rate"),
    }
    add_bootstrap_option(parser, settings)
    parser.add_argument(
        "--topic",
        type=topic_name,
        default=settings.value("kafka", "topic"),
        help="events topic, created if missing (env AGENTWATCH_KAFKA_TOPIC; default %(default)s)",
    )
    parser.add_argument(
        "--agents",
        type=fleet_size,
        metavar="N",
        default=None,
        help=f"number of agents, cycling through the agent types, at most {MAX_AGENTS}: all "
        f"are built before the first event (default {fallbacks['agents']})",
    )
    parser.add_argument(
        "--rate",
        type=non_negative,
        metavar="EVENTS_PER_S",
        default=None,
        help="target events per second, approximate; 0 = as fast as possible "
        f"(default {fallbacks['rate']}; 0 with --start)",
    )
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="DURATION",
        default=None,
        help="how long to run, with --rate 0 of simulated time ("
        f"{DURATION_HELP}; default {format_duration(fallbacks['duration'])}; with --start: "
        "until now)",
    )
    parser.add_argument(
        "--start",
        metavar="TIME",
        default=None,
        help="run as fast as possible on a simulated clock starting at TIME: "
        f"{TIME_EXAMPLES} (UTC without a zone)",
    )
    parser.add_argument(
        "--scenario",
        metavar="FILE",
        type=Path,
        default=None,
        help="a YAML timeline of behaviour changes to apply (e.g. scenarios/model-swap.yaml)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed for a reproducible fleet (default: a random one, logged)",
    )
    parser.add_argument(
        "--sim-rate",
        type=positive,
        metavar="EVENTS_PER_S",
        default=None,
        help=f"with --rate 0: events per simulated second (default {fallbacks['sim_rate']})",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="DURATION",
        default=settings.value("kafka", "timeout"),
        help=duration_help(
            "how long to wait for Kafka at the start", settings.value("kafka", "timeout")
        ),
    )
    parser.add_argument(
        "--max-events",
        type=at_least_one,
        metavar="N",
        default=None,
        help="stop after N events",
    )
    parser.set_defaults(handler=_cmd_simulate, simulate_fallbacks=fallbacks)


@dataclass(frozen=True)
class _Plan:
    agents: int
    rate: float
    duration: float
    sim_rate: float
    seed: int | None
    start: float | None
    scenario: Scenario | None


def _plan(args: argparse.Namespace, now: float) -> _Plan:
    """Settle each knob: the flag, else the scenario's run: block, else config or default.

    With --start and no --duration the run goes on until now.
    """
    fallbacks: dict[str, Any] = args.simulate_fallbacks
    scenario = load_scenario(args.scenario) if args.scenario is not None else None
    hints = scenario.run if scenario is not None else None
    start = parse_start(args.start, now) if args.start is not None else None
    if start is not None and args.rate:
        raise ScenarioError("--start runs as fast as possible: leave out --rate or give --rate 0")
    rate = float(
        0.0 if start is not None else fallbacks["rate"] if args.rate is None else args.rate
    )
    # The run: block's duration and rate are simulated time: in real time they would mean
    # hours of waiting, so there only the flags and the defaults count.
    fast = hints if hints is not None and not rate else None
    duration = args.duration
    if duration is None and start is not None:
        duration = now - start
        if duration <= 0:
            raise ScenarioError("--start is not in the past: give --duration too")
    if duration is None and fast is not None:
        duration = fast.duration_s
    return _Plan(
        agents=args.agents or (hints.agents if hints else None) or fallbacks["agents"],
        rate=rate,
        duration=float(duration or fallbacks["duration"]),
        sim_rate=float(args.sim_rate or (fast.sim_rate if fast else None) or fallbacks["sim_rate"]),
        seed=args.seed if args.seed is not None else (hints.seed if hints else None),
        start=start,
        scenario=scenario,
    )


def _cmd_simulate(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from agentwatch.topics import TopicError

    try:
        plan = _plan(args, time.time())
        summary = run_simulation(
            args.bootstrap,
            args.topic,
            agents=plan.agents,
            rate=plan.rate,
            duration=plan.duration,
            seed=plan.seed,
            progress=sys.stderr.isatty(),
            sim_rate=plan.sim_rate,
            start=plan.start,
            max_events=args.max_events,
            timeout=args.timeout,
            scenario=plan.scenario,
        )
    except ScenarioError as exc:
        print(f"agentwatch: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, TopicError) as exc:
        print(f"agentwatch: cannot simulate into {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 1 if summary.delivery_errors else 0
