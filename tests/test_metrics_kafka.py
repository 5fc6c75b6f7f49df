"""Metrics end to end: a simulated fleet through the real broker and processor, scraped
by a real Prometheus; PromQL must agree with a direct recomputation from ``events``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentwatch.broker.launcher import BrokerInfo
from agentwatch.broker.ports import free_port
from agentwatch.ingest.sim.simulate import SimulationSummary, run_simulation
from tests.conftest import require_tool
from tests.pipeline_helpers import count, process_cmd, wait_for
from tests.promserver import Prometheus, running_prometheus


@pytest.fixture(scope="module")
def scraped(
    kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Prometheus, Path, SimulationSummary]]:
    """One simulated fleet, landed by a processor serving /metrics, scraped by Prometheus."""
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("metrics")
    db = tmp / "data" / "agentwatch.sqlite"
    topic = "metrics-e2e"
    sim = run_simulation(
        kafka_broker.bootstrap, topic, agents=6, rate=None, duration=1800.0, seed=11,
        max_events=8_000,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        process_cmd(kafka_broker, topic, db, "--metrics-port", str(port), "--metrics-host",
                    "127.0.0.1", "--allowed-lateness", "86400"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: db.exists() and count(db, "SELECT count(*) FROM events") == sim.events,
                 120, "all events landed")  # fmt: skip
        with running_prometheus(prometheus, tmp / "prom", [f"127.0.0.1:{port}"]) as prom:
            prom.wait_for("sum(agentwatch_pipeline_events_total)", sim.events)
            yield prom, db, sim
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_events_by_kind_match_the_events_table(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    prom, db, sim = scraped
    for kind, n in sim.by_kind.items():
        assert n == count(db, f"SELECT count(*) FROM events WHERE kind = '{kind}'")
        prom.wait_for(f'sum(agentwatch_events_total{{kind="{kind}"}})', n)


def test_llm_latency_histogram_counts_every_timed_llm_call(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    prom, db, _ = scraped
    expected = count(
        db, "SELECT count(*) FROM events WHERE kind='llm_call' AND latency_ms IS NOT NULL"
    )
    prom.wait_for("sum(agentwatch_llm_call_duration_seconds_count)", expected)
    p95 = prom.value(
        "histogram_quantile(0.95, sum by (le) (agentwatch_llm_call_duration_seconds_bucket))"
    )
    assert 0 < p95 < 60


def test_cost_matches_the_sum_of_effective_costs(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    prom, db, _ = scraped
    con_sum = count(db, "SELECT round(sum(cost_usd_effective) * 1e6) FROM events")
    got = prom.value("sum(agentwatch_cost_usd_total)")
    assert round(got * 1e6) == pytest.approx(con_sum, abs=2)


def test_tokens_match_by_type(scraped: tuple[Prometheus, Path, SimulationSummary]) -> None:
    prom, db, _ = scraped
    for kind, column in (("input", "input_tokens"), ("output", "output_tokens")):
        expected = count(db, f"SELECT sum({column}) FROM events WHERE kind = 'llm_call'")
        prom.wait_for(f'sum(agentwatch_tokens_total{{type="{kind}"}})', expected)


def test_sessions_and_containment_match_a_recomputation(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    prom, db, _ = scraped
    ended = count(db, "SELECT count(*) FROM events WHERE kind = 'session_end'")
    contained = count(
        db,
        "SELECT count(*) FROM events e WHERE kind = 'session_end' AND resolution = 'resolved' "
        "AND NOT EXISTS (SELECT 1 FROM events x WHERE x.session_id = e.session_id "
        "AND x.kind = 'escalation')",
    )
    prom.wait_for("sum(agentwatch_sessions_total)", ended)
    prom.wait_for("sum(agentwatch_sessions_contained_total)", contained)


def test_policy_violations_match_by_policy(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    prom, db, _ = scraped
    total = count(
        db, "SELECT count(*) FROM events WHERE kind='policy_check' AND outcome='violation'"
    )
    if total:
        prom.wait_for("sum(agentwatch_policy_violations_total)", total)
    else:
        assert prom.query("agentwatch_policy_violations_total") == []


def test_pipeline_health_series_are_exported(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    prom, _, sim = scraped
    prom.wait_for("sum(agentwatch_pipeline_records_total)", sim.events)
    assert len(prom.query("agentwatch_pipeline_consumer_lag")) == 3
    prom.wait_for("sum(agentwatch_pipeline_consumer_lag)", 0)
    assert prom.query("agentwatch_pipeline_processing_delay_seconds")


WINDOWED = {
    "events": "count(*)",
    "llm_calls": "count(*) FILTER (kind = 'llm_call')",
    "tool_calls": "count(*) FILTER (kind = 'tool_call')",
    "escalations": "count(*) FILTER (kind = 'escalation')",
    "policy_violations": "count(*) FILTER (kind = 'policy_check' AND outcome = 'violation')",
    "input_tokens": "sum(input_tokens)",
    "sessions_ended": "count(*) FILTER (kind = 'session_end')",
}


@pytest.mark.parametrize("column", sorted(WINDOWED))
@pytest.mark.parametrize("view", ["metrics_1m", "metrics_1h", "metrics_1d"])
def test_windowed_views_equal_a_direct_recomputation_from_events(
    scraped: tuple[Prometheus, Path, SimulationSummary], view: str, column: str
) -> None:
    _, db, _ = scraped
    direct = count(db, f"SELECT {WINDOWED[column]} FROM events WHERE NOT coalesce(_late, false)")
    assert count(db, f"SELECT sum({column}) FROM {view}") == direct


def test_sessions_view_has_one_row_per_session_with_the_contract_containment(
    scraped: tuple[Prometheus, Path, SimulationSummary],
) -> None:
    _, db, _ = scraped
    assert count(db, "SELECT count(*) FROM sessions") == count(
        db, "SELECT count(DISTINCT session_id) FROM events"
    )
    contained = (
        "SELECT count(*) FROM events e WHERE kind = 'session_end' AND resolution = 'resolved' "
        "AND NOT EXISTS (SELECT 1 FROM events x WHERE x.session_id = e.session_id "
        "AND x.kind = 'escalation')"
    )
    assert count(db, "SELECT count(*) FROM sessions WHERE contained") == count(db, contained)
    assert count(db, "SELECT count(*) FROM sessions WHERE state = 'open'") == count(
        db,
        "SELECT count(DISTINCT session_id) FROM events WHERE session_id NOT IN "
        "(SELECT session_id FROM events WHERE kind = 'session_end')",
    )
