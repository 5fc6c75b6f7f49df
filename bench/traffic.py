"""A fast traffic generator for detection cases: a fleet's events as one frame, no broker.

Each agent has a :class:`Profile` (sessions an hour, a daily cycle of traffic and of
latency, escalation, security and per-tool error rates); a case changes an agent's
profile from a given hour on, at once or gradually. Sessions are drawn per hour
(Poisson), their events with numpy, so a week of a fleet is generated in seconds and
written straight into a store's ``events`` segments, as ``agentwatch process`` would.

The daily cycle is a sine over the hour of day peaking at 15:00 UTC: traffic scaled by
``1 + traffic_cycle * sin``, LLM and tool latency by ``1 + latency_cycle * sin``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.processors.store.tables import EVENTS_SCHEMA

TOOLS = ("search_kb", "create_ticket", "lookup_user")
TOOL_SHARE = (0.5, 0.2, 0.3)
TOOL_LATENCY_MS = (120.0, 400.0, 60.0)
MODELS = ("gpt-4o-mini", "gpt-4o")
MODEL_SHARE = (0.6, 0.4)
SECURITY_CATEGORIES = ("prompt_injection", "jailbreak", "data_exfiltration")
INTENTS = ("payslip", "leave", "benefits", "password_reset")
PEAK_HOUR = 15.0


@dataclass(frozen=True)
class Profile:
    """How one agent behaves at a moment."""

    sessions_per_hour: float = 100.0
    traffic_cycle: float = 0.0  # relative amplitude of the daily traffic cycle
    latency_cycle: float = 0.0  # relative amplitude of the daily latency cycle
    llm_latency_ms: float = 900.0
    latency_scale: float = 1.0
    escalation: float = 0.08
    violation: float = 0.01
    security: float = 0.01  # share of sessions with a security event
    security_mix: tuple[float, float, float] = (0.3, 0.3, 0.4)
    tool_errors: tuple[float, float, float] = (0.02, 0.02, 0.02)


@dataclass(frozen=True)
class Change:
    """From ``at_h`` (hours after the start) on, ``agent`` runs ``apply(profile, hours in)``."""

    agent: str
    at_h: float
    apply: Callable[[Profile, float], Profile]


@dataclass(frozen=True)
class Fleet:
    agents: dict[str, Profile]
    changes: Sequence[Change] = field(default_factory=tuple)

    def profile(self, agent: str, hour: float) -> Profile:
        p = self.agents[agent]
        for change in self.changes:
            if change.agent == agent and hour >= change.at_h:
                p = change.apply(p, hour - change.at_h)
        return p


def _cycle(hour_of_day: np.ndarray | float) -> Any:
    return np.sin(2 * math.pi * (np.asarray(hour_of_day) - PEAK_HOUR + 6.0) / 24.0)


def generate(fleet: Fleet, start: dt.datetime, hours: int, seed: int = 0) -> pl.DataFrame:
    """Every event of ``fleet`` over ``hours`` from ``start`` (an hour boundary)."""
    rng = np.random.default_rng(seed)
    frames = []
    for agent in sorted(fleet.agents):
        for hour in range(hours):
            p = fleet.profile(agent, hour + 0.5)
            hod = (start.hour + hour + 0.5) % 24
            rate = p.sessions_per_hour * (1 + p.traffic_cycle * float(_cycle(hod)))
            n = int(rng.poisson(max(rate, 0.0)))
            if n:
                t0 = start.timestamp() + hour * 3600 + np.sort(rng.uniform(0, 3600, n))
                frames.append(_sessions(rng, agent, p, t0, f"{agent}-{hour}"))
    events = pl.concat(frames, how="diagonal_relaxed")
    return _finish(events)


def _sessions(
    rng: np.random.Generator, agent: str, p: Profile, t0: np.ndarray, prefix: str
) -> pl.DataFrame:
    n = t0.size
    sid = np.array([f"{prefix}-{i}" for i in range(n)])
    hod = (t0 % 86400) / 3600.0
    slow = p.latency_scale * (1 + p.latency_cycle * _cycle(hod))
    n_llm = 1 + rng.poisson(1.5, n)
    n_tool = 1 + rng.poisson(1.0, n)
    rows: list[pl.DataFrame] = []

    def frame(idx: np.ndarray, offset: np.ndarray, **cols: Any) -> None:
        rows.append(
            pl.DataFrame(
                {"session_id": sid[idx], "ts": t0[idx] + offset, **cols},
                strict=False,
            )
        )

    all_idx = np.arange(n)
    intent = rng.choice(INTENTS, n)
    frame(all_idx, np.zeros(n), kind="session_start", intent=intent)
    li = np.repeat(all_idx, n_llm)
    model = rng.choice(MODELS, li.size, p=MODEL_SHARE)
    llm_latency = p.llm_latency_ms * slow[li] * rng.lognormal(0, 0.35, li.size)
    inp = np.round(rng.lognormal(math.log(1500), 0.4, li.size)).astype(np.int64)
    out = np.round(rng.lognormal(math.log(200), 0.5, li.size)).astype(np.int64)
    step = _steps(n_llm)
    frame(li, 20.0 * step + 1.0, kind="llm_call", model=model, prompt_version="v1",
          latency_ms=llm_latency, input_tokens=inp, output_tokens=out,
          cost_usd=(inp * 0.15 + out * 0.6) / 1e6, status="ok")  # fmt: skip
    ti = np.repeat(all_idx, n_tool)
    tool = rng.choice(len(TOOLS), ti.size, p=TOOL_SHARE)
    failed = rng.random(ti.size) < np.asarray(p.tool_errors)[tool]
    tool_latency = np.asarray(TOOL_LATENCY_MS)[tool] * slow[ti] * rng.lognormal(0, 0.3, ti.size)
    error_type = pl.Series(["tool_error" if f else None for f in failed.tolist()], dtype=pl.String)
    frame(ti, 20.0 * _steps(n_tool) + 2.0, kind="tool_call",
          tool_name=np.asarray(TOOLS)[tool], latency_ms=tool_latency,
          status=np.where(failed, "error", "ok"), error_type=error_type)  # fmt: skip
    violation = rng.random(n) < p.violation
    frame(all_idx, np.full(n, 3.0), kind="policy_check", policy_id="pii",
          outcome=np.where(violation, "violation", "pass"))  # fmt: skip
    sec = np.flatnonzero(rng.random(n) < p.security)
    if sec.size:
        category = rng.choice(SECURITY_CATEGORIES, sec.size, p=np.asarray(p.security_mix))
        frame(sec, np.full(sec.size, 4.0), kind="security", category=category,
              action="flagged", severity="high")  # fmt: skip
    escalated = rng.random(n) < p.escalation
    esc = np.flatnonzero(escalated)
    if esc.size:
        frame(esc, np.full(esc.size, 5.0), kind="escalation", reason="user_request",
              target="human")  # fmt: skip
    fb = np.flatnonzero(rng.random(n) < 0.3)
    if fb.size:
        frame(fb, np.full(fb.size, 6.0), kind="feedback",
              score=np.clip(np.round(rng.normal(0.6, 0.3, fb.size) * 20) / 20, -1, 1))  # fmt: skip
    busy = np.bincount(li, weights=llm_latency, minlength=n) / 1000.0
    duration = 20.0 * (n_llm + n_tool) + busy + rng.exponential(30.0, n)
    frame(all_idx, duration, kind="session_end",
          resolution=np.where(escalated, "escalated", "resolved"), intent=intent)  # fmt: skip
    return pl.concat(rows, how="diagonal_relaxed").with_columns(agent_id=pl.lit(agent))


def _steps(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... counts[i]-1 for each i, concatenated: a call's position in its session."""
    ends = np.cumsum(counts)
    steps: np.ndarray = np.arange(ends[-1]) - np.repeat(ends - counts, counts)
    return steps


