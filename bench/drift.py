"""Detection quality: every shipped scenario and the control through the whole pipeline.

For each scenario file (``scenarios/*.yaml``) the fleet its ``run:`` block describes is
simulated into its own topic on one local broker, with event time starting in the past
at an hour boundary (days of event time in about a minute), ``agentwatch process`` lands
it, and the drift evaluator backfills hourly windows over the whole range with its
shipped settings. Then, from drift_scores:

- per expectation of a scenario (agent, signals, from when): the detection delay, in
  windows from the change to the first ``drift`` verdict on that agent and signal (the
  window ending one hour after the change is window 1); every listed signal must be found;
- on the control, where nothing changes, the false alarm rate: ``drift`` verdicts per
  signal-window test that had enough data (a verdict other than insufficient_data), with
  its one-sided 95% upper confidence bound;
- for information, the same rate on the agents no change touches in the scenario runs.

Targets: every expectation detected within 2 windows; at most 1 false alarm per 1,000
tests on the control. A table goes to stderr; the last line on stdout is one JSON object.
The exit status is 0 when both targets are met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from agentwatch.broker.launcher import start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.ingest.sim.scenario import Scenario
from agentwatch.ingest.sim.scenario_file import load_scenario
from agentwatch.ingest.sim.simulate import run_simulation
from agentwatch.processors.store.attach import connect as connect_lake

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CONTROL = "control"
STEP = dt.timedelta(hours=1)
TARGET_DELAY = 2  # windows
TARGET_FALSE_ALARMS = 1.0  # per 1,000 signal-window tests
DRIFT = "drift"
INSUFFICIENT = "insufficient_data"


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class SignalResult:
    signal: str
    delay: int | None  # windows from the change to the first drift verdict; None: missed
    first_drift: dt.datetime | None
    early: int  # drift verdicts on this agent and signal before the change


@dataclass(frozen=True)
class ExpectationResult:
    agent: str
    since: dt.datetime
    comparison: str | None
    signals: tuple[SignalResult, ...]

    @property
    def delay(self) -> int | None:
        """The slowest signal's delay: an expectation counts when all its signals are found."""
        delays = [s.delay for s in self.signals]
        return None if any(d is None for d in delays) else max(d for d in delays if d is not None)


@dataclass(frozen=True)
class Alarms:
    """Drift verdicts among tests that had enough data."""

    drifts: int
    tests: int
    by_signal: dict[str, int] = field(default_factory=dict)

    @property
    def per_1000(self) -> float:
        return 1000.0 * self.drifts / self.tests if self.tests else 0.0

    @property
    def upper_per_1000(self) -> float:
        """One-sided 95% upper confidence bound of the rate (Clopper-Pearson), per 1,000."""
        return 1000.0 * binomial_upper(self.drifts, self.tests) if self.tests else math.inf


def binomial_upper(k: int, n: int, alpha: float = 0.05) -> float:
    """The p at which seeing at most ``k`` in ``n`` has probability ``alpha`` (bisection)."""
    if k >= n:
        return 1.0

    def cdf(p: float) -> float:
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 0.0
        log_p, log_q = math.log(p), math.log1p(-p)
        return sum(
            math.exp(
                math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                + i * log_p + (n - i) * log_q
            )
            for i in range(k + 1)
        )  # fmt: skip

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def detection(
    scores: pl.DataFrame, scenario: Scenario, start: dt.datetime, step: dt.timedelta = STEP
) -> list[ExpectationResult]:
    """Delays of each expectation of ``scenario``, from drift_scores rows of its run."""
    results = []
    for expectation in scenario.expect:
        since = dt.datetime.fromtimestamp(scenario.since(expectation, start.timestamp()), dt.UTC)
        mine = scores.filter(
            (pl.col("agent_id") == expectation.agent) & (pl.col("verdict") == DRIFT)
        )
        if expectation.comparison is not None:
            mine = mine.filter(pl.col("comparison") == expectation.comparison)
        signals = []
        for signal in expectation.signals:
            hits = mine.filter(pl.col("signal") == signal)
            after = hits.filter(pl.col("window_end") > since)["window_end"]
            first = after.min() if after.len() else None
            delay = None
            if isinstance(first, dt.datetime):
                delay = math.ceil((first - since) / step)
            early = hits.filter(pl.col("window_end") <= since).height
            signals.append(
                SignalResult(
                    signal, delay, first if isinstance(first, dt.datetime) else None, early
                )
            )
        results.append(
            ExpectationResult(expectation.agent, since, expectation.comparison, tuple(signals))
        )
    return results


def alarms(scores: pl.DataFrame, exclude_agents: Iterable[str] = ()) -> Alarms:
    """Drift verdicts per test with enough data, leaving out ``exclude_agents``."""
    tested = scores.filter(
        (pl.col("verdict") != INSUFFICIENT) & ~pl.col("agent_id").is_in(list(exclude_agents))
    )
    drifts = tested.filter(pl.col("verdict") == DRIFT)
    by_signal = {
        f"{signal}/{test}": n
        for signal, test, n in drifts.group_by("signal", "test")
        .len()
        .sort("len", descending=True)
        .iter_rows()
    }
    return Alarms(drifts.height, tested.height, by_signal)


