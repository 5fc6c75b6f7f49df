"""A ``Snapshot`` drawn as PNG images and one self-contained HTML page.

Written for a reader who has never seen Grafana: every picture carries its title, a
sentence on what it shows, values in their units ($, %, s, per minute) and, where a
number is judged, the same green/yellow/red verdict and warning lines as the dashboard.
Figures are drawn with matplotlib's object API (no pyplot state), so rendering is safe
in a server or a test.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import FuncFormatter

from agentwatch.clock import utc_now
from agentwatch.dashboards.panels import (
    COUNT,
    PER_MINUTE,
    PER_SECOND,
    RATIO,
    SECONDS,
    USD,
    PanelSpec,
    label_title,
)
from agentwatch.dashboards.snapshot import Line, Snapshot

# Grafana's verdict colours, and softer ones for a judged tile's background.
COLORS: Final = {"green": "#1b873f", "yellow": "#b7791f", "red": "#c53030", "blue": "#2b6cb0"}
TILE_BACKGROUNDS: Final = {
    "green": "#e6f4ea", "yellow": "#fdf3dc", "red": "#fde8e8", "blue": "#f1f5fb",
}  # fmt: skip
# Series whose meaning has a natural colour keep it in every picture.
SERIES_COLORS: Final = {
    "resolved": "#1b873f", "escalated": "#dd6b20", "abandoned": "#a0aec0", "failed": "#c53030",
    "violations": "#dd6b20", "blocked actions": "#6b46c1", "p50": "#63b3ed", "p95": "#2b6cb0",
    "containment": "#2b6cb0",
}  # fmt: skip
# Stacking order, bottom first, for outcomes that have a natural order.
STACK_ORDER: Final = {"resolved": 0, "escalated": 1, "abandoned": 2, "failed": 3}
PALETTE: Final = (
    "#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#718096",
    "#e53e3e", "#3182ce",
)  # fmt: skip
INK: Final = "#1a202c"
MUTED: Final = "#4a5568"
DPI: Final = 150

# --------------------------------------------------------------------------- numbers


def format_value(value: float | None, unit: str, decimals: int | None = None) -> str:
    """A value as a reader expects it: $1,234.50, 87.5%, 2.31 s, 1.2k/min."""
    if value is None or not math.isfinite(value):
        return "n/a"
    value = float(value)
    if unit == RATIO:
        percent = value * 100
        places = decimals if decimals is not None else (0 if percent.is_integer() else 1)
        return f"{percent:.{places}f}%"
    if unit == USD:
        places = decimals if decimals is not None else (2 if abs(value) < 1000 else 0)
        if 0 < abs(value) < 0.01 and decimals is None:
            places = 4
        return f"${value:,.{places}f}"
    if unit == SECONDS:
        if abs(value) < 1:
            return f"{value * 1000:.0f} ms"
        if abs(value) >= 120:
            return f"{value / 60:.1f} min"
        places = decimals if decimals is not None else (0 if value.is_integer() else 2)
        return f"{value:.{places}f} s"
    suffix = {PER_MINUTE: "/min", PER_SECOND: "/s"}.get(unit, "")
    return _short(value, decimals) + suffix


def _short(value: float, decimals: int | None) -> str:
    for bound, scale, letter in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e5, 1e3, "k")):
        if abs(value) >= bound:
            return f"{value / scale:.1f}{letter}"
    if decimals is not None:
        return f"{value:,.{decimals}f}"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.2f}"


def _axis_formatter(unit: str) -> FuncFormatter:
    def fmt(value: float, _pos: int | None) -> str:
        if unit == RATIO:
            return f"{value * 100:.0f}%"
        if unit == USD:
            return f"${value:,.0f}" if abs(value) >= 10 or value == 0 else f"${value:.2f}"
        if unit == SECONDS:
            return f"{value:g} s"
        return _short(value, None if value.is_integer() else 1)

    return FuncFormatter(fmt)


# --------------------------------------------------------------------------- pictures


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return path


def _window_text(snap: Snapshot) -> str:
    start, end = snap.window.start, snap.window.end
    same_day = start.date() == end.date()
    left = start.strftime("%H:%M" if same_day else "%d %b %H:%M")
    return f"{left} to {end.strftime('%d %b %Y %H:%M')} UTC"


def _span_text(snap: Snapshot) -> str:
    minutes = snap.window.seconds / 60
    if minutes < 120:
        return f"last {minutes:.0f} min"
    hours = minutes / 60
    return f"last {hours:.3g} h" if hours < 48 else f"last {hours / 24:.3g} days"


def headline(snap: Snapshot, panels: Sequence[PanelSpec], path: Path) -> Path:
    """The 'at a glance' numbers as tiles, judged ones coloured by their verdict."""
    columns = 4
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(12, 1.9 * rows + 0.7))
    fig.text(0.012, 0.97, "Fleet at a glance", fontsize=15, weight="bold", color=INK, va="top")
    fig.text(0.988, 0.97, _window_text(snap), fontsize=9, color=MUTED, va="top", ha="right")
    top = 1 - 0.7 / (1.9 * rows + 0.7)
    for i, panel in enumerate(panels):
        r, c = divmod(i, columns)
        height = top / rows
        ax = fig.add_axes((c / columns + 0.006, top - (r + 1) * height + 0.02,
                           1 / columns - 0.012, height - 0.04))  # fmt: skip
        _tile(ax, snap, panel)
    return _save(fig, path)


def _tile(ax: Axes, snap: Snapshot, panel: PanelSpec) -> None:
    value = snap.stats.get(panel.key)
    graded = panel.thresholds.graded and value is not None
    verdict = panel.thresholds.color(value) if graded and value is not None else "blue"
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.add_patch(FancyBboxPatch(
        (0.01, 0.02), 0.98, 0.96, boxstyle="round,pad=0,rounding_size=0.06",
        facecolor=TILE_BACKGROUNDS[verdict], edgecolor=COLORS[verdict] if graded else "#cbd5e0",
        linewidth=1.5,
    ))  # fmt: skip
    ax.text(0.07, 0.8, panel.title, fontsize=10.5, color=MUTED, weight="bold", va="center")
    text = format_value(value, panel.unit, panel.decimals)
    if value is None and panel.no_value == "0":
        text = format_value(0.0, panel.unit, panel.decimals)
    ax.text(0.07, 0.44, text, fontsize=24, weight="bold", color=COLORS[verdict], va="center")
    caption = "today (UTC)" if panel.today else _span_text(snap)
    if panel.key == "budget_used":
        caption = f"of {format_value(snap.budget_usd, USD, 0)} a day, today (UTC)"
    if graded:
        caption += f" · {_verdict_word(verdict)}"
    ax.text(0.07, 0.14, caption, fontsize=8.5, color=MUTED, va="center")


def _verdict_word(color: str) -> str:
    return {"green": "good", "yellow": "watch", "red": "act"}.get(color, "")


def trend(snap: Snapshot, panel: PanelSpec, path: Path) -> Path:
    """One trend: lines (stacked areas for a total made of parts) and warning levels."""
    lines = snap.trends.get(panel.key, [])
    fig = Figure(figsize=(10, 4.2))
    fig.text(0.012, 0.965, panel.title, fontsize=14, weight="bold", color=INK, va="top")
    wrapped = "\n".join(textwrap.wrap(panel.description, 130))
    fig.text(0.012, 0.895, wrapped, fontsize=9, color=MUTED, va="top")
    ax = fig.add_axes((0.07, 0.12, 0.72, 0.66 if "\n" in wrapped else 0.7))
    ax.yaxis.set_major_formatter(_axis_formatter(panel.unit))
    _time_axis(ax, snap)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e2e8f0")
    ax.set_axisbelow(True)
    ax.tick_params(colors=MUTED, labelsize=8.5)
    if not lines:
        ax.text(0.5, 0.5, "no data in this window", transform=ax.transAxes, ha="center",
                color=MUTED, fontsize=11)  # fmt: skip
    elif panel.stack:
        _stacked(ax, lines)
    else:
        for i, line in enumerate(lines):
            ax.plot(_epoch(line.times), line.values, color=_color(line.label, i),
                    linewidth=1.8, label=line.label)  # fmt: skip
        ax.legend(**_LEGEND)
    _threshold_lines(ax, panel, lines)
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title(_unit_caption(panel.unit))
    return _save(fig, path)


# Tick spacings a reader expects on a time axis, in seconds.
_TICK_STEPS: Final = (
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip


def _epoch(times: Sequence[dt.datetime]) -> list[float]:
    return [t.timestamp() for t in times]


def _time_axis(ax: Axes, snap: Snapshot) -> None:
    """Ticks at round UTC times (every 15 min, 1 h, 6 h...), at most eight of them."""
    start, end = snap.window.start.timestamp(), snap.window.end.timestamp()
    step = next((s for s in _TICK_STEPS if (end - start) / s <= 8), _TICK_STEPS[-1])
    first = math.ceil(start / step) * step
    ticks = [float(t) for t in range(int(first), int(end) + 1, step)]
    daily = snap.window.seconds > 86400
    ax.set_xticks(ticks, [
        dt.datetime.fromtimestamp(t, dt.UTC).strftime("%d %b %H:%M" if daily else "%H:%M")
        for t in ticks
    ])  # fmt: skip
    ax.set_xlim(start, end)


def _stacked(ax: Axes, lines: Sequence[Line]) -> None:
    """Stack series on a shared time axis (a missing point counts as zero), the largest
    or best (resolved) at the bottom, and list the legend top to bottom like the areas."""
    lines = sorted(lines, key=lambda line: (STACK_ORDER.get(line.label, 99), -sum(line.values)))
    times = sorted({t for line in lines for t in line.times})
    values = [[dict(zip(line.times, line.values, strict=True)).get(t, 0.0) for t in times]
              for line in lines]  # fmt: skip
    colors = [_color(line.label, i) for i, line in enumerate(lines)]
    ax.stackplot(_epoch(times), values, labels=[line.label for line in lines], colors=colors,
                 alpha=0.85)  # fmt: skip
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], **_LEGEND)


_LEGEND: Final[dict[str, Any]] = {
    "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, "fontsize": 8.5,
    "title_fontsize": 8.5,
}  # fmt: skip


def _threshold_lines(ax: Axes, panel: PanelSpec, lines: Sequence[Line]) -> None:
    if not panel.thresholds.graded:
        ax.set_ylim(bottom=0)
        return
    top = max((max(line.values) for line in lines if line.values), default=0.0)
    for bound, color in panel.thresholds.steps:
        ax.axhline(bound, color=COLORS[color], linestyle="--", linewidth=1.2, alpha=0.9)
        ax.annotate(format_value(bound, panel.unit), (1.0, bound),
                    xycoords=("axes fraction", "data"), xytext=(-4, 3),
                    textcoords="offset points", ha="right", fontsize=8,
                    color=COLORS[color])  # fmt: skip
        top = max(top, bound)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)


def _unit_caption(unit: str) -> str:
    return {
        PER_MINUTE: "per minute", PER_SECOND: "per second", USD: "USD per hour",
        SECONDS: "seconds", RATIO: "share", COUNT: "",
    }.get(unit, "")  # fmt: skip


def _color(label: str, index: int) -> str:
    return SERIES_COLORS.get(label, PALETTE[index % len(PALETTE)])


def agents_table(snap: Snapshot, panel: PanelSpec, path: Path) -> Path:
    """The per-agent table as a picture, judged cells coloured like the dashboard's."""
    header, cells, colors = _table_cells(snap, panel)
    fig = Figure(figsize=(12, 0.8 + 0.3 * (len(cells) + 1)))
    fig.text(0.012, 1 - 0.25 / fig.get_figheight(), panel.title, fontsize=14, weight="bold",
             color=INK, va="top")  # fmt: skip
    fig.text(0.988, 1 - 0.3 / fig.get_figheight(), f"{_span_text(snap)} · {_window_text(snap)}",
             fontsize=9, color=MUTED, va="top", ha="right")  # fmt: skip
    ax = fig.add_axes((0.01, 0.02, 0.98, 1 - 0.8 / fig.get_figheight()))
    ax.set_axis_off()
    if not cells:
        ax.text(0.5, 0.5, "no agents reported in this window", ha="center", color=MUTED)
        return _save(fig, path)
    drawn = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left",
                     colLoc="left")  # fmt: skip
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(9.5)
    drawn.auto_set_column_width(list(range(len(header))))
    drawn.scale(1, 1.35)
    for (r, c), cell in drawn.get_celld().items():
        cell.set_edgecolor("#e2e8f0")
        if r == 0:
            cell.set_text_props(weight="bold", color=INK)
            cell.set_facecolor("#f7fafc")
        else:
            cell.set_text_props(color=COLORS.get(colors[r - 1][c], INK))
    return _save(fig, path)


