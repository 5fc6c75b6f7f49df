"""Every panel's PromQL, proven against a real Prometheus scraping a live pipeline.

A simulated fleet runs in real time through the real broker and a processor serving
/metrics, scraped every second by the real Prometheus (the Debian package). Besides its
everyday traffic the fleet has the odd incident every deployment sees, one per agent: an
LLM call to a model with no price, a blocked prompt injection, a critical policy
violation, a blocked action and an agent error; and a buggy client sends malformed
messages. Then every expression of every generated panel, with its template variables
filled in the way Grafana would (each variable from its own ``label_values`` query, the
busiest value chosen), runs as a range query over the run and must parse and return data.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentwatch.broker import BrokerInfo, free_port
from agentwatch.dashboards.build import render
from agentwatch.dashboards.catalog import DASHBOARDS
from agentwatch.dashboards.snapshot import (
    TREND_KEYS,
    PrometheusClient,
    Window,
    fill_variables,
    from_prometheus,
)
from agentwatch.demo import BUGGY_MESSAGES
from agentwatch.ingest.fleet import make_agents
from agentwatch.ingest.simulate import run_simulation
from tests.conftest import require_tool
from tests.pipeline_helpers import count, process_cmd, produce, wait_for
from tests.promserver import Prometheus, running_prometheus
from tests.test_dashboards import incidents
from tests.test_dashboards_snapshot import run_snapshot

AGENTS, SEED = 4, 7
RATE, SECONDS = 250.0, 45.0
# 29 tool names in the fleet: a low guard folds some, so the guard's panels have data too.
MAX_LABEL_VALUES = 20
# Grafana's own variables, as Grafana would fill them for this run at a 1 s scrape.
RATE_INTERVAL = "1m"
STEP_S = 5

JSON = dict[str, Any]


@dataclass(frozen=True)
class LiveFleet:
    prometheus: Prometheus
    window: Window


@pytest.fixture(scope="module")
def live(kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("dashboards")
    db = tmp / "data" / "agentwatch.duckdb"
    topic = "dashboards-e2e"
    port = free_port()
    proc = subprocess.Popen(
        process_cmd(kafka_broker, topic, db, "--metrics-port", str(port), "--metrics-host",
                    "127.0.0.1", "--flush-interval", "1",
                    "--max-label-values", str(MAX_LABEL_VALUES)),
        stdout=subprocess.DEVNULL, stderr=(tmp / "processor.log").open("wb"),
    )  # fmt: skip
    try:
        with running_prometheus(prometheus, tmp / "prom", [f"127.0.0.1:{port}"]) as prom:
            start = dt.datetime.now(dt.UTC)
            extra = incidents(AGENTS, SEED, dt.datetime.now(dt.UTC))
            encode = msgspec.json.Encoder().encode
            sim = run_simulation(kafka_broker.bootstrap, topic, agents=AGENTS, rate=RATE,
                                 duration=SECONDS / 2, seed=SEED)  # fmt: skip
            produce(kafka_broker.bootstrap, topic,
                    [(e.session_id.encode(), encode(e)) for e in extra]
                    + [(b"buggy", m) for m in BUGGY_MESSAGES])  # fmt: skip
            sim2 = run_simulation(kafka_broker.bootstrap, topic, agents=AGENTS, rate=RATE,
                                  duration=SECONDS / 2, seed=SEED + 1)  # fmt: skip
            events = sim.events + sim2.events + len(extra)
            wait_for(lambda: db.exists() and count(db, "SELECT count(*) FROM events") == events,
                     120, "every event landed")  # fmt: skip
            prom.wait_for("sum(agentwatch_pipeline_events_total)", events)
            time.sleep(3)  # a few more scrapes after the last change
            end = dt.datetime.now(dt.UTC)
            yield LiveFleet(prom, Window(start, end))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# --------------------------------------------------------------------------- variables

_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def label_values(prom: Prometheus, selector: str, label: str, window: Window) -> list[str]:
    """What Grafana's ``label_values(selector, label)`` lists, from the series API."""
    qs = urllib.parse.urlencode({
        "match[]": selector, "start": window.start.timestamp(), "end": window.end.timestamp(),
    })  # fmt: skip
    with urllib.request.urlopen(f"{prom.url}/api/v1/label/{label}/values?{qs}") as resp:
        doc = json.load(resp)
    assert doc["status"] == "success", doc
    values: list[str] = doc["data"]
    return values


