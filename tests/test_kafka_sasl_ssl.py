"""The whole pipeline over TLS and SCRAM-SHA-512, against `broker start --security sasl_ssl`.

An SDK agent emits over SASL_SSL, the processor lands its events, `alerts run` fires
the violation-burst rule and its runbook opens the agent's breaker, and the SDK halts
the agent and confirms: every client logs in with the broker's SCRAM user.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import agentwatch.alerts
from agentwatch.alerts.governance.catalog import load_catalog
from agentwatch.alerts.response.incident import MisbehavingAgent, wait_for_chain
from agentwatch.broker.launcher import BrokerInfo, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.broker.tls import BrokerSecurity
from agentwatch.kafka import KafkaSecurity, Secret, client_options
from agentwatch.topics import TopicSpec, ensure_topics
from tests.conftest import require_tool
from tests.pipeline_helpers import AGENTWATCH, count, wait_for

pytestmark = pytest.mark.integration

AGENT = "it-support-3"
ALERTS = Path(agentwatch.alerts.__file__).parent
SHIPPED_CATALOG = ALERTS / "governance" / "catalog.yaml"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    require_tool("kafka")
    require_tool("java")
    require_tool("openssl")
    data_dir = tmp_path_factory.mktemp("kafka-sasl-ssl")
    info = start_broker(data_dir, free_port(), heap="384m", security="sasl_ssl")
    try:
        yield info
    finally:
        stop_broker(data_dir)


def one_agent_catalog(folder: Path) -> Path:
    doc = yaml.safe_load(SHIPPED_CATALOG.read_text())
    doc = {k: v for k, v in doc.items() if not str(k).startswith("x-")}
    doc["agents"] = [a for a in doc["agents"] if a["agent_id"] == AGENT]
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def fast_violation_rule(folder: Path) -> Path:
    doc = yaml.safe_load((ALERTS / "rules" / "safety.yaml").read_text())
    rule = next(r for r in doc["rules"] if r["name"] == "AgentViolationBurst")
    rule |= {"for": "2s", "min_samples": 20}
    folder.mkdir(parents=True)
    (folder / "safety.yaml").write_text(yaml.safe_dump({"rules": [rule]}))
    return folder


def test_a_wrong_password_is_refused(secure_broker: BrokerInfo) -> None:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    files = BrokerSecurity(secure_broker.data_dir)
    wrong = KafkaSecurity(
        protocol="SASL_SSL",
        ca_file=str(files.ca_file),
        sasl_mechanism="SCRAM-SHA-512",
        username="agentwatch",
        password=Secret("not-the-password"),
    )
    with pytest.raises(KafkaError):
        KafkaAdminClient(
            **client_options(secure_broker.bootstrap, wrong),
            bootstrap_timeout_ms=4000,
            request_timeout_ms=4000,
        )


def test_the_pipeline_contains_an_agent_over_tls_and_scram(
    secure_broker: BrokerInfo, tmp_path: Path
) -> None:
    security = secure_broker.client_security
    assert security is not None and security.protocol == "SASL_SSL"
    config = ["--config", str(BrokerSecurity(secure_broker.data_dir).client_config)]
    bootstrap = ["--bootstrap", secure_broker.bootstrap]
    events = f"events-{uuid.uuid4().hex[:8]}"
    control = f"control-{uuid.uuid4().hex[:8]}"
    ensure_topics(secure_broker.bootstrap, [TopicSpec(events, 3)], security=security)
    db = tmp_path / "data" / "agentwatch.sqlite"
    catalog = one_agent_catalog(tmp_path)
    rules = fast_violation_rule(tmp_path / "rules")
    entry = load_catalog(catalog).get(AGENT)
    assert entry is not None
    procs = [
        subprocess.Popen(
            [*AGENTWATCH, *config, "process", *bootstrap, "--topic", events,
             "--db", str(db), "--flush-interval", "0.3"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "process.log").open("wb"),
        )
    ]  # fmt: skip
    agent = MisbehavingAgent(
        secure_broker.bootstrap, entry, topic=events, control_topic=control, security=security
    )
    try:
        agent.start()
        wait_for(lambda: db.exists() and count(db, "SELECT count(*) FROM events") > 50, 90,
                 "the agent's first events landed over SASL_SSL")  # fmt: skip
        procs.append(
            subprocess.Popen(
                [*AGENTWATCH, *config, "alerts", "run", "--db", str(db), "--rules", str(rules),
                 "--catalog", str(catalog), "--interval", "1", *bootstrap,
                 "--control-topic", control],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        since = dt.datetime.now(dt.UTC)
        agent.start_burst()
        steps = wait_for_chain(db, AGENT, since, timeout_s=120)
    finally:
        run = agent.close()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)
    missing = [s.step for s in steps if s.at is None]
    assert not missing, f"never happened over SASL_SSL: {missing}"
    assert run.halted_before is not None and run.halted_before.startswith("tool_call")
