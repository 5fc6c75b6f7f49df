"""Every panel's PromQL, proven against a real Prometheus scraping a live pipeline.

A simulated fleet runs in real time through the real broker and a processor serving
/metrics, scraped every second by the real Prometheus (the Debian package). Besides its
everyday traffic the fleet has the odd incident every deployment sees, one per agent: an
LLM call to a model with no price, a blocked prompt injection, a critical policy
violation, a blocked action and an agent error; and a buggy client sends malformed
messages. One agent has a burst of policy violations: ``agentwatch alerts run`` (scraped
too) fires its alert, and the alert's runbook opens the agent's breaker on the control
topic. ``agentwatch drift run`` (scraped too) evaluates ten hours of a small fleet's past
events, the last two with a canary release that escalates three times as often.

Then every expression of every generated panel, with its template variables filled in
the way Grafana would (each variable from its own ``label_values`` query, the busiest
value chosen), runs as a range query over the run and must parse and return data.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import agentwatch.alerts
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG
from agentwatch.broker.launcher import BrokerInfo
from agentwatch.broker.ports import free_port
from agentwatch.commands.demo import BUGGY_MESSAGES
from agentwatch.dashboards.boards import DASHBOARDS
from agentwatch.dashboards.build import render
from agentwatch.dashboards.snapshot import (
    TREND_KEYS,
    PrometheusClient,
    Window,
    fill_variables,
    from_prometheus,
)
from agentwatch.ingest.contract.events import PolicyCheck
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.ingest.sim.scenario_file import parse_scenario
from agentwatch.ingest.sim.simulate import run_simulation
from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.dedup import DedupIndex
from agentwatch.processors.landing.pipeline import LandingSettings, PartitionState, land_batch
from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.conftest import require_tool
from tests.pipeline_helpers import AGENTWATCH, count, process_cmd, produce, wait_for
from tests.promserver import Prometheus, running_prometheus
from tests.test_dashboards import incidents
from tests.test_dashboards_snapshot import run_snapshot
from tests.test_otlp_receiver import agent_run

AGENTS, SEED = 4, 7
RATE, SECONDS = 250.0, 45.0
# 29 tool names in the fleet: a low guard folds some, so the guard's panels have data too.
MAX_LABEL_VALUES = 20
# Grafana's own variables, as Grafana would fill them for this run at a 1 s scrape.
RATE_INTERVAL = "1m"
STEP_S = 5

# The agent whose violation burst fires an alert and gets its breaker opened.
BURST_AGENT = make_agents(AGENTS, SEED)[0]
BURST_CHECKS = 60
SHIPPED_RULES = Path(agentwatch.alerts.__file__).parent / "rules"
# Drift history: a small fleet's past, short windows so that ten hours make a baseline.
DRIFT_AGENTS, DRIFT_HOURS, CANARY_HOURS = 3, 10, 2
DRIFT_SETTINGS = {
    "reference": "6h", "min_reference": "3h", "release": {"window": "6h", "min_history": "2h"},
}  # fmt: skip

JSON = dict[str, Any]


@dataclass(frozen=True)
class LiveFleet:
    prometheus: Prometheus
    window: Window
    drift_db: Path


def violation_burst(ts: dt.datetime) -> list[PolicyCheck]:
    """A run of failed guardrail checks by one agent: the shipped burst rule's case."""
    return [
        PolicyCheck(schema_version=1, ts=ts, agent_id=BURST_AGENT.agent_id,
                    agent_version=BURST_AGENT.parameters.agent_version,
                    environment=BURST_AGENT.environment, session_id=f"burst-{i // 5}",
                    event_id=f"burst-{i}", policy_id="pii-output", outcome="violation",
                    severity="high", latency_ms=4.0)
        for i in range(BURST_CHECKS)
    ]  # fmt: skip


def fast_burst_rule(folder: Path) -> Path:
    """The shipped violation-burst rule, with a `for` short enough for a test run."""
    doc = yaml.safe_load((SHIPPED_RULES / "safety.yaml").read_text())
    rule = next(r for r in doc["rules"] if r["name"] == "AgentViolationBurst")
    rule |= {"for": "2s", "min_samples": 20}
    folder.mkdir(parents=True)
    (folder / "safety.yaml").write_text(yaml.safe_dump({"rules": [rule]}))
    return folder


