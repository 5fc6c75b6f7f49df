"""Backtest benchmark: how long ``alerts backtest`` takes to replay a week of a fleet.

A simulated fleet (``--agents`` agents of ingest/sim at ``--rate`` events/s of event
time) is landed straight into a new lake, an hour of event time per transaction with its
minute rollups, through the processor's own landing pipeline (pricing, sessions; no
broker). Then the shipped rules are replayed
over the whole range every ``--interval`` seconds with the example catalog, and only the
replay is timed: landing is reported apart. ``--hours`` replays the first hours only (a
quick figure, or the per-instant replay of older code). The last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from agentwatch.alerts.evaluation.backtest import backtest
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.rules import load_rules
from agentwatch.ingest.contract.wire import DEFAULT_MAX_MESSAGE_BYTES
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.dedup import DedupIndex
from agentwatch.processors.landing.pipeline import LandingSettings, PartitionState, land_batch
from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def land(db: Path, agents: int, rate: float, hours: int) -> int:
    """``hours`` of the fleet's events into a new lake at ``db``, an hour a transaction,
    through the processor's own landing pipeline (pricing, sessions, minute rollups);
    returns how many."""
    fleet = Fleet(make_agents(agents, seed=1), seed=1, start=START, events_per_second=rate)
    store = LakeStore(db)
    store.prepare()
    settings = LandingSettings(max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES)
    state = PartitionState(DedupIndex(settings.dedup_horizon_s, settings.dedup_max_ids))
    pricing = load_pricing()
    encode = msgspec.json.Encoder().encode
    landed = 0
    for hour in range(1, hours + 1):
        until = START + dt.timedelta(hours=hour)
        values = [encode(e) for e in fleet.events_until(until)]
        n = len(values)
        kafka_ms = [int(until.timestamp() * 1000)] * n  # produced as the hour ends
        raw = RawBatch("bench", 0, range(landed, landed + n), kafka_ms, [None] * n, values)
        batch = land_batch(raw, state, settings, lambda e: apply_pricing(e, pricing))
        store.insert_tables(batch.tables)
        landed += n
    return landed


def replay(db: Path, hours: float, interval: dt.timedelta, batch: dt.timedelta) -> dict[str, Any]:
    """Time one backtest of the shipped rules over the first ``hours`` of the history."""
    rules = load_rules()
    end = START + dt.timedelta(hours=hours)
    catalog = load_catalog(EXAMPLE_CATALOG)
    t0, c0 = time.perf_counter(), time.process_time()
    result = backtest(db, rules, catalog, START, end, interval, batch=batch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert not result.errors, result.errors
    return {
        "rules": len(rules),
        "evaluations": result.evaluations,
        "replay_s": round(wall, 1),
        "replay_cpu_s": round(cpu, 1),
        "ms_per_instant": round(1000 * wall / max(1, result.evaluations), 2),
        "fired": len(result.fired),
        "episodes": len(result.episodes),
        # What fired, rule by rule: the simulated fleet is not the example catalog's.
        "fired_by_rule": dict(Counter(e.rule for e in result.fired).most_common()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rate", type=float, default=3.0, help="fleet events/s")
    parser.add_argument("--days", type=int, default=7, help="history landed")
    parser.add_argument("--hours", type=float, help="hours replayed (default: all)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds")
    parser.add_argument(
        "--batch-minutes", type=float, default=360.0, help="event time measured together"
    )
    parser.add_argument("--target-s", type=float, default=300.0, help="for a week")
    parser.add_argument("--lake", type=Path, help="land once into this folder, then reuse it")
    args = parser.parse_args(argv)
    hours = args.hours if args.hours is not None else 24.0 * args.days
    with tempfile.TemporaryDirectory(prefix="aw-backtest-") as tmp:
        db = (args.lake or Path(tmp)) / METADATA_FILE
        out: dict[str, Any] = {"agents": args.agents, "days": args.days}
        if not db.exists():
            db.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            out["events"] = land(db, args.agents, args.rate, 24 * args.days)
            out["land_s"] = round(time.perf_counter() - t0, 1)
        batch = dt.timedelta(minutes=args.batch_minutes)
        out |= replay(db, hours, dt.timedelta(seconds=args.interval), batch)
    out["hours_replayed"] = hours
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out), flush=True)
    return 0 if out["replay_s"] <= args.target_s * hours / (24 * 7) else 1


if __name__ == "__main__":
    sys.exit(main())
