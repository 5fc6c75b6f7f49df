"""The drift report's plots: a signal's reference and current distributions, and its
severity over time, as base64 PNGs the HTML page embeds (so the file stands alone)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.figure import Figure

from agentwatch.processors.drift.evaluate import DRIFT
from agentwatch.processors.drift.signals import Signal

REF_COLOR = "#8c8c8c"
CUR_COLOR = "#d62728"
TOP_CATEGORIES = 10


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def distribution_plot(
    signal: Signal,
    ref: pl.DataFrame,
    cur: pl.DataFrame,
    title: str,
    names: tuple[str, str] = ("reference", "current"),
) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    n_ref, n_cur = int(ref["n"].sum()), int(cur["n"].sum())
    labels = (f"{names[0]} (n={n_ref:,})", f"{names[1]} (n={n_cur:,})")
    if signal.kind == "numeric":
        _numeric_plot(ax, signal, ref, cur)
    elif signal.kind == "categorical":
        _categorical_plot(ax, ref, cur)
    else:
        _rate_plot(ax, ref, cur, labels)
    ax.set_title(title, fontsize=10, loc="left")
    if signal.kind != "rate":
        ax.legend(labels, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _shares(frame: pl.DataFrame, keys: list[str]) -> np.ndarray:
    lookup = dict(frame.select("key", "n").iter_rows())
    counts = np.array([float(lookup.get(k, 0)) for k in keys])
    total = counts.sum()
    return counts / total if total else counts


def _numeric_plot(ax: Any, signal: Signal, ref: pl.DataFrame, cur: pl.DataFrame) -> None:
    assert signal.bins is not None
    used = sorted({int(k) for k in (*ref["key"].to_list(), *cur["key"].to_list())})
    lo, hi = max(used[0] - 1, 0), min(used[-1] + 2, signal.bins.count)
    keys = [str(i) for i in range(lo, hi)]
    edges = signal.bins.edges()[lo : hi + 1]
    r, c = _shares(ref, keys), _shares(cur, keys)
    ax.stairs(r, edges, fill=True, color=REF_COLOR, alpha=0.45)
    ax.stairs(c, edges, color=CUR_COLOR, linewidth=1.6)
    centres = signal.bins.values(np.arange(lo, hi))
    for shares, color in ((r, REF_COLOR), (c, CUR_COLOR)):
        if shares.sum() > 0:
            median = centres[int(np.searchsorted(np.cumsum(shares), 0.5))]
            ax.axvline(median, color=color, linestyle="--", linewidth=1)
    if signal.bins.scale == "log":
        ax.set_xscale("log")
    ax.set_xlabel(f"{signal.name} ({signal.unit}); dashed: medians", fontsize=8)
    ax.set_ylabel("share of observations", fontsize=8)


def _categorical_plot(ax: Any, ref: pl.DataFrame, cur: pl.DataFrame) -> None:
    keys = sorted(set(ref["key"].to_list()) | set(cur["key"].to_list()))
    r, c = _shares(ref, keys), _shares(cur, keys)
    order = np.argsort(-np.maximum(r, c))[:TOP_CATEGORIES]
    labels = [keys[i] for i in order]
    y = np.arange(len(labels))
    ax.barh(y - 0.2, r[order], height=0.4, color=REF_COLOR)
    ax.barh(y + 0.2, c[order], height=0.4, color=CUR_COLOR)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share", fontsize=8)


def _rate_plot(ax: Any, ref: pl.DataFrame, cur: pl.DataFrame, labels: tuple[str, str]) -> None:
    values, errors = [], []
    for frame in (ref, cur):
        lookup = dict(frame.select("key", "n").iter_rows())
        s, n = float(lookup.get("true", 0)), float(lookup.get("true", 0) + lookup.get("false", 0))
        p = s / n if n else 0.0
        values.append(p)
        errors.append(1.96 * math.sqrt(p * (1 - p) / n) if n else 0.0)
    bars = ax.bar([0, 1], values, yerr=errors, color=[REF_COLOR, CUR_COLOR], capsize=6)
    for bar, p, err in zip(bars, values, errors, strict=True):
        ax.annotate(f"{p:.1%}", (bar.get_x() + bar.get_width() / 2, p + err), ha="center",
                    va="bottom", fontsize=9, xytext=(0, 4), textcoords="offset points")  # fmt: skip
    ax.set_xticks([0, 1], list(labels), fontsize=8)
    ax.set_ylabel("rate (95% interval)", fontsize=8)


def timeline_plot(track: pl.DataFrame, title: str) -> str:
    """Severity per window end, the threshold at 1, drifted windows in red."""
    per_window = (
        track.group_by("window_end")
        .agg(pl.col("severity").max(), (pl.col("verdict") == DRIFT).any().alias("drift"))
        .sort("window_end")
    )
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    x = per_window["window_end"].to_list()
    y = [max(v, 0.01) if v is not None else np.nan for v in per_window["severity"].to_list()]
    ax.plot(x, y, color="#1f77b4", linewidth=1.2, marker=".", markersize=4)
    hits = [(a, b) for a, b, d in zip(x, y, per_window["drift"].to_list(), strict=True) if d]
    if hits:
        hit_x, hit_y = zip(*hits, strict=True)
        ax.scatter(hit_x, hit_y, color=CUR_COLOR, zorder=3, s=18, label="drift")
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="threshold")
    ax.set_yscale("log")
    ax.set_ylabel("severity (1 = threshold)", fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _png(fig)
