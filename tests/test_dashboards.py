"""The generated Grafana dashboards: a JSON model Grafana can load and a reader can trust.

Checked on the JSON that ``agentwatch dashboards build`` writes, not on the Python
specs, because the JSON is what Grafana sees: panel ids, the grid, datasource
references against the provisioned datasource, template variables, and a unit, a
description and thresholds on every panel. Every series a panel queries must appear on
an agentwatch /metrics endpoint: the processor's after it landed a simulated fleet, the
drift evaluator's, or the alert evaluator's. Whether each query returns
data is proven against a real Prometheus in ``test_dashboards_prometheus.py``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.evaluation.metrics import AlertsCollector
from agentwatch.alerts.governance.metrics import LifecycleCollector
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.breaker import Breaker, BreakerKey
from agentwatch.alerts.rules import DEFAULT_RULES_DIR, load_rules
from agentwatch.commands.demo import BUGGY_MESSAGES
from agentwatch.dashboards.boards import DASHBOARDS
from agentwatch.dashboards.build import render
from agentwatch.ingest.contract.events import Error, Event, LlmCall, PolicyCheck, Security
from agentwatch.ingest.otlp.mapping import Mapped
from agentwatch.ingest.otlp.metrics import OtlpMetrics
from agentwatch.ingest.sim.fleet import Fleet
from agentwatch.ingest.sim.profiles import make_agents
from agentwatch.processors.drift.metrics import DriftCollector
from agentwatch.processors.landing.batching import Pending
from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.dedup import DedupIndex
from agentwatch.processors.landing.memory import MemoryCollector
from agentwatch.processors.landing.pipeline import (
    LandedBatch,
    LandingSettings,
    PartitionState,
    land_batch,
    metric_deltas,
)
from agentwatch.processors.landing.pricing import apply_pricing, load_pricing
from agentwatch.processors.metrics.exporter import FleetCollector, PartitionHealth
from agentwatch.processors.store.tables import DRIFT_SCORES_SCHEMA
from tests.lifecycle_helpers import db_of, registry_with_a_release

ROOT = Path(__file__).resolve().parents[1]
CHECKED_IN = ROOT / "dashboards" / "json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
GRID_WIDTH = 24
UNPRICED_MODEL = "acme-llm-1"

JSON = dict[str, Any]
MODELS: dict[str, JSON] = {spec.uid: render(spec) for spec in DASHBOARDS}

# $name, ${name}, ${name:format} and [[name]]: Grafana's variable syntaxes.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def panels(model: JSON) -> list[JSON]:
    """Every panel that shows data (row headers left out)."""
    return [p for p in model["panels"] if p["type"] != "row"]


def expressions(model: JSON) -> Iterator[str]:
    for panel in panels(model):
        for target in panel["targets"]:
            yield target["expr"]


def variables_used(text: str) -> set[str]:
    names = {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}
    return {n for n in names if not n.startswith("__")}  # Grafana's own: $__range, ...


def by_uid() -> list[Any]:
    return [pytest.param(model, id=uid) for uid, model in MODELS.items()]


def provisioned_datasources() -> list[JSON]:
    files = sorted((PROVISIONING / "datasources").glob("*.yaml"))
    return [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]


# --------------------------------------------------------------------------- the build


def test_build_writes_one_json_file_per_dashboard(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "dashboards", "build", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{uid}.json" for uid in MODELS)
    for uid, model in MODELS.items():
        assert json.loads((tmp_path / f"{uid}.json").read_text()) == model


def test_the_checked_in_dashboards_are_what_the_build_writes() -> None:
    # docker-compose provisions dashboards/json: it must not lag behind the catalog.
    stale = [
        uid for uid, model in MODELS.items()
        if not (CHECKED_IN / f"{uid}.json").exists()
        or json.loads((CHECKED_IN / f"{uid}.json").read_text()) != model
    ]  # fmt: skip
    extra = {p.stem for p in CHECKED_IN.glob("*.json")} - set(MODELS)
    assert not stale and not extra, (
        f"stale {stale}, unknown {sorted(extra)}: run "
        "`agentwatch dashboards build --out dashboards/json`"
    )


def test_dashboard_uids_and_titles_are_unique() -> None:
    assert len({m["uid"] for m in MODELS.values()}) == len(MODELS)
    assert len({m["title"] for m in MODELS.values()}) == len(MODELS)


def test_the_fleet_agent_cost_safety_drift_alerts_and_pipeline_dashboards_exist() -> None:
    assert set(MODELS) >= {
        "agentwatch-fleet", "agentwatch-agent", "agentwatch-cost", "agentwatch-safety",
        "agentwatch-drift", "agentwatch-alerts", "agentwatch-pipeline",
    }  # fmt: skip


# --------------------------------------------------------------------------- panels and grid


@pytest.mark.parametrize("model", by_uid())
def test_panel_ids_are_unique(model: JSON) -> None:
    ids = [p["id"] for p in model["panels"]]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("model", by_uid())
def test_panels_lie_inside_the_grid(model: JSON) -> None:
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]


@pytest.mark.parametrize("model", by_uid())
def test_panels_do_not_overlap(model: JSON) -> None:
    for a, b in itertools.combinations(model["panels"], 2):
        pa, pb = a["gridPos"], b["gridPos"]
        apart = (
            pa["x"] + pa["w"] <= pb["x"] or pb["x"] + pb["w"] <= pa["x"]
            or pa["y"] + pa["h"] <= pb["y"] or pb["y"] + pb["h"] <= pa["y"]
        )  # fmt: skip
        assert apart, f"{a['title']!r} overlaps {b['title']!r}"


@pytest.mark.parametrize("model", by_uid())
def test_every_panel_has_a_unit_a_description_and_thresholds(model: JSON) -> None:
    for panel in panels(model):
        defaults = panel["fieldConfig"]["defaults"]
        assert panel["description"].strip(), panel["title"]
        assert defaults["unit"], panel["title"]
        steps = defaults["thresholds"]["steps"]
        assert steps and steps[0]["value"] is None, f"{panel['title']}: no base threshold"
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), f"{panel['title']}: thresholds out of order"


@pytest.mark.parametrize("model", by_uid())
def test_every_table_column_has_a_unit(model: JSON) -> None:
    for panel in (p for p in panels(model) if p["type"] == "table"):
        renamed = panel["transformations"][1]["options"]["renameByName"]
        columns = {new for old, new in renamed.items() if old.startswith("Value #")}
        with_unit = {
            o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]
            if any(prop["id"] == "unit" for prop in o["properties"])
        }  # fmt: skip
        assert len(columns) == len(panel["targets"]), panel["title"]
        assert columns <= with_unit, panel["title"]


@pytest.mark.parametrize("model", by_uid())
def test_every_panel_queries_prometheus_with_unique_ref_ids(model: JSON) -> None:
    for panel in panels(model):
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_the_fleet_overview_shows_the_product_owners_numbers() -> None:
    titles = {p["title"] for p in panels(MODELS["agentwatch-fleet"])}
    assert {
        "Sessions", "Containment", "Spend today", "Budget used today", "LLM latency p95",
        "Policy violations and blocked actions", "Sessions by outcome", "Agents",
    } <= titles  # fmt: skip


def test_the_agent_detail_is_about_one_agent_and_compares_its_releases() -> None:
    model = MODELS["agentwatch-agent"]
    agent = next(v for v in model["templating"]["list"] if v["name"] == "agent")
    assert not agent["multi"] and not agent["includeAll"]
    by_version = [p for p in panels(model) if "agent_version" in json.dumps(p["targets"])]
    assert len(by_version) >= 5


# --------------------------------------------------------------------------- datasources


def test_one_prometheus_datasource_is_provisioned() -> None:
    (datasource,) = provisioned_datasources()
    assert datasource["type"] == "prometheus" and datasource["uid"]


@pytest.mark.parametrize("model", by_uid())
def test_every_datasource_reference_is_the_provisioned_datasource(model: JSON) -> None:
    (provisioned,) = provisioned_datasources()
    expected = {"type": provisioned["type"], "uid": provisioned["uid"]}
    for panel in panels(model):
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


def test_the_dashboard_provider_loads_a_folder_of_json_files() -> None:
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "agentwatch.yaml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


# --------------------------------------------------------------------------- variables


@pytest.mark.parametrize("model", by_uid())
def test_every_variable_used_is_defined(model: JSON) -> None:
    defined = [v["name"] for v in model["templating"]["list"]]
    texts = [*expressions(model), *(str(v["query"]) for v in model["templating"]["list"])]
    texts += [json.dumps(p["fieldConfig"]["overrides"]) for p in panels(model)]
    used = set().union(*(variables_used(t) for t in texts))
    assert used <= set(defined), f"undefined: {sorted(used - set(defined))}"
    assert len(defined) == len(set(defined))


@pytest.mark.parametrize("model", by_uid())
def test_a_variable_only_refers_to_variables_defined_before_it(model: JSON) -> None:
    # Grafana resolves chained variables in order: $agent's query may use $environment.
    seen: set[str] = set()
    for variable in model["templating"]["list"]:
        assert variables_used(str(variable["query"])) <= seen, variable["name"]
        seen.add(variable["name"])


# Series with an agent_id but no environment or version label: the alert evaluator's and
# the drift evaluator's. Panels over them follow the agent picker alone.
_AGENT_ONLY = re.compile(r"agentwatch_(alert|breaker|drift)_?\w*")


def scope_variables(expr: str) -> set[str]:
    """The pickers an expression must follow, from the series it reads."""
    metrics = set(re.findall(r"agentwatch_\w+", expr))
    if metrics and all(_AGENT_ONLY.fullmatch(m) for m in metrics):
        return {"agent"}
    return {"environment", "agent", "version"}


@pytest.mark.parametrize("uid", ["agentwatch-fleet", "agentwatch-agent", "agentwatch-cost",
                                 "agentwatch-safety"])  # fmt: skip
def test_agent_dashboards_filter_by_environment_agent_and_version(uid: str) -> None:
    model = MODELS[uid]
    assert {"environment", "agent", "version"} <= {v["name"] for v in model["templating"]["list"]}
    for panel in panels(model):
        for expr in (t["expr"] for t in panel["targets"]):
            assert scope_variables(expr) <= variables_used(expr), panel["title"]


def test_alert_and_breaker_panels_follow_the_agent_picker() -> None:
    for model in (MODELS["agentwatch-fleet"], MODELS["agentwatch-alerts"]):
        for panel in panels(model):
            for expr in (t["expr"] for t in panel["targets"]):
                if re.search(r"agentwatch_(alerts|breaker_open)\{", expr):
                    assert 'agent_id=~"$agent"' in expr, panel["title"]


def test_drift_panels_follow_the_agent_and_signal_pickers() -> None:
    model = MODELS["agentwatch-drift"]
    assert [v["name"] for v in model["templating"]["list"]] == ["agent", "signal"]
    for panel in panels(model):
        for expr in (t["expr"] for t in panel["targets"]):
            wanted = {"agent"} if "window_end" in expr else {"agent", "signal"}
            assert wanted <= variables_used(expr), panel["title"]


def test_the_fleet_overview_shows_active_alerts_and_open_breakers() -> None:
    tiles = {p["title"]: p for p in panels(MODELS["agentwatch-fleet"]) if p["type"] == "stat"}
    assert {"Firing alerts", "Critical alerts", "Open breakers"} <= set(tiles)
    for title in ("Firing alerts", "Critical alerts", "Open breakers"):
        assert any("/d/agentwatch-alerts" in link["url"] for link in tiles[title]["links"])


def field_links(panel: JSON, column: str) -> list[JSON]:
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"]["options"] == column:
            for prop in override["properties"]:
                if prop["id"] == "links":
                    links: list[JSON] = prop["value"]
                    return links
    return []


def test_each_active_alert_links_to_its_runbook() -> None:
    model = MODELS["agentwatch-alerts"]
    table = next(p for p in panels(model) if p["title"] == "Active alerts")
    (link,) = field_links(table, "Runbook")
    assert link["url"] == "${runbooks_url}/${__value.raw}"
    assert all("runbook_url" in t["expr"] for t in table["targets"])
    base = next(v for v in model["templating"]["list"] if v["name"] == "runbooks_url")
    assert base["type"] == "textbox" and base["query"]


def test_every_rules_runbook_is_a_file_beside_the_rules() -> None:
    # The links append runbook_url to the alerts folder's URL: each must name a file there.
    alerts_dir = ROOT / "alerts"
    urls = {rule.annotations.get("runbook_url", "") for rule in load_rules(DEFAULT_RULES_DIR)}
    assert urls and "" not in urls
    assert [u for u in sorted(urls) if not (alerts_dir / u).is_file()] == []


# --------------------------------------------------------------------------- metrics


def incidents(agents: int, seed: int, ts: dt.datetime) -> list[Event]:
    """The odd incident, once per agent of the fleet: the rare paths every deployment sees.

    An LLM call to a model with no price, a blocked prompt injection, a critical policy
    violation, a blocked action and an agent error, labelled as the simulator's agents.
    """
    events: list[Event] = []
    for n, agent in enumerate(make_agents(agents, seed)):
        common: JSON = {
            "schema_version": 1, "ts": ts, "agent_id": agent.agent_id,
            "agent_version": agent.parameters.agent_version, "environment": agent.environment,
            "session_id": f"incident-{seed}-{n}",
        }  # fmt: skip
        events += [
            LlmCall(event_id=f"inc-{seed}-{n}-llm", model=UNPRICED_MODEL, provider="acme",
                    input_tokens=900, output_tokens=120, latency_ms=2100.0, **common),
            Security(event_id=f"inc-{seed}-{n}-sec", category="prompt_injection",
                     action="blocked", severity="high", **common),
            PolicyCheck(event_id=f"inc-{seed}-{n}-pol", policy_id="pii-output",
                        outcome="violation", severity="critical", latency_ms=5.0, **common),
            PolicyCheck(event_id=f"inc-{seed}-{n}-blk", policy_id="tool-allowlist",
                        outcome="blocked", severity="high", latency_ms=3.0, **common),
            Error(event_id=f"inc-{seed}-{n}-err", error_type="UnhandledException",
                  status="error", **common),
        ]  # fmt: skip
    return events


def landed_fleet(
    agents: int,
    seed: int,
    start: dt.datetime,
    end: dt.datetime,
    rate: float,
    extra: tuple[bytes, ...] = (),
) -> LandedBatch:
    """A simulated fleet landed by the processor's pure core, as one partition batch."""
    fleet = Fleet(make_agents(agents, seed), seed=seed, start=start, events_per_second=rate)
    encode = msgspec.json.Encoder().encode
    events = list(fleet.events_until(end))
    values = [encode(e) for e in events] + list(extra)
    keys = [e.session_id.encode() for e in events] + [b"extra"] * len(extra)
    stamps = [int(e.ts.timestamp() * 1000) for e in events] + [int(end.timestamp() * 1000)] * len(
        extra
    )
    batch = RawBatch("events", 0, list(range(len(values))), stamps, keys, values)
    settings = LandingSettings(max_message_bytes=1 << 20, allowed_lateness_s=86400)
    state = PartitionState(DedupIndex(settings.dedup_horizon_s, settings.dedup_max_ids))
    pricing = load_pricing(None)
    return land_batch(batch, state, settings, lambda frame: apply_pricing(frame, pricing))


