"""End to end with the real broker: a violation burst is announced to on-call once,
contained by its runbook, confirmed stopped by the agent, and every step is audited."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import agentwatch.alerts
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.response.incident import MisbehavingAgent, wait_for_chain
from agentwatch.broker.launcher import BrokerInfo
from agentwatch.topics import TopicSpec, ensure_topics
from tests.pipeline_helpers import AGENTWATCH, count, process_cmd, wait_for

AGENT = "it-support-3"
SHIPPED_RULES = Path(agentwatch.alerts.__file__).parent / "rules"


def fast_violation_rule(folder: Path) -> Path:
    """The shipped violation-burst rule, with a short `for` so the test runs in seconds."""
    doc = yaml.safe_load((SHIPPED_RULES / "safety.yaml").read_text())
    rule = next(r for r in doc["rules"] if r["name"] == "AgentViolationBurst")
    rule |= {"for": "2s", "min_samples": 20}
    folder.mkdir(parents=True)
    (folder / "safety.yaml").write_text(yaml.safe_dump({"rules": [rule]}))
    return folder


@pytest.fixture(scope="module")
def incident(
    kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str, MisbehavingAgent, dt.datetime]]:
    """One incident, watched by every test of this module."""
    tmp_path = tmp_path_factory.mktemp("incident")
    name = f"incident-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_broker.bootstrap, [TopicSpec(name, 3)])
    control = f"control-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "data" / "agentwatch.sqlite"
    rules = fast_violation_rule(tmp_path / "rules")
    procs = [
        subprocess.Popen(process_cmd(kafka_broker, name, db, "--flush-interval", "0.3"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    entry = load_catalog(EXAMPLE_CATALOG).get(AGENT)
    assert entry is not None
    agent = MisbehavingAgent(kafka_broker.bootstrap, entry, topic=name, control_topic=control)
    try:
        agent.start()
        wait_for(lambda: db.exists() and count(db, "SELECT count(*) FROM events") > 50, 60,
                 "the agent's first events landed")  # fmt: skip
        procs.append(
            subprocess.Popen(
                [*AGENTWATCH, "alerts", "run", "--db", str(db), "--rules", str(rules),
                 "--interval", "1", "--bootstrap", kafka_broker.bootstrap,
                 "--control-topic", control, "--catalog", str(EXAMPLE_CATALOG)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        since = dt.datetime.now(dt.UTC)
        agent.start_burst()
        yield db, control, agent, since
    finally:
        agent.close()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)


def test_the_whole_chain_happens_in_order(
    incident: tuple[Path, str, MisbehavingAgent, dt.datetime],
) -> None:
    db, _, _, since = incident
    steps = wait_for_chain(db, AGENT, since, timeout_s=120)
    missing = [s.step for s in steps if s.at is None]
    assert not missing, f"never happened: {missing}"
    at = {s.step: s.at for s in steps}
    assert at["first policy violation"] <= at["alert pending"] <= at["alert firing"]  # type: ignore[operator]
    # on-call hears of it after the group wait; the runbook does not wait for that
    assert at["alert firing"] <= at["on-call notified"]  # type: ignore[operator]
    assert at["alert firing"] <= at["breaker opened"] <= at["agent halted and confirmed"]  # type: ignore[operator]


def test_the_agent_is_halted_before_its_next_tool_call(
    incident: tuple[Path, str, MisbehavingAgent, dt.datetime],
) -> None:
    db, _, agent, since = incident
    wait_for_chain(db, AGENT, since, timeout_s=120)
    assert agent.run.halted_at is not None
    assert agent.run.halted_before is not None
    assert agent.run.halted_before.startswith("tool_call")


def test_on_call_gets_the_alert_once_in_the_alertmanager_format(
    incident: tuple[Path, str, MisbehavingAgent, dt.datetime],
) -> None:
    db, _, _, since = incident
    wait_for_chain(db, AGENT, since, timeout_s=120)
    oncall = load_catalog(EXAMPLE_CATALOG).get(AGENT).oncall  # type: ignore[union-attr]
    lines = (db.parent / "notifications" / f"{oncall}.jsonl").read_text().splitlines()
    payloads = [json.loads(line) for line in lines]
    firing = [
        p for p in payloads
        if p["status"] == "firing" and p["commonLabels"].get("alertname") == "AgentViolationBurst"
    ]  # fmt: skip
    assert len(firing) == 1
    assert firing[0]["version"] == "4"
    assert firing[0]["alerts"][0]["labels"]["agent_id"] == AGENT


def test_every_runbook_step_is_in_the_audit_table(
    incident: tuple[Path, str, MisbehavingAgent, dt.datetime],
) -> None:
    db, _, _, since = incident
    wait_for_chain(db, AGENT, since, timeout_s=120)
    wait_for(
        lambda: count(db, f"SELECT count(*) FROM actions WHERE agent_id = '{AGENT}' "
                          "AND action = 'notify_owner' AND result = 'ok'") == 1,
        30, "the owner notice step",
    )  # fmt: skip
    assert (
        count(
            db,
            f"SELECT count(*) FROM actions WHERE agent_id = '{AGENT}' AND action = 'open_breaker' "
            "AND result = 'ok' AND actor LIKE 'rule:%'",
        )
        == 1
    )
