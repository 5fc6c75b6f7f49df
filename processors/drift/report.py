"""An agent's drift for people: a terminal summary and a self-contained HTML report.

The summary reads drift_scores: per signal and comparison, the latest verdict, since when
it has drifted and how much (severity, 1.0 = threshold). The HTML report adds, for each
signal that drifted, the reference and current distributions of its latest drifted
window (recounted from the events with the same summaries the evaluator uses) and its
severity over time. Plots are PNGs embedded as base64, so the file stands alone.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path
from typing import Any

import polars as pl
from rich import box
from rich.console import Console
from rich.text import Text

from agentwatch.clock import utc_now
from agentwatch.durations import parse_duration
from agentwatch.frames import query
from agentwatch.processors.drift import stats
from agentwatch.processors.drift.config import DriftConfig
from agentwatch.processors.drift.evaluate import (
    DRIFT,
    INSUFFICIENT,
    RELEASE,
    parse_period,
)
from agentwatch.processors.drift.metrics import severity_column
from agentwatch.processors.drift.plots import distribution_plot, timeline_plot
from agentwatch.processors.drift.season import seasonal_sum, split_label
from agentwatch.processors.drift.sentences import effect, sentence
from agentwatch.processors.drift.signals import signal_of
from agentwatch.processors.drift.summaries import SummaryCache, bucket_of
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.progress import progress_bar
from agentwatch.terminal import Table, literal

SENTENCES = 10  # drifted signals told in sentences before the table
SIGNAL_WIDTH = 28  # the terminal table's signal column at least (longer names fold)


def load_scores(db: Path, agent_id: str, since: dt.datetime | None) -> pl.DataFrame:
    """The agent's drift_scores rows from ``since`` (default: 7 days before its latest)."""
    con = connect_lake(db)
    try:
        frame = query(
            con,
            "SELECT * FROM drift_scores WHERE agent_id = $agent ORDER BY window_end",
            {"agent": agent_id},
        )
    finally:
        con.close()
    if frame.is_empty():
        return frame
    if since is None:
        latest = frame["window_end"].max()
        assert isinstance(latest, dt.datetime)
        since = latest - dt.timedelta(days=7)
    frame = frame.filter(pl.col("window_end") >= since)
    return frame.with_columns(severity_column(frame))


def _track(frame: pl.DataFrame) -> list[str]:
    return ["signal", "comparison", "dimension", "baseline_key", "candidate_key"]


