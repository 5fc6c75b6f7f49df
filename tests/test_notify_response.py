"""Notifications around the response: owner notices, silences over what derives from an
alert, resolved wording, failed runbook steps, and receivers that hang."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.evaluation.metrics import serve_metrics
from agentwatch.alerts.evaluation.states import Transition
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import parse_notify_config
from agentwatch.alerts.notify.notifier import Notifier
from agentwatch.alerts.notify.receivers import Notification
from agentwatch.alerts.notify.routing import Matcher
from agentwatch.alerts.notify.senders import Senders, ThreadedSenders
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.response.control import BreakerControl
from agentwatch.alerts.response.respond import Response, owner_notifier
from agentwatch.alerts.response.runbook_files import load_runbooks, parse_runbook
from agentwatch.alerts.response.runbooks import RunbookContext
from agentwatch.broker.ports import free_port
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE
from tests.test_runbooks import FakeTopic

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)

# Critical alerts page the on-call receiver; everything else, owner notices included,
# goes to the owner receiver, as in the shipped notify.yaml.
CONFIG = yaml.safe_load(
    """
route:
  receiver: owner
  group_by: [alertname, agent_id]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall
    - matchers: ['severity=~"error|warning|info"']
      receiver: owner
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity=~"warning|info"', 'owner_notice!="true"']
    equal: [agent_id]
receivers:
  - name: oncall
    file_configs: [{path: unused.jsonl}]
  - name: owner
    file_configs: [{path: unused.jsonl}]
