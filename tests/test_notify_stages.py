"""Each stage of the notification pipeline on its own, table-driven."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import InhibitRule, RetryPolicy
from agentwatch.alerts.notify.receivers import DeliveryError
from agentwatch.alerts.notify.routing import Matcher
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.notify.stages import (
    Announced,
    InhibitStage,
    RetryStage,
    SilenceStage,
    needs_update,
    resolved_notice,
)
from agentwatch.alerts.notify.workers import InlineWorkers, ThreadedWorkers

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
H = dt.timedelta(hours=1)


def alert(rule: str = "A", severity: str = "warning", agent: str = "bot", **labels: str) -> Alert:
    return Alert(
        rule=rule,
        labels={"alertname": rule, "severity": severity, "agent_id": agent, **labels},
        annotations={"summary": f"{rule} fires"},
        state="firing",
        starts_at=T0,
    )


def fs(*names: str) -> frozenset[str]:
    return frozenset(names)


# sent (firing, resolved, seconds before now) | firing | resolved | send_resolved | expected
DEDUP = [
    ("nothing announced, nothing firing", None, fs(), fs(), True, False),
    ("nothing announced, one firing", None, fs("a"), fs(), True, True),
    ("same firing set, within repeat", (fs("a"), fs(), 60), fs("a"), fs(), True, False),
    ("same firing set, repeat reached", (fs("a"), fs(), 3600), fs("a"), fs(), True, True),
    ("a new alert fires", (fs("a"), fs(), 60), fs("a", "b"), fs(), True, True),
    ("one of two resolved", (fs("a", "b"), fs(), 60), fs("a"), fs("b"), True, True),
    ("one of two resolved, not wanted", (fs("a", "b"), fs(), 60), fs("a"), fs(), False, False),
    ("all announced resolved", (fs("a"), fs(), 60), fs(), fs("a"), True, True),
    ("all resolved, resolution not wanted", (fs("a"), fs(), 60), fs(), fs(), False, True),
    ("resolution already announced", (fs(), fs("a"), 60), fs(), fs("a"), True, False),
]


@pytest.mark.parametrize(
    ("sent", "firing", "resolved", "send_resolved", "expected"),
    [case[1:] for case in DEDUP],
    ids=[case[0] for case in DEDUP],
)
def test_dedup_sends_only_what_is_new_or_due_again(
    sent: tuple[frozenset[str], frozenset[str], int] | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    send_resolved: bool,
    expected: bool,
) -> None:
    announced = None if sent is None else Announced(sent[0], sent[1], T0 - sent[2] * S)
    assert needs_update(announced, firing, resolved, send_resolved, H, T0) is expected


POLICY = RetryPolicy(attempts=4, initial_backoff=S, max_backoff=10 * S)
# error | attempts so far | expected wait (None: failed for good)
RETRY = [
    ("first retryable failure", DeliveryError("503", retryable=True), 1, 1 * S),
    ("backoff doubles", DeliveryError("503", retryable=True), 3, 4 * S),
    ("attempts exhausted", DeliveryError("503", retryable=True), 4, None),
    ("not retryable", DeliveryError("400", retryable=False), 1, None),
    ("retry-after is honoured", DeliveryError("429", retryable=True, retry_after=7), 1, 7 * S),
    ("retry-after is bounded", DeliveryError("429", retryable=True, retry_after=99), 1, 10 * S),
    ("a crash in an integration", RuntimeError("bug"), 1, None),
]


@pytest.mark.parametrize(
    ("error", "attempts", "wait"), [c[1:] for c in RETRY], ids=[c[0] for c in RETRY]
)
def test_retry_backs_off_within_its_bounds(
    error: BaseException, attempts: int, wait: dt.timedelta | None
) -> None:
    expected = None if wait is None else T0 + wait
    assert RetryStage(POLICY).next_attempt(attempts, error, T0) == expected


RULE = InhibitRule(
    source=(Matcher.parse('severity="critical"'),),
    target=(Matcher.parse('severity="warning"'), Matcher.parse('owner_notice!="true"')),
    equal=("agent_id",),
)
# target | firing sources | muted
INHIBIT = [
    ("a critical mutes a warning of its agent", alert(), [alert("C", "critical")], True),
    ("not of another agent", alert(), [alert("C", "critical", agent="x")], False),
    ("not an owner notice", alert(owner_notice="true"), [alert("C", "critical")], False),
    ("a warning mutes nothing", alert(), [alert("W")], False),
    ("an alert does not mute itself", alert("C", "critical"), [alert("C", "critical")], False),
]


@pytest.mark.parametrize(
    ("target", "sources", "muted"), [c[1:] for c in INHIBIT], ids=[c[0] for c in INHIBIT]
)
def test_inhibition_mutes_targets_of_a_firing_source(
    target: Alert, sources: list[Alert], muted: bool
) -> None:
    assert (InhibitStage([RULE]).reason(target, sources) is not None) is muted


@pytest.mark.parametrize(
    ("notice", "parent", "muted"),
    [
        (alert("A"), None, True),
        (alert("AOwnerNotice", severity="info"), None, False),
        (alert("AOwnerNotice", severity="info"), alert("A"), True),
        (alert("B"), alert("C"), False),
    ],
    ids=["the alert", "a notice alone", "a notice of the silenced alert", "unrelated"],
)
def test_a_silence_covers_what_derives_from_the_alert(
    tmp_path: Path, notice: Alert, parent: Alert | None, muted: bool
) -> None:
    store = SilenceStore(tmp_path)
    store.add(
        [Matcher.parse('alertname="A"')],
        starts_at=T0 - S,
        ends_at=T0 + H,
        created_by="person:ops",
        comment="maintenance",
        now=T0,
    )
    assert (SilenceStage(store).reason(notice, T0, parent) is not None) is muted


@pytest.mark.parametrize(
    ("value", "summary"),
    [
        (0.0213, "Resolved: A on bot; value at resolution: 0.0213"),
        (None, "Resolved: A on bot"),
    ],
)
def test_a_resolved_alert_reads_as_resolved(value: float | None, summary: str) -> None:
    ended = Alert(
        rule="A",
        labels={"alertname": "A", "agent_id": "bot"},
        annotations={"summary": "54.9% of policy checks failed"},
        state="resolved",
        starts_at=T0,
        ends_at=T0 + H,
        value=value,
    )
    shown = resolved_notice(ended)
    assert shown.annotations["summary"] == summary
    assert shown.annotations["firing_summary"] == "54.9% of policy checks failed"
    assert shown.fingerprint == ended.fingerprint
    assert resolved_notice(alert()) == alert()  # firing alerts are shown as they are


def test_inline_workers_finish_a_job_when_it_is_submitted() -> None:
    workers = InlineWorkers()
    workers.submit("r", "job-1", lambda: None)
    workers.submit("r", "job-2", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    done = workers.collect()
    assert [d.token for d in done] == ["job-1", "job-2"]
    assert done[0].error is None and isinstance(done[1].error, RuntimeError)
    assert workers.collect() == []


def test_threaded_workers_keep_a_hanging_key_to_itself() -> None:
    release, finished = threading.Event(), threading.Event()
    workers = ThreadedWorkers(on_done=finished.set)

    def hang() -> None:
        release.wait(60)

    try:
        workers.submit("slow", "s", hang)
        workers.submit("fast", "f", lambda: None)
        assert finished.wait(5)
        assert [d.token for d in workers.collect()] == ["f"]
    finally:
        release.set()
        workers.close(5)
    assert [d.token for d in workers.collect()] == ["s"]
