"""Each stage of the notification pipeline on its own, table-driven."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import InhibitRule, RetryPolicy
from agentwatch.alerts.notify.receivers import DeliveryError
from agentwatch.alerts.notify.routing import Matcher, RouteTarget
from agentwatch.alerts.notify.senders import InlineSenders, ThreadedSenders
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.alerts.notify.stages import (
    Announced,
    DedupStage,
    Group,
    GroupWaitStage,
    InhibitStage,
    IntegrationLook,
    Look,
    RetryStage,
    SilenceStage,
    Stage,
    needs_update,
    resolved_notice,
    run,
)

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


TARGET = RouteTarget(
    route_key="{}",
    receiver="team",
    group_by=("alertname",),
    group_wait=30 * S,
    group_interval=300 * S,
    repeat_interval=H,
)


def look(next_flush: dt.datetime = T0, inflight: int = 0, firing: Sequence[Alert] = ()) -> Look:
    group = Group("team", "{}:{}", TARGET, {}, next_flush, inflight=inflight)
    return Look(T0, group, firing={a.fingerprint: a for a in firing}, parents={})


def test_a_new_group_is_first_looked_at_after_group_wait() -> None:
    assert GroupWaitStage().first_look(TARGET, T0) == T0 + 30 * S


# next look (seconds from now) | deliveries in flight | goes on | next look after (seconds)
GROUP_WAIT = [
    ("not due yet", 10, 0, False, 10),
    ("due", 0, 0, True, 300),
    ("overdue: the next look is an interval from now", -60, 0, True, 300),
    ("due while the last look is still delivered", 0, 1, False, 300),
]


@pytest.mark.parametrize(
    ("due_in", "inflight", "goes_on", "next_in"),
    [c[1:] for c in GROUP_WAIT],
    ids=[c[0] for c in GROUP_WAIT],
)
def test_group_wait_lets_a_group_through_once_per_interval(
    due_in: int, inflight: int, goes_on: bool, next_in: int
) -> None:
    at = look(T0 + due_in * S, inflight)
    alerts = [alert()]
    assert GroupWaitStage().exec(at, alerts) == (alerts if goes_on else None)
    assert at.group.next_flush == T0 + next_in * S


def ended(a: Alert) -> Alert:
    return dataclasses.replace(a, state="resolved", ends_at=T0)


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


A, B = alert("A"), alert("B")
# announced (firing, seconds ago) | the group's alerts | send_resolved | wanted (None: nothing)
DEDUP_STAGE = [
    ("nothing announced: the firing go", None, [A], True, [A]),
    ("announced within repeat: nothing", ((A,), 60), [A], True, None),
    ("repeat reached: the firing again", ((A,), 3600), [A], True, [A]),
    ("a resolution: firing first, then resolved", ((A, B), 60), [ended(B), A], True, [A, ended(B)]),
    ("resolutions not wanted are left out", ((A, B), 3600), [A, ended(B)], False, [A]),
    ("all resolved, not wanted: announced empty", ((A,), 60), [ended(A)], False, []),
]


@pytest.mark.parametrize(
    ("sent", "alerts", "send_resolved", "wanted"),
    [c[1:] for c in DEDUP_STAGE],
    ids=[c[0] for c in DEDUP_STAGE],
)
def test_dedup_stage_passes_what_an_integration_wants_when_it_needs_an_update(
    sent: tuple[tuple[Alert, ...], int] | None,
    alerts: list[Alert],
    send_resolved: bool,
    wanted: list[Alert] | None,
) -> None:
    announced = None
    if sent is not None:
        announced = Announced(fs(*(a.fingerprint for a in sent[0])), fs(), T0 - sent[1] * S)
    at = IntegrationLook(look(), send_resolved, announced)
    assert DedupStage().exec(at, alerts) == wanted


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


def test_the_mute_stages_pass_the_rest_and_note_why_they_muted() -> None:
    critical, warning, other = alert("C", "critical"), alert("W"), alert("W", agent="x")
    at = look(firing=[critical])
    chain: tuple[Stage[Look], ...] = (InhibitStage([RULE]), SilenceStage(None))
    assert run(chain, at, [critical, warning, other]) == [critical, other]
    assert list(at.muted) == [warning.fingerprint]
    assert at.muted[warning.fingerprint].startswith("inhibited by C")


class Seen:
    """A stage that lets everything through and counts the looks it was handed."""

    def __init__(self) -> None:
        self.looks = 0

    def exec(self, at: Look, alerts: list[Alert]) -> list[Alert]:
        self.looks += 1
        return alerts


def test_a_stage_that_says_none_ends_the_chain() -> None:
    seen = Seen()
    chain: tuple[Stage[Look], ...] = (GroupWaitStage(), seen)
    assert run(chain, look(next_flush=T0 + S), [alert()]) is None
    assert seen.looks == 0


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
    senders = InlineSenders()
    senders.submit("r", "job-1", lambda: None)
    senders.submit("r", "job-2", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    done = senders.collect()
    assert [d.token for d in done] == ["job-1", "job-2"]
    assert done[0].error is None and isinstance(done[1].error, RuntimeError)
    assert senders.collect() == []


def test_threaded_workers_keep_a_hanging_key_to_itself() -> None:
    release, finished = threading.Event(), threading.Event()
    senders = ThreadedSenders(on_done=finished.set)

    def hang() -> None:
        release.wait(60)

    try:
        senders.submit("slow", "s", hang)
        senders.submit("fast", "f", lambda: None)
        assert finished.wait(5)
        assert [d.token for d in senders.collect()] == ["f"]
    finally:
        release.set()
        senders.close(5)
    assert [d.token for d in senders.collect()] == ["s"]