def fill_in(live: LiveFleet, model: JSON) -> dict[str, str]:
    """Each variable in order: its own query's values, the busiest one chosen."""
    chosen: dict[str, str] = {}
    for variable in model["templating"]["list"]:
        if variable["type"] == "textbox":
            chosen[variable["name"]] = variable["query"]
            continue
        match = _LABEL_VALUES.match(fill_variables(variable["query"], chosen))
        assert match, variable["query"]
        selector, label = match["selector"], match["label"]
        values = label_values(live.prometheus, selector, label, live.window)
        assert values, f"${variable['name']}: {variable['query']} lists nothing"
        chosen[variable["name"]] = max(
            sorted(values), key=lambda value: traffic(live.prometheus, selector, label, value)
        )
    return chosen


def traffic(prom: Prometheus, selector: str, label: str, value: str) -> float:
    """What the series with ``label=value`` have counted in total: how busy that value is."""
    metric, _, rest = selector.partition("{")
    labels = ", ".join(p for p in (rest.rstrip("}"), f'{label}="{value}"') if p)
    result = prom.query(f"sum({metric}{{{labels}}})")
    return float(result[0]["value"][1]) if result else 0.0


def grafana_fill(expr: str, chosen: dict[str, str], window: Window) -> str:
    return fill_variables(expr, {
        **chosen, "__rate_interval": RATE_INTERVAL, "__range": f"{window.seconds + 60}s",
    })  # fmt: skip


# --------------------------------------------------------------------------- the proof


def all_queries() -> list[Any]:
    params = []
    for spec in DASHBOARDS:
        model = render(spec)
        for panel in model["panels"]:
            for target in panel.get("targets") or []:
                params.append(pytest.param(
                    spec.uid, target["expr"], id=f"{spec.uid}/{panel['title']}/{target['refId']}",
                ))  # fmt: skip
    return params


_FILLED: dict[str, dict[str, str]] = {}


def variables_for(live: LiveFleet, uid: str) -> dict[str, str]:
    if uid not in _FILLED:
        model = render(next(spec for spec in DASHBOARDS if spec.uid == uid))
        _FILLED[uid] = fill_in(live, model)
    return _FILLED[uid]


@pytest.mark.parametrize(("uid", "expr"), all_queries())
def test_every_panel_query_parses_and_returns_data(live: LiveFleet, uid: str, expr: str) -> None:
    chosen = variables_for(live, uid)
    promql = grafana_fill(expr, chosen, live.window)
    assert "$" not in promql, promql
    series = PrometheusClient(live.prometheus.url).range(promql, live.window, STEP_S)
    assert series, f"no series for {promql} (variables {chosen})"
    values = [float(v) for s in series for _, v in s["values"]]
    assert any(math.isfinite(v) for v in values), f"only NaN/Inf for {promql}"


def test_variables_are_filled_with_the_fleets_real_values(live: LiveFleet) -> None:
    chosen = variables_for(live, "agentwatch-agent")
    fleet = make_agents(AGENTS, SEED)
    assert chosen["agent"] in {a.agent_id for a in fleet}
    assert chosen["environment"] in {a.environment for a in fleet}
    assert chosen["version"] in {a.parameters.agent_version for a in fleet}
    assert variables_for(live, "agentwatch-pipeline") == {"topic": "dashboards-e2e"}


def test_the_snapshot_renders_the_fleet_overview_from_prometheus(
    live: LiveFleet, tmp_path: Path
) -> None:
    snap = from_prometheus(live.prometheus.url, dt.timedelta(minutes=5), budget_usd=1000.0)
    assert all(value is not None for value in snap.stats.values()), snap.stats
    assert all(snap.trends[key] for key in TREND_KEYS), snap.trends.keys()
    assert {row["agent_id"] for row in snap.table} == {
        a.agent_id for a in make_agents(AGENTS, SEED)
    }
    done = run_snapshot("--out", str(tmp_path), "--prometheus", live.prometheus.url,
                        "--range", "5m")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name for p in tmp_path.glob("*.png")} >= {"headline.png", "agents.png"}
    assert "Prometheus at http://127.0.0.1" in (tmp_path / "index.html").read_text()