def changed_agents(scenario: Scenario, agents: Sequence[str]) -> set[str]:
    """The agents some change of ``scenario`` touches, in a fleet with these ids."""
    touched: set[str] = set()
    for change in scenario.changes:
        touched.update(change.agents)
        touched.update(a for a in agents if a.rsplit("-", 1)[0] in change.agent_types)
    return touched


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    name: str
    start: dt.datetime
    events: int
    simulate_s: float
    process_s: float
    drift_s: float
    windows: int
    expectations: list[ExpectationResult]
    alarms: Alarms  # on the agents no change touches (every agent for the control)
    process_attempts: int = 1

    @property
    def detected(self) -> bool:
        return all(e.delay is not None and e.delay <= TARGET_DELAY for e in self.expectations)


def run_scenario(
    bootstrap: str, scenario: Scenario, start: dt.datetime, workdir: Path, console: Console
) -> RunResult:
    """Simulate, land and backfill one scenario; score its drift_scores."""
    from agentwatch.processors.drift import backfill, load_config

    hints = scenario.run
    if hints.agents is None or hints.duration_s is None or hints.sim_rate is None:
        raise SystemExit(f"{scenario.source}: the bench needs run: agents, duration and sim_rate")
    topic = f"drift-bench-{scenario.name}"
    began = time.monotonic()
    summary = run_simulation(
        bootstrap, topic, agents=hints.agents, rate=0, duration=hints.duration_s,
        seed=hints.seed if hints.seed is not None else 0, sim_rate=hints.sim_rate,
        start=start.timestamp(), scenario=scenario, progress=False,
    )  # fmt: skip
    if summary.delivery_errors:
        raise SystemExit(f"{scenario.name}: {summary.delivery_errors} events not delivered")
    simulated = time.monotonic()
    db = workdir / scenario.name / "agentwatch.sqlite"
    attempts = process(bootstrap, topic, db, summary.events)
    landed = connect_lake(db)
    try:
        row = landed.execute("SELECT count(*) FROM events").fetchone()
    finally:
        landed.close()
    if row is None or row[0] != summary.events:
        raise SystemExit(f"{scenario.name}: {summary.events} events sent, {row} landed")
    processed = time.monotonic()
    end = start + dt.timedelta(seconds=hints.duration_s)
    scores = backfill(db, start, end, STEP, load_config())
    finished = time.monotonic()
    agent_ids = sorted(summary.by_agent)
    touched = changed_agents(scenario, agent_ids)
    result = RunResult(
        name=scenario.name,
        start=start,
        events=summary.events,
        simulate_s=simulated - began,
        process_s=processed - simulated,
        drift_s=finished - processed,
        windows=scores["window_end"].n_unique() if scores.height else 0,
        expectations=detection(scores, scenario, start),
        alarms=alarms(scores, touched),
        process_attempts=attempts,
    )
    console.print(
        f"  {scenario.name}: {summary.events:,} events, simulate {result.simulate_s:.0f}s, "
        f"process {result.process_s:.0f}s, drift {result.drift_s:.0f}s "
        f"({result.windows} windows, {scores.height:,} rows)"
    )
    return result


def process(bootstrap: str, topic: str, db: Path, events: int) -> int:
    """``agentwatch process`` as its own process, until the topic is landed and idle.

    A run that has not gone idle well after its events should have landed (seen once: a
    consumer that never got its partitions, spinning) is stopped and started again in a
    new group; the processor resumes after its last committed segment, so nothing lands
    twice. Returns the attempts it took; each attempt's log is kept beside the metadata file.
    """
    limit = max(180.0, events / 2_000)
    for attempt in (1, 2, 3):
        db.parent.mkdir(parents=True, exist_ok=True)
        log_file = db.parent / f"process-{attempt}.log"
        cmd = [
            sys.executable, "-m", "agentwatch.cli", "--log-format", "json", "process",
            "--bootstrap", bootstrap, "--topic", topic, "--group", f"bench-{time.time_ns()}",
            "--db", str(db), "--idle-timeout", "3",
        ]  # fmt: skip
        with log_file.open("w") as log:
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
            try:
                code = child.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                print(f"  processor not idle after {limit:.0f}s; again", file=sys.stderr)
                continue
        if code != 0:
            raise SystemExit(f"processor failed:\n{log_file.read_text()[-3000:]}")
        return attempt
    raise SystemExit(f"processor did not finish {topic} in 3 attempts; logs in {db.parent}")


# --------------------------------------------------------------------------- report


def _delay_text(delay: int | None) -> str:
    return "missed" if delay is None else str(delay)