"""
)


@dataclass
class Receiver:
    sent: list[Notification] = field(default_factory=list)
    hang: threading.Event | None = None  # when set up, send blocks until it is set (60 s)
    send_resolved: bool = True
    kind: ClassVar[str] = "fake"

    def send(self, notification: Notification) -> None:
        if self.hang is not None:
            self.hang.wait(60)
        self.sent.append(notification)


def make(
    tmp_path: Path | None = None, senders: Senders | None = None, group_wait: str = "30s"
) -> tuple[Notifier, Receiver, Receiver]:
    doc = {**CONFIG, "route": {**CONFIG["route"], "group_wait": group_wait}}
    config = parse_notify_config(doc, Path("/nonexistent"))
    oncall, owner = Receiver(), Receiver()
    config.receivers = {"oncall": [oncall], "owner": [owner]}
    silences = SilenceStore(tmp_path) if tmp_path is not None else None
    return Notifier(config, silences=silences, senders=senders), oncall, owner


def alert(severity: str = "critical", state: str = "firing", **over: object) -> Alert:
    a = Alert(
        rule="PolicyViolationBurst",
        labels={
            "alertname": "PolicyViolationBurst",
            "severity": severity,
            "agent_id": "it-support-3",
        },
        annotations={
            "summary": "54.9% of policy checks failed",
            "runbook_url": "https://runbooks.example/contain-agent",
        },
        state=state,  # type: ignore[arg-type]
        starts_at=T0 - 60 * S,
        value=0.549,
    )
    return dataclasses.replace(a, **over)  # type: ignore[arg-type]


def resolved(parent: Alert, at: dt.datetime, value: float = 0.02) -> Alert:
    return dataclasses.replace(parent, state="resolved", ends_at=at, value=value)


def notices(receiver: Receiver) -> list[tuple[str, str, str]]:
    return [(n.status, a.rule, a.state) for n in receiver.sent for a in n.alerts]


def test_an_owner_notice_is_resolved_when_its_alert_resolves() -> None:
    n, oncall, owner = make()
    parent = alert()
    n.process([parent], T0)
    owner_notifier(n, lambda: T0)(parent, "agent contained: its circuit breaker is open")
    n.tick(T0 + 30 * S)
    assert notices(owner) == [("firing", "PolicyViolationBurstOwnerNotice", "firing")]
    n.process([resolved(parent, T0 + 60 * S)], T0 + 60 * S)
    n.tick(T0 + 30 * S + 5 * 60 * S)
    assert notices(oncall)[-1] == ("resolved", "PolicyViolationBurst", "resolved")
    assert notices(owner)[-1] == ("resolved", "PolicyViolationBurstOwnerNotice", "resolved")
    assert n.next_wakeup() is None  # nothing left firing anywhere


def test_a_warning_and_its_owner_notice_arrive_once_on_the_owner_receiver() -> None:
    n, oncall, owner = make()
    parent = alert(severity="warning")
    n.process([parent], T0)
    owner_notifier(n, lambda: T0)(parent, "agent contained")
    n.tick(T0 + 30 * S)
    assert notices(owner) == [("firing", "PolicyViolationBurst", "firing")]
    n.process([resolved(parent, T0 + 60 * S)], T0 + 60 * S)
    n.tick(T0 + 30 * S + 5 * 60 * S)
    assert notices(owner)[-1] == ("resolved", "PolicyViolationBurst", "resolved")
    assert len(owner.sent) == 2 and oncall.sent == []


def test_a_silence_on_an_alert_mutes_its_owner_notice(tmp_path: Path) -> None:
    n, oncall, owner = make(tmp_path)
    SilenceStore(tmp_path).add(
        [Matcher.parse('alertname="PolicyViolationBurst"')],
        starts_at=T0 - S,
        ends_at=T0 + 3600 * S,
        created_by="person:ops",
        comment="maintenance",
        now=T0,
    )
    parent = alert()
    n.process([parent], T0)
    owner_notifier(n, lambda: T0)(parent, "agent contained")
    records = n.tick(T0 + 30 * S)
    assert oncall.sent == [] and owner.sent == []
    assert {r.status for r in records} == {"suppressed"}
    assert {r.receiver for r in records} == {"oncall", "owner"}


def test_a_resolved_notice_says_resolved_with_the_value_at_resolution() -> None:
    n, oncall, _ = make()
    parent = alert()
    n.process([parent], T0)
    n.tick(T0 + 30 * S)
    n.process([resolved(parent, T0 + 60 * S, value=0.0213)], T0 + 60 * S)
    n.tick(T0 + 30 * S + 5 * 60 * S)
    notice = oncall.sent[-1].alerts[0]
    assert notice.state == "resolved"
    assert notice.annotations["summary"] == (
        "Resolved: PolicyViolationBurst on it-support-3; value at resolution: 0.0213"
    )
    assert notice.annotations["firing_summary"] == "54.9% of policy checks failed"
    assert oncall.sent[0].alerts[0].annotations["summary"] == "54.9% of policy checks failed"


# -- runbooks ----------------------------------------------------------------------------


def _response(tmp_path: Path, notifier: Notifier, topic: FakeTopic) -> Response:
    store = LakeStore(tmp_path / "data" / METADATA_FILE)
    control = BreakerControl(topic, clock=lambda: T0)  # type: ignore[arg-type]
    context = RunbookContext(
        store=store,
        control=control,
        notify_owner=owner_notifier(notifier, lambda: T0),
        clock=lambda: T0,
    )
    return Response(notifier, load_runbooks(), context, None, Path(store.db), lambda: T0)


def _silence(data_dir: Path) -> None:
    SilenceStore(data_dir).add(
        [Matcher.parse('agent_id="it-support-3"')],
        starts_at=T0 - S,
        ends_at=T0 + 3600 * S,
        created_by="person:ops",
        comment="maintenance",
        now=T0,
    )


def test_a_silence_on_an_alert_holds_its_runbook(tmp_path: Path) -> None:
    n, _, _ = make(tmp_path)
    _silence(tmp_path)
    topic = FakeTopic()
    _response(tmp_path, n, topic).respond([alert()])
    assert topic.published == []


def test_a_runbook_that_says_so_runs_under_a_silence(tmp_path: Path) -> None:
    n, _, _ = make(tmp_path)
    _silence(tmp_path)
    topic = FakeTopic()
    response = _response(tmp_path, n, topic)
    book = response.runbooks["contain-agent"]
    response.runbooks = {"contain-agent": dataclasses.replace(book, run_when_silenced=True)}
    response.respond([alert()])
    assert [m.state for m in topic.published] == ["open"]  # type: ignore[attr-defined]


def test_run_when_silenced_must_be_a_boolean() -> None:
    doc = {"id": "x", "steps": [{"action": "notify_owner"}], "run_when_silenced": "yes"}
    with pytest.raises(ValueError, match="run_when_silenced"):
        parse_runbook(doc)


def test_a_failed_runbook_step_is_logged_at_error_with_its_traceback_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n, _, _ = make()
    topic = FakeTopic()
    topic.fail = True
    response = _response(tmp_path, n, topic)
    with caplog.at_level(logging.INFO):
        response.respond([alert()])
    failed = [r for r in caplog.records if r.getMessage() == "runbook step failed"]
    assert len(failed) == 1
    assert failed[0].levelno == logging.ERROR
    assert failed[0].exc_info is not None and "broker unreachable" in str(failed[0].exc_info[1])
    counter = response.context.step_failures
    value = counter.labels(runbook="contain-agent", action="open_breaker")._value.get()
    assert value == 1.0
    names = [m.name for m in counter.collect()]
    assert names == ["agentwatch_runbook_step_failures"]
    assert any(
        s.name == "agentwatch_runbook_step_failures_total"
        for m in counter.collect()
        for s in m.samples
    )


# -- a receiver that hangs -----------------------------------------------------------------


def _evaluation(at: dt.datetime, a: Alert) -> Evaluation:
    return Evaluation(at, (Transition(a, "pending"),), (a,), ())


def test_a_receiver_that_hangs_delays_neither_evaluation_nor_containment(tmp_path: Path) -> None:
    release = threading.Event()
    n, oncall, owner = make(senders=ThreadedSenders(), group_wait="0s")
    oncall.hang = release  # the on-call webhook never answers (for 60 s)
    topic = FakeTopic()
    response = _response(tmp_path, n, topic)
    sink = response.evaluation_sink()
    try:
        started = time.monotonic()
        first = alert()
        sink(_evaluation(T0, first))
        # The next evaluation, another agent contained, while on-call still hangs.
        second = alert(labels={**first.labels, "agent_id": "hr-assistant"})
        sink(_evaluation(T0 + S, second))
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"evaluations took {elapsed:.1f}s behind a hanging receiver"
        assert [(m.agent_id, m.state) for m in topic.published] == [  # type: ignore[attr-defined]
            ("it-support-3", "open"),
            ("hr-assistant", "open"),
        ]
        deadline = time.monotonic() + 10
        while len(owner.sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
            n.tick(T0 + 2 * S)
        assert {a.labels["agent_id"] for x in owner.sent for a in x.alerts} == {
            "it-support-3",
            "hr-assistant",
        }  # the owner's notices went out on their own sender
        assert oncall.sent == [] and n.pending_deliveries >= 1
    finally:
        release.set()
        records = n.close(T0 + 3 * S)
    assert {r.status for r in records} <= {"sent"}


def test_alerts_run_serves_the_runbook_step_failures_on_its_metrics_port(tmp_path: Path) -> None:
    n, _, _ = make()
    topic = FakeTopic()
    topic.fail = True
    response = _response(tmp_path, n, topic)
    port = free_port()
    args = argparse.Namespace(
        metrics_port=port, metrics_host="127.0.0.1", db=tmp_path / "agentwatch.sqlite", catalog=None
    )
    server = serve_metrics(args, lambda: (), response)
    assert server is not None
    try:
        response.respond([alert()])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    finally:
        server.close()
    assert (
        'agentwatch_runbook_step_failures_total{action="open_breaker",runbook="contain-agent"} 1.0'
        in text
    )