def with_track(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns that identify one comparison across windows (rolling periods move)."""
    release = pl.col("comparison") == RELEASE
    return frame.with_columns(
        baseline_key=pl.when(release).then(pl.col("baseline")).otherwise(pl.lit("")),
        candidate_key=pl.when(release).then(pl.col("candidate")).otherwise(pl.lit("")),
    )


def summarise(scores: pl.DataFrame) -> pl.DataFrame:
    """One row per signal and comparison: latest verdict, drifting since, peak severity."""
    if scores.is_empty():
        return pl.DataFrame()
    tracked = with_track(scores)
    keys = _track(tracked)
    per_window = tracked.group_by(*keys, "window_end").agg(
        pl.col("severity").max(),
        (pl.col("verdict") == DRIFT).any().alias("drift"),
        (pl.col("verdict") == INSUFFICIENT).all().alias("insufficient"),
        pl.col("test").sort_by("severity", descending=True, nulls_last=True).first(),
        pl.col("n_ref").max(),
        pl.col("n_cur").max(),
    )
    rows = []
    for key, group in per_window.sort("window_end").group_by(keys, maintain_order=True):
        flags = group["drift"].to_list()
        ends = group["window_end"].to_list()
        since = None
        for end, flag in zip(reversed(ends), reversed(flags), strict=True):
            if not flag:
                break
            since = end
        last = group.row(-1, named=True)
        verdict = DRIFT if last["drift"] else (INSUFFICIENT if last["insufficient"] else "ok")
        rows.append(
            dict(zip(keys, key, strict=True))
            | {
                "verdict": verdict,
                "drifting_since": since,
                "first_drift": next((e for e, f in zip(ends, flags, strict=True) if f), None),
                "drift_windows": sum(flags),
                "windows": len(flags),
                "severity": last["severity"],
                "peak_severity": group["severity"].max(),
                "test": last["test"],
                "n_ref": last["n_ref"],
                "n_cur": last["n_cur"],
                "window_end": ends[-1],
            }
        )
    order = {DRIFT: 0, "ok": 1, INSUFFICIENT: 2}
    return pl.DataFrame(rows).sort(
        pl.col("verdict").replace_strict(order, return_dtype=pl.Int32),
        pl.col("drift_windows"),
        "signal",
        descending=[False, True, False],
    )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, dt.datetime) else "-"


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _comparison(row: dict[str, Any]) -> str:
    if row["comparison"] == RELEASE:
        return f"{row['dimension']} {row['baseline_key']} → {row['candidate_key']}"
    return "rolling"


def summary_table(agent_id: str, summary: pl.DataFrame) -> Table:
    table = Table(
        title=f"Drift of {agent_id}",
        title_justify="left",
        title_style="bold",
        caption="severity: 1.0 is the test's threshold; since: start of the current run "
        "of drifted windows (UTC); too few: not enough data for a verdict",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    # Short cells, so that the key columns (signal, comparison) are whole in 100 columns;
    # the HTML report has the test, the peak and the full dates.
    longest = max((len(s) for s in summary["signal"]), default=6)
    for name in ("signal", "comparison", "verdict", "since", "drifted", "severity", "n ref/cur"):
        right = name in ("severity", "n ref/cur", "drifted")
        table.add_column(
            name,
            justify="right" if right else "left",
            no_wrap=name not in ("signal", "comparison"),
            overflow="fold",
            min_width=min(longest, SIGNAL_WIDTH) if name == "signal" else None,
        )
    styles = {DRIFT: "bold red", "ok": "green", INSUFFICIENT: "dim"}
    words = {INSUFFICIENT: "too few"}
    for row in summary.iter_rows(named=True):
        since = row["drifting_since"]
        table.add_row(
            row["signal"],  # tool_error_rate[lookup] is shown as it is, not as a style
            _comparison(row),
            Text(words.get(row["verdict"], row["verdict"]), styles[row["verdict"]]),
            since.strftime("%m-%d %H:%M") if isinstance(since, dt.datetime) else "-",
            f"{row['drift_windows']}/{row['windows']}",
            _num(row["severity"]),
            f"{row['n_ref']:,}/{row['n_cur']:,}",
        )
    return table


def backfill_summary(rows: pl.DataFrame, *, dry_run: bool) -> Table:
    """What a backfill found: per agent and signal that drifted, windows and first one."""
    table = Table(
        title=f"Drift backfill: {rows['window_end'].n_unique() if rows.height else 0} windows, "
        f"{rows.height:,} results" + (" (dry run: nothing written)" if dry_run else ""),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in ("agent", "signal", "comparison", "drifted windows", "first"):
        table.add_column(name, no_wrap=True)
    if rows.is_empty():
        return table
    drifted = (
        rows.filter(pl.col("verdict") == DRIFT)
        .group_by("agent_id", "signal", "comparison")
        .agg(pl.col("window_end").n_unique().alias("windows"), pl.col("window_end").min())
        .sort("window_end", "agent_id", "signal")
    )
    for agent_id, signal, comparison, windows, first in drifted.iter_rows():
        table.add_row(agent_id, signal, comparison, str(windows), _when(first))
    return table


# --------------------------------------------------------------------------- counts


def window_counts(
    cache: SummaryCache, row: dict[str, Any], config: DriftConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The reference and current counts (key, n) behind one drift_scores row."""
    g = config.grain_s
    end = bucket_of(row["window_end"], g)
    where = (pl.col("agent_id") == row["agent_id"]) & (pl.col("environment") == row["environment"])
    where = where & (pl.col("signal") == row["signal"])
    if row["comparison"] == RELEASE:
        lo = end - int(config.release_window.total_seconds()) // g
        cache.ensure(lo, end, detail_from=lo)
        frame = cache.dimension_sum(row["dimension"], lo, end).filter(where)
        return (
            frame.filter(pl.col("value") == row["baseline"]).select("key", "n"),
            frame.filter(pl.col("value") == row["candidate"]).select("key", "n"),
        )
    ref_lo, ref_hi = (bucket_of(t, g) for t in parse_period(row["baseline"]))
    cur_lo, cur_hi = (bucket_of(t, g) for t in parse_period(row["candidate"]))
    cache.ensure(ref_lo, cur_hi, detail_from=cur_hi)
    cycle = split_label(row["baseline"])[1]
    if cycle is not None:
        period = int(parse_duration(cycle).total_seconds()) // g
        ref, _ = seasonal_sum(cache.collapsed, cur_lo, cur_hi, ref_lo, period)
        return ref.filter(where).select("key", "n"), (
            cache.window_sum("report-cur", cur_lo, cur_hi).filter(where).select("key", "n")
        )
    return (
        cache.window_sum("report-ref", ref_lo, ref_hi).filter(where).select("key", "n"),
        cache.window_sum("report-cur", cur_lo, cur_hi).filter(where).select("key", "n"),
    )


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #ddd;
text-align:left}th{background:#f4f4f4}.drift{color:#c00;font-weight:600}.ok{color:#280}
.insufficient_data{color:#999}.plots{display:flex;gap:12px;flex-wrap:wrap}
img{max-width:100%;border:1px solid #eee}section{margin:2em 0}.note{color:#666;font-size:13px}
.told li{margin:.4em 0;font-size:15px}
"""


def render_html(
    agent_id: str,
    summary: pl.DataFrame,
    sections: list[tuple[str, str, str, list[str]]],
    sentences: list[str] | None = None,
) -> str:
    """The page: what changed in plain sentences, then the table, then each drifted
    signal's sentence, plots and statistics."""
    head = ["signal", "comparison", "verdict", "since", "drifted windows", "severity", "peak",
            "test", "n ref", "n cur"]  # fmt: skip
    body = []
    for row in summary.iter_rows(named=True):
        cells = [
            row["signal"], _comparison(row), row["verdict"], _when(row["drifting_since"]),
            f"{row['drift_windows']}/{row['windows']}", _num(row["severity"]),
            _num(row["peak_severity"]), row["test"] or "-", f"{row['n_ref']:,}",
            f"{row['n_cur']:,}",
        ]  # fmt: skip
        tds = "".join(
            f'<td class="{html.escape(row["verdict"])}">{html.escape(str(c))}</td>'
            if i == 2
            else f"<td>{html.escape(str(c))}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f"<tr>{tds}</tr>")
    told = sentences or [f"{agent_id}: no signal is drifting in its latest window."]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Drift report: {html.escape(agent_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Drift report: {html.escape(agent_id)}</h1>",
        "<h2>What changed</h2><ul class='told'>",
        *(f"<li>{html.escape(text)}</li>" for text in told),
        "</ul>",
        "<h2>Every signal</h2>",
        f"<p class='note'>Generated {_when(utc_now())} UTC. Severity 1.0 is a "
        "test's threshold: a distance at its threshold, or an FDR-adjusted p-value at its "
        "level. Rolling comparisons set the current window against the reference period "
        "before it; release comparisons a new value of a dimension against the stable one "
        "over the same period.</p>",
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
        *body,
        "</table>",
    ]
    if not sections:
        parts.append("<p>No signal drifted in this period.</p>")
    for heading, text, statistics, images in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>")
        parts.append(f"<p>{html.escape(text)}</p><div class='plots'>")
        parts.extend(f"<img src='data:image/png;base64,{img}' alt=''>" for img in images)
        parts.append(f"</div><p class='note'>{html.escape(statistics)}</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def wide_console() -> Console:
    """A console of at most 100 columns (100 when the output is not a terminal)."""
    width = Console().width
    return Console(width=min(100, width) if Console().is_terminal else 100)


def build_report(
    db: Path,
    agent_id: str,
    since: dt.datetime | None,
    out: Path | None,
    config: DriftConfig,
    console: Console,
) -> int:
    """Print the sentences and the summary; with ``out``, write the HTML report too.

    1 when there is nothing to report. Recounting each drifted signal's windows and
    drawing its plots takes a while on a long history: a progress bar (or log lines)
    shows it.
    """
    scores = load_scores(db, agent_id, since)
    if scores.is_empty():
        console.print(
            f"No drift results for {literal(agent_id)}: run `agentwatch drift run` or "
            "`agentwatch drift backfill` first, or check --since."
        )
        return 1
    summary = summarise(scores)
    tracked = with_track(scores)
    cache = SummaryCache(db, config, agent_id)
    told = summary.filter(pl.col("verdict") == DRIFT).head(SENTENCES)
    drawn = summary.filter(pl.col("drift_windows") > 0) if out is not None else summary.clear()
    sentences: list[str] = []
    sections = []
    with progress_bar("drift report", told.height + drawn.height) as advance:
        for row in told.iter_rows(named=True):
            latest = _latest_drift(tracked, row)
            ref, cur = window_counts(cache, latest, config)
            change = effect(signal_of(row["signal"]), ref, cur)
            sentences.append(sentence(agent_id, row, change, latest))
            advance(1)
        for row in drawn.iter_rows(named=True):
            sections.append(_section(agent_id, row, tracked, cache, config))
            advance(1)
    for line in sentences or [f"{agent_id}: no signal is drifting in its latest window."]:
        console.print(literal(line))
    console.print()
    console.print(summary_table(agent_id, summary))
    if out is None:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(agent_id, summary, sections, sentences), encoding="utf-8")
    console.print(f"HTML report written to {literal(out)}")
    return 0


def _latest_drift(tracked: pl.DataFrame, row: dict[str, Any]) -> dict[str, Any]:
    """The latest drifted result of ``row``'s comparison (the most severe in its window)."""
    track = tracked.filter(*(pl.col(k).eq_missing(row[k]) for k in _track(tracked)))
    # In the latest window, a windowed test's counts tell the change better than the
    # cumulative test's, whose current period is its whole horizon.
    cumulative = pl.col("test").is_in([t.name for t in stats.TESTS.values() if t.steps])
    return (
        track.filter(pl.col("verdict") == DRIFT)
        .sort(pl.col("window_end"), cumulative, pl.col("severity"), descending=[True, False, True])
        .row(0, named=True)
    )


def _section(
    agent_id: str,
    row: dict[str, Any],
    tracked: pl.DataFrame,
    cache: SummaryCache,
    config: DriftConfig,
) -> tuple[str, str, str, list[str]]:
    """Heading, plain sentence, statistics and plots of one drifted signal."""
    signal = signal_of(row["signal"])
    track = tracked.filter(*(pl.col(k).eq_missing(row[k]) for k in _track(tracked)))
    latest = _latest_drift(tracked, row)
    ref, cur = window_counts(cache, latest, config)
    label = _comparison(row)
    names = ("reference period", "current window")
    if row["comparison"] == RELEASE:
        names = (f"{latest['baseline']} (stable)", f"{latest['candidate']} (new)")
    images = [
        distribution_plot(
            signal, ref, cur,
            f"{signal.name}: {names[0]} vs {names[1]}, to {_when(latest['window_end'])}",
            names,
        ),
        timeline_plot(track, f"{signal.name} ({label}): severity over time"),
    ]  # fmt: skip
    told = sentence(agent_id, row, effect(signal, ref, cur), latest)
    statistics = (
        f"{label}: reference {latest['baseline']}, current {latest['candidate']}. "
        f"Latest drift by {latest['test']}: statistic {_num(latest['statistic'], 4)}, "
        f"score {_num(latest['score'], 4)} against threshold {latest['threshold']}. "
        f"Drifted in {row['drift_windows']} of {row['windows']} windows, first at "
        f"{_when(row['first_drift'])}."
    )
    return f"{row['signal']} · {label}", told, statistics, images