def drift_rows(window_end: dt.datetime) -> pl.DataFrame:
    """One rolling and one release result of one agent, as ``drift_scores`` holds them."""
    common = {"ts": window_end, "window_end": window_end, "agent_id": "hr-1",
              "environment": "prod", "test": "two_proportion", "statistic": 4.2,
              "p_value": 1e-5, "score": 1e-4, "threshold": 0.01, "verdict": "drift",
              "n_ref": 900, "n_cur": 120}  # fmt: skip
    return pl.DataFrame([
        common | {"comparison": "rolling", "dimension": None, "baseline": "p", "candidate": "c",
                  "signal": "escalation_rate"},
        common | {"comparison": "release", "dimension": "agent_version", "baseline": "1.0.0",
                  "candidate": "1.1.0", "signal": "escalation_rate"},
        common | {"comparison": "rolling", "dimension": None, "baseline": "p", "candidate": "c",
                  "signal": "feedback_score", "test": "ks", "statistic": None, "p_value": None,
                  "score": None, "verdict": "insufficient_data"},
    ], schema=DRIFT_SCORES_SCHEMA)  # fmt: skip


@cache
def _exposition(collector: Any) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


@cache
def expositions() -> tuple[str, ...]:
    """The text of every agentwatch /metrics endpoint: a processor's once it landed a
    fleet, bad messages and all; the drift evaluator's after a window; the alert
    evaluator's with an alert firing and a breaker open (and the registry's lifecycle);
    the OTLP receiver's once a span was counted.

    A small label budget makes the cardinality guard fold some tools, so its counter
    shows too, as it does in a real fleet.
    """
    end = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
    encode = msgspec.json.Encoder().encode
    odd = tuple(encode(e) for e in incidents(8, 3, end)) + BUGGY_MESSAGES
    landed = landed_fleet(8, 3, end - dt.timedelta(minutes=4), end, 100.0, odd)
    collector = FleetCollector("events", max_label_values=10)
    collector.apply(metric_deltas([landed]))
    collector.partitions[0] = PartitionHealth()
    drift = DriftCollector()
    drift.update(drift_rows(end))
    rules = load_rules(DEFAULT_RULES_DIR)
    alerts = AlertsCollector(lambda: rules)
    burst = Alert("AgentViolationBurst", {"alertname": "AgentViolationBurst",
                                          "severity": "critical", "agent_id": "hr-1"},
                  {}, "firing", end)  # fmt: skip
    alerts.observe(Evaluation(end, (), (burst,), ()))
    alerts.set_breakers([Breaker(BreakerKey("hr-1"), state="open")])
    with tempfile.TemporaryDirectory() as folder:
        registry = registry_with_a_release(Path(folder))
        lifecycle = _exposition(LifecycleCollector(db_of(registry), Path(folder) / "catalog.yaml"))
    state = PartitionState(DedupIndex())
    state.dedup.add(np.arange(1000, dtype=np.uint64), minute=0)
    memory = MemoryCollector(lambda: [state], lambda: [Pending()], lambda: (4096, 64 << 20))
    texts = [lifecycle, *(_exposition(each) for each in (collector, drift, alerts, memory))]
    otlp, mapped = CollectorRegistry(), Mapped()
    mapped.spans[("mapped", "llm", "scope")] += 1
    OtlpMetrics(otlp).record(mapped)
    texts.append(generate_latest(otlp).decode())
    return tuple(texts)


def exported_series_names() -> frozenset[str]:
    """Every series name on agentwatch's /metrics endpoints (see :func:`expositions`)."""
    return frozenset(
        name
        for text in expositions()
        for name in re.findall(r"^(agentwatch_\w+)[{ ]", text, flags=re.MULTILINE)
    )


def metrics_queried() -> list[Any]:
    names = {
        m for model in MODELS.values() for e in expressions(model)
        for m in re.findall(r"agentwatch_\w+", e)
    }  # fmt: skip
    return sorted(names)


@pytest.mark.parametrize("metric", metrics_queried())
def test_every_metric_queried_is_on_an_agentwatch_metrics_endpoint(metric: str) -> None:
    assert metric in exported_series_names()