def _finish(events: pl.DataFrame) -> pl.DataFrame:
    events = events.sort("ts").with_columns(
        ts=pl.from_epoch((pl.col("ts") * 1e6).cast(pl.Int64), time_unit="us").dt.replace_time_zone(
            "UTC"
        )
    )
    n = events.height
    fixed = {
        "schema_version": pl.lit(1),
        "event_id": pl.format("e{}", pl.int_range(n)),
        "agent_version": pl.lit("1.0.0"),
        "environment": pl.lit("prod"),
        "_late": pl.lit(False),
        "_topic": pl.lit("bench"),
        "_partition": pl.lit(0),
        "_offset": pl.int_range(n),
        "_kafka_ts": pl.col("ts"),
        "cost_usd_effective": pl.col("cost_usd") if "cost_usd" in events.columns else None,
    }
    events = events.with_columns(**{k: v for k, v in fixed.items() if v is not None})
    return events.select(
        [
            (pl.col(c) if c in events.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in EVENTS_SCHEMA.items()
        ]
    )


def write_store(events: pl.DataFrame, data_dir: Path) -> Path:
    """``events`` as one committed segment of a new store; returns the metadata file's path."""
    store = LakeStore(data_dir / METADATA_FILE)
    store.prepare()
    store.insert("events", events)
    return Path(store.db)


def scaled(**fields: float) -> Callable[[Profile, float], Profile]:
    """A change that sets profile fields at once."""
    return lambda p, _: replace(p, **fields)  # type: ignore[arg-type]
