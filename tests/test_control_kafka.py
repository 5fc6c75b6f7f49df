"""Breakers against the real broker: a person or a runbook opens one, the SDK halts before
its next call and confirms through the events topic, probes close it again, and an SDK
cut off from Kafka keeps the last states it knew without ever blocking.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.breaker import BreakerKey
from agentwatch.alerts.response.control import BreakerControl, read_control
from agentwatch.alerts.response.observations import EventsTopicSource
from agentwatch.alerts.response.runbook_files import load_runbooks
from agentwatch.alerts.response.runbooks import RunbookContext, run_runbook
from agentwatch.alerts.response.supervisor import BreakerSupervisor, CycleReport
from agentwatch.broker.launcher import BrokerInfo, start_broker, stop_broker
from agentwatch.broker.ports import free_port
from agentwatch.cli import build_parser
from agentwatch.ingest.sdk.control import AgentHalted, ControlFollower, ControlState
from agentwatch.ingest.sdk.tracer import Tracer
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from agentwatch.settings import Settings
from tests.conftest import TEST_KEYRING, TopicFactory, require_tool

COMPACT = {"cleanup.policy": "compact"}
WAIT = 30.0


class Clock:
    """Real time, which a test may move ahead to skip a cooldown."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


def cycle_until(
    supervisor: BreakerSupervisor, done: Callable[[CycleReport], bool], timeout: float = WAIT
) -> CycleReport:
    """Run supervision cycles (each waits on the events topic) until ``done`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        report = supervisor.cycle()
        if done(report):
            return report
        assert time.monotonic() < deadline, "the awaited observation never came"


def actions(data_dir: Path) -> list[dict[str, object]]:
    rows = LakeStore(data_dir / METADATA_FILE).read_log("actions").sort("ts")
    return list(rows.iter_rows(named=True))


def cli(*args: str) -> int:
    """The command line as a user runs it, minus main()'s logging setup (pytest owns that)."""
    parsed = build_parser(Settings()).parse_args(list(args))
    code: int = parsed.handler(parsed)
    return code


