"""The ``drift`` command: evaluate continuously, backfill past windows, report an agent.

``run`` evaluates the window that ended ``settle`` ago each time a new one is due, writes
its rows to drift_scores and serves the gauges on ``--metrics-port``. ``backfill``
evaluates every window end of an event-time range (scenarios and the bench write past
timestamps). ``report`` prints an agent's drift and writes an HTML report with plots.
SIGTERM or Ctrl-C stops ``run`` and ``backfill`` at once, a running query too, with one
line: ``run``, a service, then exits 0 as ``process`` and ``alerts run`` do; ``run --once``
and ``backfill``, jobs left unfinished, exit 143 or 130, as ``agentwatch sql`` does.

The thresholds file is ``--drift-config`` (not ``--config``, which names the TOML
settings file of every command); ``[drift] config`` in that file sets a default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import FrameType

import polars as pl
from prometheus_client import CollectorRegistry, start_http_server

from agentwatch.clock import Clock, utc_now
from agentwatch.commands.options import (
    add_db_option,
    add_metrics_options,
    duration_help,
    positive_seconds,
)
from agentwatch.durations import (
    TIME_EXAMPLES,
    duration_argument,
    format_duration,
    is_relative,
    parse_time,
    time_argument,
)
from agentwatch.processors.drift.config import DriftConfig, load_config
from agentwatch.processors.drift.evaluate import DEFAULT_STEP, DRIFT, DriftEvaluator, backfill
from agentwatch.processors.drift.metrics import DriftCollector
from agentwatch.processors.store.lake import LakeStore
from agentwatch.settings import Settings

log = logging.getLogger(__name__)


def time_text(text: str) -> str:
    """An argparse ``type``: a time, checked now and resolved when the data is known."""
    time_argument(text)
    return text


def run_loop(
    db: Path,
    config: DriftConfig,
    collector: DriftCollector,
    *,
    interval_s: float,
    once: bool,
    stop: threading.Event,
    clock: Clock = utc_now,
    interruptible: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> int:
    """Evaluate each window end as it becomes due, catching up on any missed ones.

    Each evaluation runs inside ``interruptible()``; a window's rows, once evaluated, are
    written in full, and ``stop`` ends the loop before the next window or while waiting.
    """
    evaluator = DriftEvaluator(db, config, clock=clock)
    store = LakeStore(db)
    store.prepare()
    last: dt.datetime | None = None
    while not stop.is_set():
        due = evaluator.align(clock() - config.settle)
        ends = [due] if last is None else _between(last, due, config.grain)
        for end in ends:
            if stop.is_set():
                return 0
            with interruptible():
                rows = evaluator.evaluate(end)
            if rows.height:
                store.append_log("drift_scores", rows)
            collector.update(rows)
            drifted = rows.filter(pl.col("verdict") == DRIFT)
            log.info(
                "drift window evaluated",
                extra={
                    "window_end": end.isoformat(),
                    "results": rows.height,
                    "drift": drifted.height,
                    "signals": sorted(
                        {f"{a}:{s}" for a, s in drifted.select("agent_id", "signal").iter_rows()}
                    ),
                },
            )
            last = end
        if once or stop.wait(interval_s):
            return 0
    return 0


def _between(last: dt.datetime, due: dt.datetime, grain: dt.timedelta) -> list[dt.datetime]:
    out = []
    end = last + grain
    while end <= due:
        out.append(end)
        end += grain
    return out


class Stop:
    """SIGINT and SIGTERM, where Python's default handler is theirs, stop a drift command.

    While ``raising``, the handler raises ``QueryInterrupted`` where the command is: DuckDB
    interrupts the running query for it (and may raise its own error instead). Otherwise
    it sets ``event``, for a loop to end at its next look; a second signal raises too.
    """

    def __init__(self, *, raising: bool) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self.raising = raising

    @contextmanager
    def handling(self) -> Iterator[None]:
        """The handlers in place while the block runs (on the main thread only)."""
        from agentwatch.processors.query.sql import STOP_SIGNALS

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for signum, handler in previous.items():
            if handler in (signal.default_int_handler, signal.SIG_DFL):
                signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Raising while the block runs."""
        raising, self.raising = self.raising, True
        try:
            yield
        finally:
            self.raising = raising

    def stopped(self, command: str) -> int:
        """After a stop: one line on stderr; 128 + the signal's number is the exit code."""
        assert self.signum is not None
        print(f"{command}: stopped by {signal.Signals(self.signum).name}", file=sys.stderr)
        return 128 + self.signum

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        from agentwatch.processors.query.sql import QueryInterrupted

        again = self.event.is_set()
        self.signum = signum
        self.event.set()
        if self.raising or again:  # a second signal stops a write or a wait too
            raise QueryInterrupted(signum)