def _table_cells(
    snap: Snapshot, panel: PanelSpec
) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Header, formatted cells, and each cell's verdict colour ('' for none)."""
    header = [*map(label_title, panel.row_labels), *(q.column for q in panel.queries)]
    cells, colors = [], []
    for row in snap.table:
        texts = [str(row.get(label, "")) for label in panel.row_labels]
        tints = [""] * len(panel.row_labels)
        for query in panel.queries:
            value = row.get(query.column)
            texts.append(format_value(value, query.unit, query.decimals))
            levels = query.thresholds
            tints.append(levels.color(value) if levels is not None and value is not None else "")
        cells.append(texts)
        colors.append(tints)
    return header, cells, colors


# --------------------------------------------------------------------------- the page


def pictures_count() -> int:
    """Pictures a report draws (headline, each trend, the agents table): its progress."""
    return len(Snapshot.panels()[1]) + 2


def write_report(
    snap: Snapshot, out: Path, progress: Callable[[int], None] = lambda n: None
) -> list[Path]:
    """Every picture plus ``index.html`` (pictures embedded) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stats, trends, agents = Snapshot.panels()
    pictures = [headline(snap, stats, out / "headline.png")]
    progress(1)
    for panel in trends:
        pictures.append(trend(snap, panel, out / f"{panel.key}.png"))
        progress(1)
    pictures.append(agents_table(snap, agents, out / "agents.png"))
    progress(1)
    page = out / "index.html"
    page.write_text(_page(snap, trends, agents, pictures))
    return [*pictures, page]


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _page(
    snap: Snapshot, trends: Sequence[PanelSpec], agents: PanelSpec, pictures: Sequence[Path]
) -> str:
    # Each picture carries its own title and explanation; the alt text repeats them.
    charts = "\n".join(
        f"<figure>{_img(path, f'{p.title}: {p.description}')}</figure>"
        for p, path in zip(trends, pictures[1 : 1 + len(trends)], strict=True)
    )
    header, cells, colors = _table_cells(snap, agents)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(
            f'<td style="color:{COLORS.get(tint, INK)}">{html.escape(text)}</td>'
            for text, tint in zip(row, tints, strict=True)
        ) + "</tr>"
        for row, tints in zip(cells, colors, strict=True)
    )  # fmt: skip
    generated = utc_now().strftime("%Y-%m-%d %H:%M UTC")
    return _TEMPLATE.format(
        window=html.escape(_window_text(snap)),
        source=html.escape(snap.source),
        generated=generated,
        headline=f"<figure>{_img(pictures[0], 'Fleet at a glance')}</figure>",
        charts=charts,
        table_title=html.escape(agents.title),
        table_text=html.escape(agents.description.split(". Click")[0] + "."),
        head=head,
        body=body or f'<tr><td colspan="{len(header)}">no agents in this window</td></tr>',
    )


_TEMPLATE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>agentwatch fleet overview</title>
<style>
  body {{ font-family: -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1a202c;
         max-width: 1200px; margin: 2rem auto; padding: 0 1rem; }}
  header p, section p {{ color: #4a5568; margin: 0.2rem 0 0.8rem; }}
  h1 {{ margin-bottom: 0.2rem; }}
  h2 {{ margin: 2rem 0 0.2rem; font-size: 1.2rem; }}
  figure {{ margin: 1.5rem 0; }}
  img {{ max-width: 100%; border: 1px solid #e2e8f0; border-radius: 6px; }}
  table {{ border-collapse: collapse; width: 100%; font-size: 0.92rem; }}
  th, td {{ text-align: left; padding: 0.35rem 0.6rem; border-bottom: 1px solid #e2e8f0; }}
  th {{ background: #f7fafc; }}
  footer {{ margin-top: 2rem; color: #718096; font-size: 0.85rem; }}
</style>
</head>
<body>
<header>
<h1>agentwatch fleet overview</h1>
<p>{window} · all agents, environments and versions</p>
</header>
{headline}
<p>Green is good, yellow deserves a look, red needs action. Blue numbers (sessions, spend,
blocked actions) are for information: no value of them is good or bad in itself.</p>
{charts}
<section>
<h2>{table_title}</h2>
<p>{table_text}</p>
<table><thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody></table>
</section>
<footer>Generated {generated} from {source} by <code>agentwatch dashboards snapshot</code>.
The same panels, live and filterable, are on the Grafana dashboard
"agentwatch / Fleet overview".</footer>
</body>
</html>
"""