def drift_history(data_dir: Path, now: dt.datetime) -> Path:
    """Ten hours of a small fleet's past events up to ``now``, landed by the processor's
    own core (no broker: it is history), with a canary release on the first agent for the
    last two whole hours: half its new sessions escalate three times as often."""
    end = dt.datetime.fromtimestamp((now.timestamp() - 300) // 3600 * 3600, dt.UTC)
    start = end - dt.timedelta(hours=DRIFT_HOURS)
    agents = make_agents(DRIFT_AGENTS, SEED)
    canary = parse_scenario({
        "name": "canary", "expect": [],
        "changes": [{"at": f"+{DRIFT_HOURS - CANARY_HOURS}h", "agent": agents[0].agent_id,
                     "rollout": 0.5, "prompt": {"version": "v99", "agent_version": "9.9.0",
                                                "escalation_scale": 3.0}}],
    })  # fmt: skip
    canary.apply(agents, start.timestamp())
    history = list(Fleet(agents, seed=SEED, start=start, events_per_second=2.0).events_until(now))
    encode = msgspec.json.Encoder().encode
    batch = RawBatch(
        "history", 0, list(range(len(history))),
        [int(e.ts.timestamp() * 1000) for e in history],
        [e.session_id.encode() for e in history], [encode(e) for e in history],
    )  # fmt: skip
    settings = LandingSettings(max_message_bytes=1 << 20, allowed_lateness_s=86400)
    state = PartitionState(DedupIndex(settings.dedup_horizon_s, settings.dedup_max_ids))
    pricing = load_pricing(None)
    landed = land_batch(batch, state, settings, lambda frame: apply_pricing(frame, pricing))
    store = LakeStore(data_dir / METADATA_FILE)
    store.recover("history", 0)
    assert store.commit_batch(
        "history", 0, (0, len(history) - 1), landed.events, landed.dead_letters,
        extra=landed.extra_tables,
    )  # fmt: skip
    return Path(store.db)


@pytest.fixture(scope="module")
def live(kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("dashboards")
    db = tmp / "data" / "agentwatch.sqlite"
    topic = "dashboards-e2e"
    ports = {name: free_port() for name in ("processor", "alerts", "drift")}
    drift_db = drift_history(tmp / "drift", dt.datetime.now(dt.UTC))
    drift_config = tmp / "drift.yaml"
    drift_config.write_text(yaml.safe_dump(DRIFT_SETTINGS))
    local = ("--metrics-host", "127.0.0.1")
    commands = {
        "processor": process_cmd(
            kafka_broker, topic, db, "--metrics-port", str(ports["processor"]), *local,
            "--flush-interval", "1", "--max-label-values", str(MAX_LABEL_VALUES),
            "--otlp-topic", f"{topic}-otlp",
        ),
        "alerts": [
            *AGENTWATCH, "alerts", "run", "--db", str(db), "--rules",
            str(fast_burst_rule(tmp / "rules")), "--interval", "1",
            "--catalog", str(EXAMPLE_CATALOG),
            "--bootstrap", kafka_broker.bootstrap, "--control-topic", f"{topic}-control",
            "--metrics-port", str(ports["alerts"]), *local,
        ],
        "drift": [
            *AGENTWATCH, "drift", "run", "--db", str(drift_db), "--drift-config",
            str(drift_config), "--metrics-port", str(ports["drift"]), *local,
        ],
    }  # fmt: skip
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                         stderr=(tmp / f"{name}.log").open("wb"))
        for name, argv in commands.items()
    ]  # fmt: skip
    targets = [f"127.0.0.1:{port}" for port in ports.values()]
    try:
        with running_prometheus(prometheus, tmp / "prom", targets) as prom:
            start = dt.datetime.now(dt.UTC)
            extra = incidents(AGENTS, SEED, dt.datetime.now(dt.UTC))
            encode = msgspec.json.Encoder().encode
            sim = run_simulation(kafka_broker.bootstrap, topic, agents=AGENTS, rate=RATE,
                                 duration=SECONDS / 2, seed=SEED)  # fmt: skip
            extra += violation_burst(dt.datetime.now(dt.UTC))
            produce(kafka_broker.bootstrap, topic,
                    [(e.session_id.encode(), encode(e)) for e in extra]
                    + [(b"buggy", m) for m in BUGGY_MESSAGES])  # fmt: skip
            sim2 = run_simulation(kafka_broker.bootstrap, topic, agents=AGENTS, rate=RATE,
                                  duration=SECONDS / 2, seed=SEED + 1)  # fmt: skip
            # an OpenTelemetry agent run via the Collector topic: 4 spans (1 unmapped), 4 events
            produce(kafka_broker.bootstrap, f"{topic}-otlp",
                    [(b"trace", encode_spans(agent_run()).SerializeToString())])  # fmt: skip
            events = sim.events + sim2.events + len(extra) + 4
            wait_for(lambda: db.exists() and count(db, "SELECT count(*) FROM events") == events,
                     120, "every event landed")  # fmt: skip
            prom.wait_for("sum(agentwatch_pipeline_events_total)", events)
            prom.wait_for("sum(agentwatch_otlp_spans_total)", 4)
            # a rate needs two scrapes of the counter: wait for them, not just the first
            prom.wait_for("count(sum(rate(agentwatch_otlp_spans_total[1m])))", 1)
            burst = f'agent_id="{BURST_AGENT.agent_id}"'
            prom.wait_for(f'sum(agentwatch_alerts{{{burst}, state="firing"}})', 1)
            prom.wait_for(f"max(agentwatch_breaker_open{{{burst}}})", 1)
            prom.wait_for("count(agentwatch_drift_window_end_timestamp_seconds)", DRIFT_AGENTS)
            # a few more scrapes after the last change, and a step of the range queries
            time.sleep(STEP_S + 1)
            end = dt.datetime.now(dt.UTC)
            yield LiveFleet(prom, Window(start, end), drift_db)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
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