@pytest.mark.integration
def test_a_person_opens_a_breaker_the_agent_halts_confirms_and_resumes_once_closed(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bootstrap = kafka_broker.bootstrap
    control_topic = topic(partitions=1, config=COMPACT)
    events_topic = topic(partitions=3)
    db = tmp_path / "data" / "agentwatch.sqlite"
    where = ["--bootstrap", bootstrap, "--control-topic", control_topic, "--db", str(db)]

    tracer = Tracer.to_kafka(bootstrap, events_topic, agent_id="hr-assistant", linger_ms=0)
    follower = ControlFollower(bootstrap, "hr-assistant", topic=control_topic).attach(tracer)
    control = BreakerControl.connect(bootstrap, control_topic, keyring=TEST_KEYRING)
    source = EventsTopicSource(bootstrap, events_topic, agents=["hr-assistant"])
    supervisor = BreakerSupervisor(control, source, timeout_s=60, store=LakeStore(db))
    try:
        follower.start(wait_s=WAIT)
        assert follower.state.loaded
        ran: list[str] = []
        with tracer.session("before") as s, s.tool_call("payroll_lookup"):
            ran.append("before")

        reason = "leaked salary data"
        assert (
            cli("breaker", "open", "hr-assistant", "--reason", reason, "--by", "ana", *where) == 0
        )
        assert follower.state.wait_for(lambda st: st.breaker_state() == "open", WAIT)

        with tracer.session("halted") as s:
            with pytest.raises(AgentHalted) as halted, s.tool_call("payroll_lookup"):
                ran.append("tool")
            with pytest.raises(AgentHalted), s.llm_call("gpt-4o"):
                ran.append("llm")
        assert ran == ["before"]
        assert halted.value.actor == "person:ana" and halted.value.reason == "leaked salary data"
        assert tracer.flush(WAIT)

        control_id = halted.value.control_id
        cycle_until(supervisor, lambda r: supervisor.tracker.status(control_id) == "confirmed")
        found = supervisor.tracker.expectation(control_id)
        assert found is not None and found.session_id == "halted"

        capsys.readouterr()
        assert cli("breaker", "status", "hr-assistant", "--format", "json", *where) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert (row["breaker"], row["state"], row["control_id"]) == (
            "hr-assistant",
            "open",
            control_id,
        )

        assert (
            cli("breaker", "close", "hr-assistant", "--reason", "fixed", "--by", "ana", *where) == 0
        )
        assert follower.state.wait_for(lambda st: st.breaker_state() == "closed", WAIT)
        with tracer.session("after") as s, s.tool_call("payroll_lookup"):
            ran.append("after")
        assert ran == ["before", "after"]
    finally:
        follower.close()
        tracer.close(5)
        source.close()
        control.disconnect()

    audit = [(r["action"], r["actor"], r["result"]) for r in actions(db.parent)]
    assert audit == [
        ("open_breaker", "person:ana", "ok"),
        ("confirm_breaker", "system:confirm", "ok"),
        ("close_breaker", "person:ana", "ok"),
    ]
    states = read_control(bootstrap, control_topic, keyring=TEST_KEYRING)
    assert states["hr-assistant"].message.state == "closed"


@pytest.mark.integration
def test_breaker_status_shows_each_breaker_and_retired_agents_are_held_open(
    kafka_broker: BrokerInfo,
    topic: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The shipped example catalog lists finance-compliance-3 as retired.
    control_topic = topic(partitions=1, config=COMPACT)
    where = ["--bootstrap", kafka_broker.bootstrap, "--control-topic", control_topic]
    where += ["--catalog", str(EXAMPLE_CATALOG)]
    where += ["--db", str(tmp_path / "agentwatch.sqlite")]
    assert cli("breaker", "status", *where) == 0
    table = capsys.readouterr().out
    assert "finance-compliance-3" in table and "held (retired)" in table
    assert (
        read_control(kafka_broker.bootstrap, control_topic, keyring=TEST_KEYRING) == {}
    )  # reading wrote nothing

    args = ["--tool", "search", "--reason", "flaky", "--by", "bo", "--cooldown", "90s", *where]
    assert cli("breaker", "open", "it-support", *args) == 0
    assert cli("breaker", "open", "it-support", *args) == 0  # already open: no new message
    assert "already open" in capsys.readouterr().out
    assert cli("breaker", "close", "finance-compliance-3", "--reason", "x", *where) == 1
    assert "retired" in capsys.readouterr().err

    assert cli("breaker", "status", "--format", "json", *where) == 0
    rows = {r["breaker"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"finance-compliance-3", "it-support/search"}
    search = rows["it-support/search"]
    assert (search["state"], search["actor"], search["reason"]) == ("open", "person:bo", "flaky")
    assert search["cooldown"].endswith("s left")
    assert rows["finance-compliance-3"]["cooldown"] == "held (retired)"
    assert cli("breaker", "status", *where) == 0
    table = capsys.readouterr().out
    assert "it-support/search" in table and "flaky" in table

    # The first write published the hold, so the retired agent's SDK halts too.
    states = read_control(kafka_broker.bootstrap, control_topic, keyring=TEST_KEYRING)
    held = states["finance-compliance-3"].message
    assert (held.state, held.actor) == ("open", "system:catalog")
    assert len(states) == 2


@pytest.mark.integration
def test_a_runbook_disables_a_tool_and_probes_close_it_through_half_open(
    kafka_broker: BrokerInfo, topic: TopicFactory, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    control_topic = topic(partitions=1, config=COMPACT)
    events_topic = topic(partitions=3)
    store = LakeStore(tmp_path / "data" / METADATA_FILE)
    clock = Clock()
    alert = Alert(
        rule="ToolErrorBurst",
        labels={"alertname": "ToolErrorBurst", "severity": "critical"}
        | {"agent_id": "it-support", "tool_name": "reset_password"},
        annotations={"summary": "reset_password fails for 40% of calls"},
        state="firing",
        starts_at=clock(),
    )
    key = BreakerKey("it-support", "reset_password")

    tracer = Tracer.to_kafka(bootstrap, events_topic, agent_id="it-support", linger_ms=0)
    follower = ControlFollower(bootstrap, "it-support", topic=control_topic).attach(tracer)
    control = BreakerControl.connect(bootstrap, control_topic, clock=clock, keyring=TEST_KEYRING)
    source = EventsTopicSource(bootstrap, events_topic, agents=["it-support"])
    supervisor = BreakerSupervisor(control, source, timeout_s=60, store=store, clock=clock)
    context = RunbookContext(store=store, control=control, clock=clock)

    def state_is(wanted: str) -> Callable[[ControlState], bool]:
        return lambda st: st.breaker_state("reset_password") == wanted

    def settled(report: CycleReport) -> bool:
        return bool(report.verdicts)

    try:
        follower.start(wait_s=WAIT)
        rows = run_runbook(load_runbooks()["disable-tool"], alert, context)
        assert [(r["action"], r["result"]) for r in rows] == [
            ("disable_tool", "ok"),
            ("notify_owner", "skipped"),
        ]
        assert run_runbook(load_runbooks()["disable-tool"], alert, context) == []
        assert follower.state.wait_for(state_is("open"), WAIT)

        with tracer.session("s1") as s:
            with pytest.raises(AgentHalted) as halted, s.tool_call("reset_password"):
                pass
            with s.tool_call("lookup_user"):  # the agent's other tools still work
                pass
        assert tracer.flush(WAIT)
        opened = halted.value.control_id
        cycle_until(supervisor, lambda r: supervisor.tracker.status(opened) == "confirmed")

        # Cooldown over: half-open; the probe fails, so the breaker opens again.
        clock.advance(3601)
        report = supervisor.cycle()
        assert [t.breaker.state for t in report.transitions] == ["half_open"]
        assert follower.state.wait_for(state_is("half_open"), WAIT)
        with tracer.session("s2") as s:
            with pytest.raises(TimeoutError), s.tool_call("reset_password"):
                raise TimeoutError("directory service down")  # the probe runs, and fails
            with pytest.raises(AgentHalted), s.tool_call("reset_password"):
                pass  # one probe per half-open; the rest wait
        assert tracer.flush(WAIT)
        report = cycle_until(supervisor, settled)
        assert [(v.key, v.ok) for v in report.verdicts] == [(key, False)]
        assert follower.state.wait_for(state_is("open"), WAIT)
        with (
            tracer.session("s3") as s,
            pytest.raises(AgentHalted) as again,
            s.tool_call("reset_password"),
        ):
            pass
        assert tracer.flush(WAIT)
        reopened = again.value.control_id
        cycle_until(supervisor, lambda r: supervisor.tracker.status(reopened) == "confirmed")

        # Next cooldown: the probe goes well and the breaker closes.
        clock.advance(3601)
        supervisor.cycle()
        assert follower.state.wait_for(state_is("half_open"), WAIT)
        with tracer.session("s4") as s, s.tool_call("reset_password"):
            pass
        assert tracer.flush(WAIT)
        report = cycle_until(supervisor, settled)
        assert [(v.key, v.ok) for v in report.verdicts] == [(key, True)]
        assert follower.state.wait_for(state_is("closed"), WAIT)
        with tracer.session("s5") as s, s.tool_call("reset_password"):
            pass
        assert [a for r in [supervisor.cycle()] for a in r.alerts] == []
    finally:
        follower.close()
        tracer.close(5)
        source.close()
        control.disconnect()

    audit = [(r["action"], r["result"]) for r in actions(Path(store.db).parent)]
    assert audit == [
        ("disable_tool", "ok"),
        ("notify_owner", "skipped"),
        ("confirm_breaker", "ok"),
        ("probe", "failed"),
        ("confirm_breaker", "ok"),
        ("probe", "ok"),
    ]


@pytest.mark.integration
def test_an_sdk_cut_off_from_kafka_keeps_the_last_states_and_never_blocks(tmp_path: Path) -> None:
    require_tool("java")
    require_tool("kafka")
    data_dir = tmp_path / "broker"
    broker = start_broker(data_dir, free_port())
    tracer = Tracer.to_kafka(broker.bootstrap, "agent-events", agent_id="finance-compliance")
    follower = ControlFollower(broker.bootstrap, "finance-compliance", retry_backoff_s=0.05)
    follower.attach(tracer)
    try:
        control = BreakerControl.connect(broker.bootstrap, keyring=TEST_KEYRING)
        control.open("finance-compliance", reason="budget overrun", actor="person:ana")
        control.disconnect()
        follower.start(wait_s=WAIT)
        assert follower.state.breaker_state() == "open"
    finally:
        stop_broker(data_dir)

    slowest = 0.0
    for _ in range(50):
        started = time.perf_counter()
        with tracer.session() as s, pytest.raises(AgentHalted), s.tool_call("ledger"):
            pass
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05
    assert follower.state.breaker_state() == "open"
    follower.close()
    tracer.close(1)


def test_an_sdk_whose_broker_never_answers_lets_calls_through_at_once() -> None:
    # No broker at all: the follower never loads, so nothing is known to be open.
    tracer = Tracer.to_kafka(f"127.0.0.1:{free_port()}", agent_id="a", buffer_size=10)
    follower = ControlFollower(f"127.0.0.1:{free_port()}", "a").attach(tracer)
    started = time.perf_counter()
    follower.start(wait_s=0.2)
    assert not follower.state.loaded
    for _ in range(100):
        with tracer.session() as s, s.tool_call("search"):
            pass
    assert time.perf_counter() - started < 2.0
    follower.close()
    tracer.close(0.5)


@pytest.mark.integration
def test_a_forged_control_record_from_plain_kafka_python_does_not_halt_the_agent(
    kafka_broker: BrokerInfo, topic: TopicFactory
) -> None:
    from kafka import KafkaProducer

    bootstrap = kafka_broker.bootstrap
    control_topic = topic(partitions=1, config=COMPACT)
    forged = {
        "id": "f0",
        "type": "breaker",
        "agent_id": "victim",
        "state": "open",
        "actor": "person:mallory",
        "at": "2026-12-01T09:00:00Z",
    }
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(control_topic, key=b"victim", value=json.dumps(forged).encode()).get(10)
    follower = ControlFollower(bootstrap, "victim", topic=control_topic)
    control = BreakerControl.connect(bootstrap, control_topic, keyring=TEST_KEYRING)
    try:
        follower.start(wait_s=WAIT)
        assert follower.state.loaded and follower.state.breaker_state() == "closed"
        assert follower.stats()["rejected"] == 1
        assert [s.breaker.key.agent_id for s in control.status()] == []  # not shown either
        assert control.topic.rejected == 1
        forged["state"], forged["id"] = "closed", "f1"
        control.open("victim", reason="real incident", actor="person:ana")
        assert follower.state.wait_for(lambda st: st.breaker_state() == "open", WAIT)
        # A forged close after a real open changes nothing.
        producer.send(control_topic, key=b"victim", value=json.dumps(forged).encode()).get(10)
        producer.send(control_topic, key=b"victim", value=None).get(10)  # unsigned tombstone
        deadline = time.monotonic() + WAIT
        while follower.stats()["rejected"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert follower.stats()["rejected"] == 3
        assert follower.state.breaker_state() == "open"
    finally:
        producer.close()
        follower.close()
        control.disconnect()