# --------------------------------------------------------------------------- command


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "Compare each agent's current window with its trailing reference period, and "
        "new versions, prompts and models with the stable ones, on latency, tokens, "
        "cost, tool use, outcomes and safety signals. Results go to the drift_scores "
        "table and to Prometheus. See docs/drift.md."
    )
    p = parser
    actions = p.add_subparsers(dest="drift_action", metavar="ACTION", required=True)
    default_cfg = settings.value("drift", "config")

    def common(q: argparse.ArgumentParser) -> None:
        add_db_option(q, settings)
        q.add_argument(
            "--drift-config",
            type=Path,
            metavar="FILE",
            default=Path(default_cfg) if default_cfg else None,
            help="drift settings YAML merged over the built-in ones: windows, tests, "
            "thresholds per agent and signal ([drift] config; default: built-in)",
        )

    run = actions.add_parser(
        "run",
        help="evaluate drift continuously at now",
        description=(
            "Evaluate the latest complete window (ended at least `settle` ago) each time "
            "one is due, append its results to drift_scores and serve the gauges."
        ),
    )
    common(run)
    run.add_argument(
        "--interval", type=positive_seconds, default=settings.value("drift", "interval"),
        metavar="DURATION", help=duration_help(
            "time between checks for a due window", settings.value("drift", "interval")),
    )  # fmt: skip
    run.add_argument("--once", action="store_true", help="evaluate the latest window and exit")
    add_metrics_options(run, settings, "drift", "the agentwatch_drift_* gauges")
    run.set_defaults(handler=_run)

    fill = actions.add_parser(
        "backfill",
        help="evaluate every window end in a past event-time range",
        description=(
            "Evaluate each window end from --from to --to, --step apart, and append the "
            "results to drift_scores. For simulated or replayed history."
        ),
    )
    common(fill)
    fill.add_argument("--from", dest="start", type=time_text, required=True, metavar="T",
                      help=f"first window end: {TIME_EXAMPLES}; a relative range "
                      "that holds no events is taken relative to the data's end")  # fmt: skip
    fill.add_argument("--to", dest="end", type=time_text, default="now",
                      metavar="T", help="last window end (default now)")  # fmt: skip
    fill.add_argument("--step", type=duration_argument, default=DEFAULT_STEP,
                      help="between window ends, a multiple of the grain "
                      f"(default {format_duration(DEFAULT_STEP)})")  # fmt: skip
    fill.add_argument("--dry-run", action="store_true", help="print the summary, write nothing")
    fill.set_defaults(handler=_backfill)

    rep = actions.add_parser(
        "report",
        help="summarise an agent's drift in the terminal and as an HTML report",
        description=(
            "Print which signals of the agent drifted, how much and since when; with --out, "
            "also write a self-contained HTML report with reference vs current "
            "distributions and scores over time."
        ),
    )
    common(rep)
    rep.add_argument("--agent", required=True, help="agent_id")
    rep.add_argument("--since", type=time_argument, default=None, metavar="T",
                     help="first window end shown (default: 7d before the latest)")  # fmt: skip
    rep.add_argument("--out", type=Path, metavar="FILE.html", help="write the HTML report here")
    rep.set_defaults(handler=_report)


def _check_db(db: Path, action: str) -> bool:
    if not db.exists():
        print(
            f"agentwatch drift {action}: {db} does not exist: run `agentwatch process --db "
            f"{db}` (or `make demo`) first",
            file=sys.stderr,
        )
        return False
    return True


def _run(args: argparse.Namespace) -> int:
    if not _check_db(args.db, "run"):
        return 1
    config = load_config(args.drift_config)
    registry = CollectorRegistry()
    collector = DriftCollector()
    registry.register(collector)
    server = None
    if args.metrics_port:
        server, _ = start_http_server(args.metrics_port, args.metrics_host, registry)
    stop = Stop(raising=False)
    code = 0
    try:
        with stop.handling():
            code = run_loop(
                args.db, config, collector, interval_s=args.interval, once=args.once,
                stop=stop.event, interruptible=stop.interruptible,
            )  # fmt: skip
    except (KeyboardInterrupt, Exception):
        if stop.signum is None:
            raise
    finally:
        if server is not None:
            server.shutdown()
    if stop.signum is None:
        return code
    stopped = stop.stopped("agentwatch drift run")  # its one line
    # A service stopped as asked exits 0, as `process` and `alerts run` do; --once, a job
    # left unfinished, says by which signal.
    return stopped if args.once else 0


def _backfill(args: argparse.Namespace) -> int:
    if not _check_db(args.db, "backfill"):
        return 1
    from agentwatch.commands.timerange import EmptyRange, resolve
    from agentwatch.processors.drift.evaluate import window_ends
    from agentwatch.progress import progress_bar

    config = load_config(args.drift_config)
    now = utc_now()
    relative = is_relative(args.start) and is_relative(args.end)
    stop = Stop(raising=True)
    try:
        with stop.handling():
            start, end = resolve(
                args.db, parse_time(args.start, now), parse_time(args.end, now), relative,
                "backfill",
            )  # fmt: skip
            start = _from_the_data(args.db, start, args.step)
            total = len(window_ends(start, end, args.step, config))
            with progress_bar("drift backfill", total) as advance:
                rows = backfill(
                    args.db, start, end, args.step, config, write=not args.dry_run,
                    progress=advance,
                )  # fmt: skip
    except (KeyboardInterrupt, Exception) as exc:
        if stop.signum is not None:
            return stop.stopped("agentwatch drift backfill")
        if not isinstance(exc, EmptyRange | ValueError):
            raise
        print(f"agentwatch drift backfill: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, EmptyRange) else 2
    from agentwatch.processors.drift.report import backfill_summary, wide_console

    wide_console().print(backfill_summary(rows, dry_run=args.dry_run))
    return 0


def _from_the_data(db: Path, start: dt.datetime, step: dt.timedelta) -> dt.datetime:
    """``start`` moved on by whole steps to the last window end at or before the first
    event: the windows that end before any event hold none and give no rows, and stepping
    through years of them one by one would take hours."""
    from agentwatch.processors.drift.summaries import data_bounds

    bounds = data_bounds(db)
    if bounds is None or step <= dt.timedelta(0) or start >= bounds[0]:
        return start
    return start + (bounds[0] - start) // step * step


def _report(args: argparse.Namespace) -> int:
    if not _check_db(args.db, "report"):
        return 1
    from agentwatch.processors.drift.report import build_report, wide_console

    config = load_config(args.drift_config)
    return build_report(args.db, args.agent, args.since, args.out, config, wide_console())