def fill_in(live: LiveFleet, model: JSON, prefer: Mapping[str, str]) -> dict[str, str]:
    """Each variable in order: its own query's values, the ``prefer``red one when it is
    listed (the agent a test staged an incident on), else the busiest."""
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
        wanted = prefer.get(variable["name"])
        if wanted is not None:
            assert wanted in values, f"${variable['name']}: {wanted} not among {values}"
            chosen[variable["name"]] = wanted
            continue
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


# The example catalog holds its retired agent's breaker open and, unconfirmed, alerts on it:
# the alerts dashboard is looked at for the agent of the staged violation burst.
PREFERRED: Final[Mapping[str, Mapping[str, str]]] = {
    "agentwatch-alerts": {"agent": BURST_AGENT.agent_id},
}


def variables_for(live: LiveFleet, uid: str) -> dict[str, str]:
    if uid not in _FILLED:
        model = render(next(spec for spec in DASHBOARDS if spec.uid == uid))
        _FILLED[uid] = fill_in(live, model, PREFERRED.get(uid, {}))
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
    # the simulated fleet, and the OpenTelemetry agent from the Collector topic
    assert {row["agent_id"] for row in snap.table} == {
        a.agent_id for a in make_agents(AGENTS, SEED)
    } | {"helpdesk-agent"}
    done = run_snapshot("--out", str(tmp_path), "--prometheus", live.prometheus.url,
                        "--range", "5m")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name for p in tmp_path.glob("*.png")} >= {"headline.png", "agents.png"}
    assert "Prometheus at http://127.0.0.1" in (tmp_path / "index.html").read_text()


def test_the_alert_panels_show_the_burst_its_runbook_and_the_open_breaker(live: LiveFleet) -> None:
    chosen = variables_for(live, "agentwatch-alerts")
    assert chosen["agent"] == BURST_AGENT.agent_id
    spec = next(s for s in DASHBOARDS if s.uid == "agentwatch-alerts")
    rows = live.prometheus.query(grafana_fill(spec.panel("active_alerts").queries[0].expr,
                                              chosen, live.window))  # fmt: skip
    labels = [row["metric"] for row in rows]
    assert {"alertname": "AgentViolationBurst", "severity": "critical", "state": "firing",
            "agent_id": BURST_AGENT.agent_id,
            "runbook_url": "runbooks/contain-agent.yaml"} in labels  # fmt: skip
    breakers = live.prometheus.query(grafana_fill(spec.panel("breakers").queries[0].expr,
                                                  chosen, live.window))  # fmt: skip
    assert [(b["metric"], b["value"][1]) for b in breakers] == [
        ({"agent_id": BURST_AGENT.agent_id}, "1")
    ]


def test_the_drift_panels_compare_the_canary_with_the_stable_release(live: LiveFleet) -> None:
    chosen = variables_for(live, "agentwatch-drift")
    canary = make_agents(DRIFT_AGENTS, SEED)[0]
    assert chosen["agent"] == canary.agent_id
    spec = next(s for s in DASHBOARDS if s.uid == "agentwatch-drift")
    every_signal = {**chosen, "signal": ".*"}
    releases = live.prometheus.query(grafana_fill(spec.panel("releases").queries[0].expr,
                                                  every_signal, live.window))  # fmt: skip
    compared = {(r["metric"]["dimension"], r["metric"]["baseline"], r["metric"]["candidate"]):
                float(r["value"][1]) for r in releases}  # fmt: skip
    stable = canary.parameters
    # Signals drifting per comparison: the tripled escalations show in both dimensions.
    assert compared[("agent_version", stable.agent_version, "9.9.0")] >= 1
    assert compared[("prompt_version", stable.prompt_version, "v99")] >= 1
