"""One agent lifecycle against the real broker and store: releases held to the traffic,
redaction before storage, retirement with its breaker held on the control topic, a
retired agent that still talks, and its evidence archive."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.response.control import read_control
from agentwatch.alerts.rules import DEFAULT_RULES_DIR
from agentwatch.broker.launcher import BrokerInfo
from agentwatch.topics import TopicSpec, ensure_topics
from tests.conftest import TEST_KEYRING
from tests.lifecycle_helpers import eval_file, write_catalog
from tests.pipeline_helpers import AGENTWATCH, count, produce, run_to_idle

pytestmark = pytest.mark.integration


def event(agent: str, kind: str, **fields: Any) -> tuple[bytes, bytes]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "event_id": uuid.uuid4().hex,
        "ts": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "kind": kind,
        "agent_id": agent,
        "session_id": f"{agent}-s1",
        "environment": "prod",
    } | fields
    return doc["session_id"].encode(), json.dumps(doc).encode()


@dataclass
class Lifecycle:
    broker: BrokerInfo
    topic: str
    control: str
    db: Path
    catalog: Path
    folder: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        wide = {**os.environ, "COLUMNS": "250"}  # alert names stay on one line
        return subprocess.run(
            [*AGENTWATCH, *args], capture_output=True, text=True, timeout=180, cwd=self.folder,
            env=wide,
        )  # fmt: skip

    def registry_args(self) -> list[str]:
        return ["--db", str(self.db), "--catalog", str(self.catalog), "--by", "ana"]

    def firing(self) -> str:
        rules = self.folder / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "governance.yaml").write_text((DEFAULT_RULES_DIR / "governance.yaml").read_text())
        done = self.cli(
            "--log-format", "text", "alerts", "run", "--once", "--no-response",
            "--db", str(self.db), "--catalog", str(self.catalog), "--rules", str(rules),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout


@pytest.fixture(scope="module")
def lifecycle(
    kafka_broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lifecycle]:
    folder = tmp_path_factory.mktemp("lifecycle")
    topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_broker.bootstrap, [TopicSpec(topic, 1)])
    life = Lifecycle(
        kafka_broker, topic, f"control-{uuid.uuid4().hex[:8]}",
        folder / "data" / "agentwatch.sqlite", write_catalog(folder), folder,
    )  # fmt: skip
    produce(
        kafka_broker.bootstrap,
        topic,
        [
            event("claims-1", "llm_call", agent_version="1.4.0", model="claude-3-5-sonnet",
                  input_tokens=10, output_tokens=5),
            event("claims-1", "escalation", agent_version="1.4.0",
                  reason="caller jane.doe@example.com wants a human"),
            event("faq-1", "tool_call", agent_version="0.1", tool_name="kb.search"),
        ],
    )  # fmt: skip
    run_to_idle(kafka_broker, topic, life.db)
    registered = life.cli(
        "releases", "register", "claims-1", "1.4.0", "--model", "claude-3-5-sonnet",
        "--tool", "claims.create", "--eval", str(eval_file(folder)), *life.registry_args(),
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    yield life


def test_an_unapproved_high_risk_release_in_prod_fires_until_approved(lifecycle: Lifecycle) -> None:
    assert "UnapprovedReleaseInProd" in lifecycle.firing()
    approved = lifecycle.cli("releases", "approve", "claims-1", "1.4.0", *lifecycle.registry_args())
    assert approved.returncode == 0, approved.stderr
    assert "UnapprovedReleaseInProd" not in lifecycle.firing()


def test_personal_data_is_redacted_before_it_is_stored(lifecycle: Lifecycle) -> None:
    reasons = count(
        lifecycle.db,
        "SELECT count(*) FROM events WHERE reason = 'caller [REDACTED:email] wants a human'",
    )
    assert reasons == 1
    assert count(lifecycle.db, "SELECT count(*) FROM events WHERE reason LIKE '%example.com%'") == 0


def retired(lifecycle: Lifecycle) -> subprocess.CompletedProcess[str]:
    archive = lifecycle.folder / "archive"
    if not archive.exists():
        done = lifecycle.cli(
            "agents", "retire", "faq-1", "--reason", "replaced by the new help centre",
            "--bootstrap", lifecycle.broker.bootstrap, "--control-topic", lifecycle.control,
            "--archive-dir", str(archive), *lifecycle.registry_args(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done
    return subprocess.CompletedProcess([], 0, "", "")


def archive_path(lifecycle: Lifecycle) -> Path:
    retired(lifecycle)
    (path,) = (lifecycle.folder / "archive" / "faq-1").iterdir()
    return path


def test_retiring_holds_the_agents_breaker_open_on_the_control_topic(lifecycle: Lifecycle) -> None:
    retired(lifecycle)
    applied = read_control(lifecycle.broker.bootstrap, lifecycle.control, keyring=TEST_KEYRING)
    (message,) = [a.message for a in applied.values() if a.message.agent_id == "faq-1"]
    assert message.state == "open"
    closing = lifecycle.cli(
        "breaker", "close", "faq-1", "--reason", "try", "--by", "eve",
        "--bootstrap", lifecycle.broker.bootstrap, "--control-topic", lifecycle.control,
        "--db", str(lifecycle.db), "--catalog", str(lifecycle.catalog),
    )  # fmt: skip
    assert closing.returncode == 1
    assert "retired" in closing.stderr.strip().splitlines()[-1]


def test_retiring_marks_the_entry_retired_and_records_each_step(lifecycle: Lifecycle) -> None:
    retired(lifecycle)
    shown = lifecycle.cli("agents", "show", "faq-1", "--format", "json", *lifecycle.registry_args())
    entry = json.loads(shown.stdout)["entry"]
    assert entry["status"] == "retired"
    assert entry["retired_on"] == dt.datetime.now(dt.UTC).date().isoformat()
    steps = count(
        lifecycle.db,
        "SELECT count(*) FROM actions WHERE runbook = 'retire-agent' AND result = 'ok'",
    )
    assert steps == 4  # breaker, notice, archive, mark retired (faq-1 has no credentials)
    assert count(lifecycle.db, "SELECT count(*) FROM notifications WHERE status = 'sent'") >= 1


def test_an_event_from_a_retired_agent_raises_retired_agent_active(lifecycle: Lifecycle) -> None:
    retired(lifecycle)
    produce(
        lifecycle.broker.bootstrap,
        lifecycle.topic,
        [event("faq-1", "tool_call", agent_version="0.1", tool_name="kb.search")],
    )
    run_to_idle(lifecycle.broker, lifecycle.topic, lifecycle.db)
    assert "RetiredAgentActive" in lifecycle.firing()


def test_the_archive_verifies_until_it_is_tampered_with(lifecycle: Lifecycle) -> None:
    path = archive_path(lifecycle)
    ok = lifecycle.cli("archive", "verify", str(path))
    assert ok.returncode == 0, ok.stderr
    events = path / "events.parquet"
    events.write_bytes(events.read_bytes()[:-8] + b"tampered")
    bad = lifecycle.cli("archive", "verify", str(path))
    assert bad.returncode == 1
    assert "events.parquet: SHA-256" in bad.stderr.strip().splitlines()[-1]


def test_retiring_an_unknown_agent_exits_2_before_any_step(lifecycle: Lifecycle) -> None:
    done = lifecycle.cli(
        "agents", "retire", "ghost-1", "--reason", "x", "--bootstrap",
        lifecycle.broker.bootstrap, "--control-topic", lifecycle.control,
        *lifecycle.registry_args(),
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown agent 'ghost-1'" in done.stderr.strip().splitlines()[-1]