def report(results: list[RunResult], console: Console) -> dict[str, Any]:
    """Print the tables and return the JSON summary."""
    table = Table(title="detection delay (windows of 1h from the change)", title_justify="left")
    for column in ("scenario", "agent", "signal", "delay", "first drift", "early", "ok"):
        table.add_column(column, justify="right" if column in ("delay", "early") else "left")
    scenarios: dict[str, Any] = {}
    for result in results:
        if result.name == CONTROL:
            continue
        entry: dict[str, Any] = {"detected": result.detected, "expectations": []}
        for expectation in result.expectations:
            for s in expectation.signals:
                ok = s.delay is not None and s.delay <= TARGET_DELAY
                table.add_row(
                    result.name, expectation.agent, s.signal, _delay_text(s.delay),
                    s.first_drift.strftime("%Y-%m-%d %H:%M") if s.first_drift else "-",
                    str(s.early), "yes" if ok else "NO",
                )  # fmt: skip
            entry["expectations"].append(
                {
                    "agent": expectation.agent,
                    "since": expectation.since.isoformat(),
                    "delay_windows": expectation.delay,
                    "signals": {s.signal: s.delay for s in expectation.signals},
                    "early_drifts": sum(s.early for s in expectation.signals),
                }
            )
        delays = [e.delay for e in result.expectations]
        entry["delay_windows"] = None if None in delays else max(d or 0 for d in delays)
        entry["false_alarms_elsewhere"] = result.alarms.drifts
        entry["tests_elsewhere"] = result.alarms.tests
        scenarios[result.name] = entry
    console.print(table)

    control = next((r for r in results if r.name == CONTROL), None)
    elsewhere = Alarms(
        sum(r.alarms.drifts for r in results if r.name != CONTROL),
        sum(r.alarms.tests for r in results if r.name != CONTROL),
    )
    alarm_table = Table(title="false alarms (drift verdicts per test with enough data)",
                        title_justify="left")  # fmt: skip
    for column in ("run", "drift", "tests", "per 1,000", "95% upper", "by signal/test"):
        alarm_table.add_column(
            column, justify="left" if column in ("run", "by signal/test") else "right"
        )
    if control is not None:
        a = control.alarms
        alarm_table.add_row(
            "control", str(a.drifts), f"{a.tests:,}", f"{a.per_1000:.2f}",
            f"{a.upper_per_1000:.2f}", ", ".join(f"{k} {v}" for k, v in a.by_signal.items()) or "-",
        )  # fmt: skip
    alarm_table.add_row(
        "scenarios, untouched agents", str(elsewhere.drifts), f"{elsewhere.tests:,}",
        f"{elsewhere.per_1000:.2f}", f"{elsewhere.upper_per_1000:.2f}", "",
    )  # fmt: skip
    console.print(alarm_table)

    detected = all(r.detected for r in results if r.name != CONTROL)
    alarms_ok = control is not None and control.alarms.per_1000 <= TARGET_FALSE_ALARMS
    delays = [e["delay_windows"] for e in scenarios.values()]
    known = [d for d in delays if d is not None]
    return {
        "scenarios": scenarios,
        "all_detected_within_2": detected,
        "max_delay_windows": None if None in delays or not known else max(known),
        "control_false_alarms": control.alarms.drifts if control else None,
        "control_tests": control.alarms.tests if control else None,
        "control_false_alarms_per_1000": round(control.alarms.per_1000, 3) if control else None,
        "control_false_alarms_per_1000_upper95": (
            round(control.alarms.upper_per_1000, 3) if control else None
        ),
        "elsewhere_false_alarms": elsewhere.drifts,
        "elsewhere_tests": elsewhere.tests,
        "targets_met": detected and alarms_ok,
        "events": sum(r.events for r in results),
        "timings_s": {
            r.name: {
                "simulate": round(r.simulate_s, 1),
                "process": round(r.process_s, 1),
                "drift": round(r.drift_s, 1),
                "process_attempts": r.process_attempts,
            }
            for r in results
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drift", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--scenarios",
        type=Path,
        default=SCENARIOS,
        help="directory of scenario files (default: the shipped ones)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these scenarios (file names without .yaml)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each run's store and drift_scores under DIR",
    )
    args = parser.parse_args(argv)  # fmt: skip
    # Wide enough for the tables when stderr is a file or a pipe (rich assumes 80 there).
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)
    files = sorted(args.scenarios.glob("*.yaml"))
    scenarios = [load_scenario(f) for f in files if not args.only or f.stem in args.only]
    if not scenarios:
        raise SystemExit(f"no scenarios to run in {args.scenarios}")
    # Event time ends at the last full hour: whole windows, changes on window boundaries.
    longest = max(s.run.duration_s or 0.0 for s in scenarios)
    hour = int(time.time()) // 3600 * 3600
    start = dt.datetime.fromtimestamp(hour - math.ceil(longest / 3600) * 3600 - 3600, dt.UTC)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-drift-") as tmp:
        workdir = args.keep or Path(tmp) / "data"
        broker_dir = Path(tmp) / "kafka"
        info = start_broker(broker_dir, free_port(), heap="512m")
        results = []
        try:
            console.print(f"{len(scenarios)} scenarios from {start.isoformat()} ...")
            for scenario in scenarios:
                results.append(run_scenario(info.bootstrap, scenario, start, workdir, console))
        finally:
            stop_broker(broker_dir)
            if args.keep is None:
                shutil.rmtree(workdir, ignore_errors=True)
    summary = report(results, console)
    summary["elapsed_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(summary))
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
