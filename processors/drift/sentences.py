"""Drift in plain sentences: what changed, by how much in the signal's own units, since when.

The report and the terminal open with these, the statistics below for those who want
them: ``hr-assistant-1: latency of successful LLM calls changed (p95 4.1 s -> 8.6 s,
2.1x) since 2026-11-06 01:00 UTC, drifting in 3 of the last 12 windows; very strong
evidence (adjusted p-value 4e-09, alarm at 0.01).``
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from agentwatch.processors.drift import stats
from agentwatch.processors.drift.compare import RELEASE
from agentwatch.processors.drift.signals import Signal, signal_of


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, dt.datetime) else "-"


def _quantile(signal: Signal, counts: pl.DataFrame, q: float) -> float | None:
    if counts.is_empty() or signal.bins is None:
        return None
    ordered = counts.with_columns(i=pl.col("key").cast(pl.Int64, strict=False)).drop_nulls("i")
    ordered = ordered.sort("i")
    n = ordered["n"].to_numpy().astype(np.float64)
    if n.sum() <= 0:
        return None
    at = int(np.searchsorted(np.cumsum(n) / n.sum(), q))
    return float(signal.bins.values(ordered["i"].to_numpy())[min(at, n.size - 1)])


def _amount(value: float, unit: str) -> str:
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:.1f} s"
    if unit == "USD":
        return f"${value:.4f}"
    return f"{value:,.0f} {unit}" if value >= 10 else f"{value:.2g} {unit}"


def _mix(frame: pl.DataFrame) -> dict[str, float]:
    total = float(frame["n"].sum()) if frame.height else 0.0
    return {k: float(n) / total for k, n in frame.iter_rows()} if total else {}


def effect(signal: Signal, ref: pl.DataFrame, cur: pl.DataFrame) -> str | None:
    """The change in the signal's own units, e.g. ``p95 4.1 s -> 8.6 s (2.1x)``."""
    if signal.kind == "numeric":
        a, b = _quantile(signal, ref, 0.95), _quantile(signal, cur, 0.95)
        if a is None or b is None:
            return None
        ratio = f", {b / a:.1f}x" if a > 0 else ""
        return f"p95 {_amount(a, signal.unit)} -> {_amount(b, signal.unit)}{ratio}"
    before, after = _mix(ref), _mix(cur)
    if signal.kind == "rate":
        return f"{100 * before.get('true', 0.0):.1f}% -> {100 * after.get('true', 0.0):.1f}%"
    keys = set(before) | set(after)
    if not keys:
        return None
    key = max(keys, key=lambda k: abs(after.get(k, 0.0) - before.get(k, 0.0)))
    return f"{key} {100 * before.get(key, 0.0):.0f}% -> {100 * after.get(key, 0.0):.0f}% of the mix"


def certainty(latest: dict[str, Any]) -> str:
    """How sure the latest drifted result is, in words, its figure in brackets."""
    score, threshold, name = latest.get("score"), latest.get("threshold"), latest.get("test")
    if score is None or threshold is None or name not in stats.TESTS:
        return ""
    if stats.get(name).p_valued:
        words = "very strong evidence" if score <= threshold / 100 else "strong evidence"
        if score > threshold / 10:
            words = "evidence just past the alarm level"
        return f"{words} (adjusted p-value {score:.1g}, alarm at {threshold:g})"
    words = "far past its alarm level" if score >= 2 * threshold else "past its alarm level"
    return f"a change {words} ({name} {score:.3g}, alarm at {threshold:g})"


def sentence(
    agent_id: str, row: dict[str, Any], change: str | None, latest: dict[str, Any] | None = None
) -> str:
    """One plain sentence for a drifted signal: what changed, for which agent, version or
    model, by how much in its own units, since when, how steadily and how sure."""
    signal = signal_of(row["signal"])
    who = agent_id
    if row["comparison"] == RELEASE:
        who += f", {row['dimension']} {row['candidate_key']} against {row['baseline_key']}"
    what = signal.description
    subject = row["signal"].partition("[")[2].rstrip("]")
    if subject:
        what += f" ({subject})"
    how = f" ({change})" if change else ""
    since = row["drifting_since"] or row["first_drift"]
    sure = certainty(latest) if latest is not None else ""
    return (
        f"{who}: {what} changed{how} since {_when(since)} UTC, drifting in "
        f"{row['drift_windows']} of the last {row['windows']} windows"
        + (f"; {sure}." if sure else ".")
    )
