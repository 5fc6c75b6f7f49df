"""Pools: an agent's signals of one unit added up into a gate that joins its FDR family,
and, when the gate passes, its members tested among themselves."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from agentwatch.processors.drift.compare import decide
from agentwatch.processors.drift.cumulative import pool_gates

END = 100
REF_BUCKETS = 48
BUCKETS = 12


def _row(signal: str, p: float, pool: str | None = None) -> dict[str, Any]:
    return {"agent_id": "a", "environment": "prod", "signal": signal, "statistic": 1.0,
            "p_value": p, "threshold": 0.01, "pool": pool}  # fmt: skip


def _gate(p: float) -> dict[str, Any]:
    return {"agent_id": "a", "environment": "prod", "pool": "ms", "gate": True,
            "statistic": 4.0, "p_value": p, "threshold": 0.01}  # fmt: skip


def _family(gate_p: float) -> list[dict[str, Any]]:
    """40 unrelated results, two latency results of 0.002 and 0.02 and their gate."""
    null = [_row(f"s{i}", 0.5) for i in range(40)]
    return [*null, _row("llm_latency_ms", 0.002, "ms"), _row("tool_latency_ms", 0.02, "ms"),
            _gate(gate_p)]  # fmt: skip


def _verdict(rows: list[dict[str, Any]], signal: str) -> dict[str, Any]:
    return next(r for r in rows if r.get("signal") == signal)


def test_a_passing_gate_tests_its_members_among_themselves() -> None:
    out = _verdict(decide(_family(gate_p=1e-5)), "llm_latency_ms")
    assert out["verdict"] == "drift"
    assert out["score"] == 0.004  # BH over the pool's two members: 0.002 * 2 / 1


def test_without_a_passing_gate_members_keep_their_score_in_the_agents_family() -> None:
    out = _verdict(decide(_family(gate_p=0.5)), "llm_latency_ms")
    assert out["verdict"] == "ok"
    assert out["score"] > 0.01


def test_gates_are_left_out_of_the_results() -> None:
    out = decide(_family(gate_p=1e-5))
    assert len(out) == 42 and not any(r.get("gate") for r in out)


def _frames(z: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[pl.DataFrame, ...]:
    """cur, own and dispersion frames as ``cumulative_rows`` builds them."""

    def frame(scores: dict[str, np.ndarray], first: int) -> pl.DataFrame:
        return pl.concat(
            pl.DataFrame({"agent_id": "a", "environment": "prod", "signal": name,
                          "bucket": np.arange(first, first + s.size), "n": 100.0, "z": s})
            for name, s in scores.items()
        )  # fmt: skip

    own = frame(ref, END - BUCKETS - REF_BUCKETS)
    dispersion = own.group_by("agent_id", "environment", "signal").agg(
        dispersion=(pl.col("z") ** 2).mean().clip(lower_bound=1.0)
    )
    return frame(z, END - BUCKETS), own, dispersion


def _gate_p(z: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> list[float]:
    cur, own, dispersion = _frames(z, ref)
    members = [("a", "prod", name, 0.01) for name in z]
    return [g["p_value"] for g in pool_gates(cur, own, dispersion, members, "cusum", END)]


def test_signals_of_one_unit_moving_together_add_up_in_their_gate() -> None:
    r = np.random.default_rng(5)
    shift = np.r_[np.zeros(BUCKETS - 2), 1.8, 2.6]
    names = ("llm_latency_ms", "tool_latency_ms", "tool_call_latency_ms[search_kb]")
    ref = {n: r.normal(0, 1, REF_BUCKETS) for n in names}
    (p,) = _gate_p({n: shift for n in names}, ref)
    assert p < 1e-4  # each alone: (1.8 + 2.6) / sqrt(2) = 3.1, p = 0.009 over its spans


def test_only_two_or_more_tested_signals_of_one_unit_make_a_gate() -> None:
    r = np.random.default_rng(6)
    z = {"llm_latency_ms": r.normal(0, 1, BUCKETS), "input_tokens": r.normal(0, 1, BUCKETS)}
    ref = {n: r.normal(0, 1, REF_BUCKETS) for n in z}
    assert _gate_p(z, ref) == []


def test_a_gate_keeps_its_false_alarm_rate_when_its_members_move_alike() -> None:
    """Two members with the same scores: the pooled reference's dispersion doubles."""
    r = np.random.default_rng(7)
    alarms = 0
    trials = 600
    for _ in range(trials):
        z, ref = r.normal(0, 1, BUCKETS), r.normal(0, 1, REF_BUCKETS)
        names = ("llm_latency_ms", "tool_latency_ms")
        (p,) = _gate_p(dict.fromkeys(names, z), dict.fromkeys(names, ref))
        alarms += p <= 0.01
    assert alarms / trials <= 0.02
