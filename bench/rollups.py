"""One evaluation of the shipped alert rules over a long history: what it costs.

``python -m bench.rollups --land DIR`` lands a fleet's history (bench/traffic.py) into a
new lake as the processor would: one ``commit_batch`` transaction per ``--batch-minutes``
of event time, each with its minute rollups, through the same session state.
``--evaluate DIR`` then times evaluations of every shipped rule at the newest event, in a
fresh process, with the installed code: run it with the code before rollups too, for a
before/after figure.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from agentwatch.alerts.evaluation.evaluator import Evaluator
from agentwatch.alerts.governance.catalog import AgentEntry, Catalog
from agentwatch.alerts.rules import load_rules
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from bench.traffic import MODELS, TOOLS, Fleet, Profile, generate

START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)


def land(
    data_dir: Path, days: int, agents: int, sessions_per_hour: float, batch_minutes: int
) -> dict[str, Any]:
    """Write the history as batches of events and their rollups; return its size."""
    from agentwatch.processors.landing.sessions import SessionTracker
    from agentwatch.processors.store.rollups import minute_rollups, tiers

    fleet = Fleet(
        {f"agent-{i}": Profile(sessions_per_hour=sessions_per_hour) for i in range(agents)}
    )
    events = generate(fleet, START, days * 24, seed=1)
    store = LakeStore(data_dir / METADATA_FILE)
    store.recover("bench", 0)
    sessions = SessionTracker()
    batches = events.with_columns(
        _batch=(pl.col("ts") - START).dt.total_minutes() // batch_minutes
    ).partition_by("_batch", maintain_order=True, include_key=False)
    for batch in batches:
        first, last = batch["_offset"].min(), batch["_offset"].max()
        assert isinstance(first, int) and isinstance(last, int)
        context = sessions.context(batch)
        sessions.update(batch)
        rollups = tiers(minute_rollups(batch, context))
        landed = store.commit_batch("bench", 0, (first, last), batch, pl.DataFrame(), extra=rollups)
        assert landed, (first, last)
    return {"events": events.height, "batches": len(batches), "days": days}


def catalog(con: duckdb.DuckDBPyConnection) -> Catalog:
    """Every agent of the history catalogued, active, with models and tools approved."""
    agents = [r[0] for r in con.execute("SELECT DISTINCT agent_id FROM events").fetchall()]
    return Catalog(
        {
            a: AgentEntry(
                agent_id=a,
                owner="bench",
                oncall="bench",
                risk_tier="low",
                status="active",
                approved_models=frozenset(MODELS),
                approved_tools=frozenset(TOOLS),
                daily_budget_usd=1000.0,
            )
            for a in agents
        }
    )


def evaluate(data_dir: Path, runs: int) -> dict[str, Any]:
    """Time ``runs`` evaluations of the shipped rules at the newest event time."""
    db = data_dir / METADATA_FILE
    LakeStore(db).prepare()  # the views of the code being measured
    con = connect_lake(db)
    newest = con.execute("SELECT max(ts), count(*) FROM events").fetchone()
    assert newest is not None
    evaluator = Evaluator(db, load_rules(), catalog(con))
    con.close()
    wall, cpu = [], []
    for i in range(runs):
        at = newest[0] - dt.timedelta(seconds=17.5 * i)  # windows cut mid-minute
        c0, t0 = time.process_time(), time.perf_counter()
        result = evaluator.evaluate(at)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert not result.errors, result.errors
    return {
        "events": newest[1],
        "rules": len(evaluator.rules),
        "eval_ms_median": round(1000 * statistics.median(wall), 1),
        "eval_ms_min": round(1000 * min(wall), 1),
        "eval_cpu_ms_median": round(1000 * statistics.median(cpu), 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_1m": round(_load(), 2),
    }


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollups", description=__doc__)
    parser.add_argument("--land", type=Path, help="write a new history into this data dir")
    parser.add_argument("--evaluate", type=Path, help="time evaluations over this data dir")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--sessions-per-hour", type=float, default=60.0)
    parser.add_argument("--batch-minutes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.land and not args.evaluate:
        parser.error("give --land DIR, --evaluate DIR or both")
    out: dict[str, Any] = {}
    if args.land:
        t0 = time.perf_counter()
        out |= land(args.land, args.days, args.agents, args.sessions_per_hour, args.batch_minutes)
        out["land_s"] = round(time.perf_counter() - t0, 1)
    if args.evaluate:
        out |= evaluate(args.evaluate, args.runs)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
