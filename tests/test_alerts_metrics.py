"""The alert evaluator's /metrics: active alerts as Prometheus's ALERTS convention has them,
the rules with their runbooks, the breakers from the supervisor, and `alerts run` serving
them on --metrics-port."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.evaluation.metrics import AlertsCollector
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.breaker import Breaker, BreakerKey
from agentwatch.alerts.response.control import BreakerStatus
from agentwatch.alerts.response.respond import Response
from agentwatch.alerts.rules import DEFAULT_RULES_DIR, load_rules
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.frames import events, store_batch
from tests.pipeline_helpers import AGENTWATCH

NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def alert(rule: str, state: str, agent: str | None, started_s: float, **labels: str) -> Alert:
    base = {"alertname": rule, "severity": "critical" if state == "firing" else "warning"}
    if agent is not None:
        base["agent_id"] = agent
    return Alert(
        rule=rule, labels=base | labels, annotations={}, state=cast(Any, state),
        starts_at=NOW - dt.timedelta(seconds=started_s),
    )  # fmt: skip


def scrape(collector: AlertsCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def named(samples: Samples, name: str) -> Samples:
    return {k: v for k, v in samples.items() if k[0] == name}


def evaluation(*alerts: Alert) -> Evaluation:
    return Evaluation(at=NOW, transitions=(), alerts=alerts, verdicts=())


def test_each_pending_or_firing_alert_is_a_series_of_value_one() -> None:
    collector = AlertsCollector()
    collector.observe(evaluation(
        alert("AgentViolationBurst", "firing", "hr-1", 90),
        alert("AgentLatencyHigh", "pending", "hr-2", 20),
    ))  # fmt: skip
    got = named(scrape(collector), "agentwatch_alerts")
    assert got == {
        key("agentwatch_alerts", alertname="AgentViolationBurst", severity="critical",
            agent_id="hr-1", state="firing"): 1.0,
        key("agentwatch_alerts", alertname="AgentLatencyHigh", severity="warning",
            agent_id="hr-2", state="pending"): 1.0,
    }  # fmt: skip


def test_alerts_sharing_the_labels_are_counted_and_start_with_the_earliest() -> None:
    collector = AlertsCollector()
    collector.observe(evaluation(
        alert("ToolErrors", "firing", "hr-1", 300, tool_name="kb.search"),
        alert("ToolErrors", "firing", "hr-1", 60, tool_name="ticket.create"),
    ))  # fmt: skip
    samples = scrape(collector)
    labels = {"alertname": "ToolErrors", "severity": "critical", "agent_id": "hr-1",
              "state": "firing"}  # fmt: skip
    assert samples[key("agentwatch_alerts", **labels)] == 2.0
    started = samples[key("agentwatch_alerts_started_timestamp_seconds", **labels)]
    assert started == (NOW - dt.timedelta(seconds=300)).timestamp()


def test_a_fleet_wide_alert_has_an_empty_agent_id() -> None:
    collector = AlertsCollector()
    collector.observe(evaluation(alert("PipelineStalled", "firing", None, 10)))
    got = named(scrape(collector), "agentwatch_alerts")
    # Prometheus stores an empty label as no label: the series has no agent_id there.
    assert got == {key("agentwatch_alerts", alertname="PipelineStalled", severity="critical",
                       agent_id="", state="firing"): 1.0}  # fmt: skip


def test_an_evaluation_replaces_the_alerts_of_the_one_before() -> None:
    collector = AlertsCollector()
    collector.observe(evaluation(alert("AgentViolationBurst", "firing", "hr-1", 90)))
    collector.observe(evaluation())
    samples = scrape(collector)
    assert named(samples, "agentwatch_alerts") == {}
    assert samples[key("agentwatch_alerts_last_evaluation_timestamp_seconds")] == NOW.timestamp()


def test_nothing_claims_an_evaluation_before_the_first() -> None:
    samples = scrape(AlertsCollector())
    assert named(samples, "agentwatch_alerts_last_evaluation_timestamp_seconds") == {}


def test_every_rule_in_force_is_listed_with_its_runbook() -> None:
    rules = load_rules(DEFAULT_RULES_DIR)
    samples = named(scrape(AlertsCollector(lambda: rules)), "agentwatch_alert_rule_info")
    assert len(samples) == len(rules)
    burst = key("agentwatch_alert_rule_info", alertname="AgentViolationBurst",
                severity="critical", runbook_url="runbooks/contain-agent.yaml")  # fmt: skip
    assert samples[burst] == 1.0


def test_rules_are_read_at_each_scrape_so_a_reload_shows() -> None:
    rules = load_rules(DEFAULT_RULES_DIR)
    current = [rules[:1]]
    collector = AlertsCollector(lambda: current[0])
    assert len(named(scrape(collector), "agentwatch_alert_rule_info")) == 1
    current[0] = rules
    assert len(named(scrape(collector), "agentwatch_alert_rule_info")) == len(rules)


def test_breakers_halting_calls_are_one_and_closed_ones_zero() -> None:
    collector = AlertsCollector()
    collector.set_breakers([
        Breaker(BreakerKey("hr-1"), state="open"),
        Breaker(BreakerKey("hr-1", "kb.search"), state="half_open"),
        Breaker(BreakerKey("hr-2"), state="closed"),
    ])  # fmt: skip
    assert named(scrape(collector), "agentwatch_breaker_open") == {
        key("agentwatch_breaker_open", agent_id="hr-1", tool=""): 1.0,
        key("agentwatch_breaker_open", agent_id="hr-1", tool="kb.search"): 1.0,
        key("agentwatch_breaker_open", agent_id="hr-2", tool=""): 0.0,
    }


# --------------------------------------------------------------------------- the supervisor


@dataclass
class _Report:
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class _Control:
    breakers: list[Breaker]

    def status(self) -> list[BreakerStatus]:
        return [BreakerStatus(b, None) for b in self.breakers]


@dataclass
class _Supervisor:
    control: _Control
    cycles: int = 0

    def cycle(self) -> _Report:
        self.cycles += 1
        return _Report()


def test_each_supervisor_cycle_hands_every_breaker_to_the_breaker_sink(tmp_path: Path) -> None:
    supervisor = _Supervisor(_Control([Breaker(BreakerKey("hr-1"), state="open")]))
    response = Response(
        notifier=cast(Any, None), runbooks={}, context=cast(Any, None), connect_control=None,
        db=tmp_path / "agentwatch.sqlite", _supervisor=cast(Any, supervisor),
    )  # fmt: skip
    collector = AlertsCollector()
    response.breaker_sink = collector.set_breakers
    response.supervise(NOW)
    assert supervisor.cycles == 1
    assert named(scrape(collector), "agentwatch_breaker_open") == {
        key("agentwatch_breaker_open", agent_id="hr-1", tool=""): 1.0
    }


# --------------------------------------------------------------------------- the command


def test_alerts_run_serves_the_alerts_on_its_metrics_port(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    checks = events(*(
        {"agent_id": "hr-1", "kind": "policy_check", "ts": now - dt.timedelta(seconds=40 - i / 2),
         "outcome": "violation" if i % 2 else "pass", "event_id": f"c{i}"}
        for i in range(60)
    ))  # fmt: skip
    store = LakeStore(tmp_path / "data" / METADATA_FILE)
    store_batch(store, checks)
    store.prepare()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "safety.yaml").write_text(yaml.safe_dump({"rules": [{
        "name": "AgentViolationBurst", "metric": "failed_check_rate", "window": "5m", "op": ">",
        "threshold": 0.05, "min_samples": 20, "severity": "critical",
        "annotations": {"summary": "burst", "runbook_url": "runbooks/contain-agent.yaml"},
    }]}))  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [*AGENTWATCH, "alerts", "run", "--db", str(Path(store.db)), "--rules", str(rules),
         "--no-response", "--interval", "0.5", "--metrics-port", str(port),
         "--metrics-host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "alerts.log").open("wb"),
    )  # fmt: skip
    try:
        text = _wait_for_metrics(port, 'state="firing"', proc, tmp_path / "alerts.log")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[key("agentwatch_alerts", alertname="AgentViolationBurst",
                       severity="critical", agent_id="hr-1", state="firing")] == 1.0  # fmt: skip
    info = key("agentwatch_alert_rule_info", alertname="AgentViolationBurst",
               severity="critical", runbook_url="runbooks/contain-agent.yaml")  # fmt: skip
    assert samples[info] == 1.0
    evaluated = samples[key("agentwatch_alerts_last_evaluation_timestamp_seconds")]
    assert abs(evaluated - time.time()) < 60


def _wait_for_metrics(port: int, needle: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"alerts run exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text: str = resp.read().decode()
        except OSError:
            text = ""
        if needle in text:
            return text
        time.sleep(0.2)
    pytest.fail(f"no {needle} on /metrics: {log.read_text()[-2000:]}")
