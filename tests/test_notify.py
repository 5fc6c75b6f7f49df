"""The notifier pipeline with an injected clock: grouping, repeat, dedup, inhibition,
silences, resolved notices, retries and recorded failures. Nothing here sleeps."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.evaluation.states import Transition
from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.config import parse_notify_config, shipped_config_path
from agentwatch.alerts.notify.notifier import (
    NotificationRecord,
    Notifier,
    StoreLog,
    catalog_contacts,
    evaluation_sink,
)
from agentwatch.alerts.notify.receivers import DeliveryError, Notification
from agentwatch.alerts.notify.routing import Matcher
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.cli import main
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)

CONFIG = yaml.safe_load(
    """
global:
  retry: {attempts: 4, initial_backoff: 1s, max_backoff: 10s}
route:
  receiver: team
  group_by: [alertname, agent_id]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [agent_id]
receivers:
  - name: team
    file_configs: [{path: unused.jsonl}]
"""
)


@dataclass
class FakeIntegration:
    """Records what it is sent; fails the first ``failures`` attempts."""

    send_resolved: bool = True
    failures: int = 0
    retryable: bool = True
    sent: list[Notification] = field(default_factory=list)
    attempts: int = 0
    kind: ClassVar[str] = "fake"

    def send(self, notification: Notification) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise DeliveryError("HTTP 503 from http://127.0.0.1:9", retryable=self.retryable)
        self.sent.append(notification)


class ListLog:
    def __init__(self) -> None:
        self.rows: list[NotificationRecord] = []

    def append(self, records: Any) -> None:
        self.rows.extend(records)


def alert(
    rule: str = "HighErrorRate",
    agent: str = "support-bot",
    state: str = "firing",
    severity: str = "warning",
    **extra: str,
) -> Alert:
    return Alert(
        rule=rule,
        labels={"alertname": rule, "severity": severity, "agent_id": agent, **extra},
        annotations={"summary": f"{rule} on {agent}"},
        state=state,  # type: ignore[arg-type]
        starts_at=T0 - 5 * 60 * S,
        ends_at=T0 if state == "resolved" else None,
        value=0.4,
    )


def make(
    integ: FakeIntegration | None = None,
    tmp_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Notifier, FakeIntegration, ListLog]:
    doc = json.loads(json.dumps(CONFIG))
    doc["route"].update(overrides or {})
    config = parse_notify_config(doc, Path("/nonexistent"))
    fake = integ or FakeIntegration()
    config.receivers = {"team": [fake]}
    sink = ListLog()
    silences = SilenceStore(tmp_path) if tmp_path is not None else None
    return Notifier(config, log_sink=sink, silences=silences), fake, sink


def statuses(records: list[NotificationRecord]) -> list[str]:
    return [r.status for r in records]


def test_group_wait_batches_alerts_that_fire_together() -> None:
    n, fake, _ = make()
    assert n.process([alert(rule="A")], T0) == []
    assert n.process([alert(rule="A", agent="other")], T0 + 10 * S) == []
    assert n.tick(T0 + 29 * S) == []
    assert n.next_wakeup() == T0 + 30 * S
    # Same group (alertname + agent_id) for a second alert of the same rule and agent.
    n.process([alert(rule="A", region="eu")], T0 + 20 * S)
    recs = n.tick(T0 + 30 * S)
    assert statuses(recs) == ["sent"]
    assert len(fake.sent) == 1 and len(fake.sent[0].alerts) == 2
    assert fake.sent[0].group_labels == {"alertname": "A", "agent_id": "support-bot"}
    # The other agent's group started 10 s later.
    assert n.tick(T0 + 39 * S) == []
    assert statuses(n.tick(T0 + 40 * S)) == ["sent"]
    assert len(fake.sent) == 2


def test_new_alert_in_a_flushed_group_waits_for_group_interval() -> None:
    n, fake, _ = make()
    n.process([alert(region="eu")], T0)
    n.tick(T0 + 30 * S)
    assert len(fake.sent) == 1
    n.process([alert(region="us")], T0 + 60 * S)
    assert len(fake.sent) == 1  # not before the group's next look
    n.tick(T0 + 30 * S + 5 * 60 * S)
    assert len(fake.sent) == 2
    assert {a.labels["region"] for a in fake.sent[1].alerts} == {"eu", "us"}


def test_repeat_interval_and_dedup() -> None:
    n, fake, _ = make()
    a = alert()
    n.process([a], T0)
    n.tick(T0 + 30 * S)
    # The evaluator telling us again, and every group_interval look, send nothing new.
    t = T0 + 30 * S
    for _ in range(11):
        t += 5 * 60 * S
        n.process([a], t)
    assert len(fake.sent) == 1  # 55 minutes after the first notification
    t += 5 * 60 * S
    n.tick(t)  # 60 minutes: repeat_interval reached
    assert len(fake.sent) == 2
    assert fake.sent[1].status == "firing"


def test_resolved_notice_then_group_is_gone() -> None:
    n, fake, log = make()
    n.process([alert()], T0)
    n.tick(T0 + 30 * S)
    n.process([alert(state="resolved")], T0 + 100 * S)
    n.tick(T0 + 30 * S + 5 * 60 * S)
    assert [x.status for x in fake.sent] == ["firing", "resolved"]
    resolved = fake.sent[1].alerts[0]
    assert resolved.state == "resolved"
    assert [(r.firing, r.resolved) for r in log.rows] == [(1, 0), (0, 1)]
    assert n.next_wakeup() is None  # nothing left to look at


def test_flap_within_group_wait_announces_nothing() -> None:
    n, fake, _ = make()
    n.process([alert()], T0)
    n.process([alert(state="resolved")], T0 + 10 * S)
    assert n.tick(T0 + 30 * S) == []
    assert fake.sent == [] and n.next_wakeup() is None


def test_pending_alerts_are_not_announced() -> None:
    n, fake, _ = make()
    n.process([alert(state="pending")], T0)
    assert n.next_wakeup() is None
    n.tick(T0 + 3600 * S)
    assert fake.sent == []


def test_send_resolved_false_skips_resolved_notices() -> None:
    n, fake, _ = make(FakeIntegration(send_resolved=False))
    n.process([alert(region="eu"), alert(region="us")], T0)
    n.tick(T0 + 30 * S)
    n.process([alert(region="eu", state="resolved")], T0 + 40 * S)
    n.tick(T0 + 30 * S + 300 * S)
    n.process([alert(region="us", state="resolved")], T0 + 400 * S)
    n.tick(T0 + 30 * S + 600 * S)
    assert len(fake.sent) == 1
    assert n.next_wakeup() is None


def test_partial_resolution_carries_both_lists() -> None:
    n, fake, _ = make()
    n.process([alert(region="eu"), alert(region="us")], T0)
    n.tick(T0 + 30 * S)
    n.process([alert(region="eu", state="resolved")], T0 + 40 * S)
    n.tick(T0 + 330 * S)
    last = fake.sent[-1]
    assert last.status == "firing"
    assert [(a.labels["region"], a.state) for a in last.alerts] == [
        ("us", "firing"),
        ("eu", "resolved"),
    ]
    n.tick(T0 + 630 * S)
    assert len(fake.sent) == 2  # the resolved one is not announced twice


def test_critical_inhibits_warnings_of_the_same_agent() -> None:
    n, fake, log = make()
    crit = alert(rule="AgentDown", severity="critical")
    warn = alert(rule="HighLatency", severity="warning")
    other = alert(rule="HighLatency", severity="warning", agent="billing-bot")
    n.process([crit, warn, other], T0)
    n.tick(T0 + 30 * S)
    announced = {(x.alerts[0].rule, x.alerts[0].agent_id) for x in fake.sent}
    assert announced == {("AgentDown", "support-bot"), ("HighLatency", "billing-bot")}
    (muted,) = [r for r in log.rows if r.status == "suppressed"]
    assert muted.alert_fingerprints == (warn.fingerprint,)
    assert muted.error is not None and "inhibited by AgentDown" in muted.error
    # Still inhibited at the next look: recorded once, not at every look.
    n.tick(T0 + 330 * S)
    assert statuses(log.rows).count("suppressed") == 1
    # The critical one resolves: the warning is announced at the next look.
    n.process([alert(rule="AgentDown", severity="critical", state="resolved")], T0 + 400 * S)
    n.tick(T0 + 630 * S)
    later = [(x.alerts[0].rule, x.alerts[0].agent_id, x.status) for x in fake.sent[2:]]
    assert sorted(later) == [
        ("AgentDown", "support-bot", "resolved"),
        ("HighLatency", "support-bot", "firing"),
    ]


def test_silences_mute_until_expired(tmp_path: Path) -> None:
    n, fake, log = make(tmp_path=tmp_path)
    store = SilenceStore(tmp_path)
    silence = store.add(
        [Matcher.parse("agent_id=support-bot")],
        starts_at=T0,
        ends_at=T0 + 2 * 3600 * S,
        created_by="ana",
        comment="deploying",
        now=T0,
    )
    n.process([alert(), alert(agent="billing-bot")], T0)
    n.tick(T0 + 30 * S)
    assert [x.alerts[0].agent_id for x in fake.sent] == ["billing-bot"]
    (muted,) = [r for r in log.rows if r.status == "suppressed"]
    assert muted.error == f"silenced by {silence.id}"
    store.expire(silence.id[:6], T0 + 60 * S)
    n.tick(T0 + 330 * S)
    assert [x.alerts[0].agent_id for x in fake.sent] == ["billing-bot", "support-bot"]


def test_silence_ends_on_its_own(tmp_path: Path) -> None:
    n, fake, _ = make(tmp_path=tmp_path)
    SilenceStore(tmp_path).add(
        [Matcher.parse("alertname=~High.*")],
        starts_at=T0,
        ends_at=T0 + 60 * S,
        created_by="ana",
        comment="",
        now=T0,
    )
    n.process([alert()], T0)
    n.tick(T0 + 30 * S)
    assert fake.sent == []
    n.tick(T0 + 330 * S)
    assert len(fake.sent) == 1


def test_retries_with_backoff_then_success() -> None:
    n, fake, log = make(FakeIntegration(failures=2))
    n.process([alert()], T0)
    assert n.tick(T0 + 30 * S) == []  # attempt 1 failed, retry in 1 s
    assert n.pending_deliveries == 1
    assert n.next_wakeup() == T0 + 31 * S
    assert n.tick(T0 + 31 * S) == []  # attempt 2 failed, retry in 2 s
    assert n.next_wakeup() == T0 + 33 * S
    assert n.tick(T0 + 32 * S) == []
    (sent,) = n.tick(T0 + 33 * S)
    assert (sent.status, sent.attempts, sent.error) == ("sent", 3, None)
    assert fake.attempts == 3 and len(fake.sent) == 1
    assert statuses(log.rows) == ["sent"]


def test_undeliverable_notification_is_recorded_as_failed(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    n, fake, _ = make(FakeIntegration(failures=100))
    n.log_sink = StoreLog(store)
    n.process([alert()], T0)
    t = T0 + 30 * S
    n.tick(t)
    for wait in (1, 2, 4):  # attempts 2..4 after 1 s, 2 s and 4 s
        t += wait * S
        recs = n.tick(t)
    (failed,) = recs
    assert failed.status == "failed" and failed.attempts == 4
    assert failed.error is not None and "HTTP 503" in failed.error
    assert fake.attempts == 4
    rows = StoreLog(store).read()
    assert [(r.status, r.attempts, r.receiver) for r in rows] == [("failed", 4, "team")]
    # Not announced, so the group tries again at its next look (and succeeds).
    fake.failures = 0
    n.tick(T0 + 330 * S)
    assert statuses(StoreLog(store).read()) == ["failed", "sent"]


def test_permanent_errors_are_not_retried() -> None:
    n, fake, _ = make(FakeIntegration(failures=1, retryable=False))
    n.process([alert()], T0)
    (failed,) = n.tick(T0 + 30 * S)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error is not None and "not retryable" in failed.error
    assert n.pending_deliveries == 0 and fake.attempts == 1


def test_close_records_deliveries_still_retrying() -> None:
    n, _, log = make(FakeIntegration(failures=100))
    n.process([alert()], T0)
    n.tick(T0 + 30 * S)
    (failed,) = n.close(T0 + 31 * S)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.startswith("notifier stopped after 1")
    assert statuses(log.rows) == ["failed"]


def test_dedup_survives_a_restart(tmp_path: Path) -> None:
    store = LakeStore(tmp_path / METADATA_FILE)
    first, fake1, _ = make()
    first.log_sink = StoreLog(store)
    first.process([alert(region="eu"), alert(region="us")], T0)
    first.tick(T0 + 30 * S)
    assert len(fake1.sent) == 1
    # A new process: the evaluator hands over the alerts that still fire.
    second, fake2, _ = make()
    second.log_sink = StoreLog(store)
    second.restore(StoreLog(store).read())
    second.process([alert(region="eu"), alert(region="us")], T0 + 600 * S)
    second.tick(T0 + 630 * S)
    assert fake2.sent == []  # announced already, within repeat_interval
    second.process([alert(region="eu", state="resolved")], T0 + 700 * S)
    second.tick(T0 + 930 * S)
    (notice,) = fake2.sent
    assert [(a.labels["region"], a.state) for a in notice.alerts] == [
        ("us", "firing"),
        ("eu", "resolved"),
    ]


def test_each_integration_of_a_receiver_is_delivered_and_logged_apart() -> None:
    good, bad = FakeIntegration(), FakeIntegration(failures=1, retryable=False)
    config = parse_notify_config(CONFIG, Path("/nonexistent"))
    config.receivers = {"team": [good, bad]}
    log = ListLog()
    n = Notifier(config, log_sink=log)
    n.process([alert()], T0)
    n.tick(T0 + 30 * S)
    assert {(r.receiver, r.status) for r in log.rows} == {
        ("team/fake", "sent"),
        ("team/fake#1", "failed"),
    }
    # Only the failed one is tried again at the next look.
    n.tick(T0 + 330 * S)
    assert len(good.sent) == 1 and len(bad.sent) == 1


def test_shipped_config_writes_the_owner_file(tmp_path: Path) -> None:
    contacts = catalog_contacts(load_catalog(EXAMPLE_CATALOG))
    notifier = Notifier.from_files(shipped_config_path(), tmp_path, contacts)
    notifier.process([alert(agent="hr-assistant-1", severity="critical")], T0)
    notifier.tick(T0 + 10 * S)
    lines = (tmp_path / "notifications" / "people-platform-oncall.jsonl").read_text().splitlines()
    (payload,) = [json.loads(line) for line in lines]
    assert payload["version"] == "4" and payload["receiver"] == "people-platform-oncall"
    assert payload["alerts"][0]["labels"]["agent_id"] == "hr-assistant-1"
    rows = StoreLog(LakeStore(tmp_path / METADATA_FILE)).read()
    assert [(r.receiver, r.status) for r in rows] == [("people-platform-oncall", "sent")]
    # A new notifier over the same data dir resumes dedup from the log.
    again = Notifier.from_files(shipped_config_path(), tmp_path, contacts)
    again.process([alert(agent="hr-assistant-1", severity="critical")], T0 + 60 * S)
    assert again.tick(T0 + 70 * S) == []


@pytest.mark.parametrize("bad", ["x", {"route": {"receiver": "nope"}, "receivers": []}])
def test_bad_configs_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_notify_config(bad, Path("."))


def test_silence_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "agentwatch.sqlite")
    args = ["alerts", "silence", "--db", db, "--match", "agent_id=support-bot"]
    assert main([*args, "--match", "severity=~warning|info", "--for", "2h",
                 "--comment", "deploying v2", "--author", "ana"]) == 0  # fmt: skip
    silence_id = capsys.readouterr().out.strip()
    (stored,) = SilenceStore(tmp_path).all()
    assert stored.id == silence_id and stored.created_by == "ana"
    assert stored.ends_at - stored.starts_at == dt.timedelta(hours=2)
    now = stored.starts_at + S
    assert stored.mutes({"agent_id": "support-bot", "severity": "info"}, now)
    assert not stored.mutes({"agent_id": "support-bot", "severity": "critical"}, now)
    assert main(["alerts", "silences", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert silence_id in listing and "deploying v2" in listing and "active" in listing
    assert main(["alerts", "expire", silence_id[:5], "--db", db]) == 0
    assert main(["alerts", "silences", "--db", db]) == 0
    assert "no active or pending silences" in capsys.readouterr().out
    assert main(["alerts", "silences", "--all", "--db", db]) == 0
    assert "expired" in capsys.readouterr().out
    assert main(["alerts", "expire", silence_id, "--db", db]) == 1  # already expired
    # A silence that would mute everything, or a bad matcher, is refused.
    assert main([*args[:4], "--match", "agent_id=~.*", "--comment", "x"]) == 2
    assert main([*args[:4], "--match", "agent_id=~(", "--comment", "x"]) == 2


def test_silences_file_survives_concurrent_writers(tmp_path: Path) -> None:
    import threading

    def add(i: int) -> None:
        SilenceStore(tmp_path).add(
            [Matcher.parse(f"agent_id=bot-{i}")],
            starts_at=T0,
            ends_at=T0 + 3600 * S,
            created_by="t",
            comment="",
            now=T0,
        )

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(SilenceStore(tmp_path).all()) == 8
    assert not list(tmp_path.glob(".tmp-*"))


def test_evaluation_sink_feeds_firing_and_real_resolutions() -> None:
    n, fake, _ = make(overrides={"group_wait": "0s"})
    sink = evaluation_sink(n)
    firing, pending = alert(rule="A"), alert(rule="B", state="pending")
    cleared = alert(rule="B", state="resolved")
    still = alert(rule="C")  # firing since before a restart
    sink(Evaluation(T0, (Transition(firing, None), Transition(pending, None)), (firing, still), ()))
    assert sorted(x.alerts[0].rule for x in fake.sent) == ["A", "C"]
    sink(Evaluation(T0 + 10 * S, (Transition(cleared, "pending"),), (firing, still), ()))
    assert n.next_wakeup() == T0 + 300 * S  # the cleared pending alert made no group
    resolved = alert(rule="A", state="resolved")
    sink(Evaluation(T0 + 300 * S, (Transition(resolved, "firing"),), (still,), ()))
    assert [x.status for x in fake.sent] == ["firing", "firing", "resolved"]


def test_old_announcements_of_gone_groups_are_forgotten() -> None:
    n, fake, _ = make()
    n.process([alert(rule="Old"), alert(rule="Live")], T0)
    n.tick(T0 + 30 * S)
    n.process([alert(rule="Old", state="resolved")], T0 + 40 * S)
    n.tick(T0 + 330 * S)
    assert len(n._sent) == 2
    later = T0 + dt.timedelta(days=6)
    n.tick(later)  # the live group repeats (fresh entry); the old one is gone
    assert [key for _, key in n._sent] == ['{}:{agent_id="support-bot", alertname="Live"}']
    assert fake.sent[-1].alerts[0].rule == "Live"


def test_receiver_urls_must_be_http() -> None:
    doc = {
        "route": {"receiver": "hook"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": "hooks.example.com/x"}]}],
    }
    with pytest.raises(ValueError, match=r"webhook_configs\[0\].url: not an http"):
        parse_notify_config(doc, Path("."))
