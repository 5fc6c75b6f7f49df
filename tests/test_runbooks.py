"""Runbooks: the shipped files, the executor's audit rows, idempotency and approvals."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.control import BreakerControl, Published
from agentwatch.alerts.response.runbook_files import (
    RUNBOOK_DIR,
    RunbookError,
    find_runbook,
    load_runbooks,
    parse_runbook,
    runbook_id,
)
from agentwatch.alerts.response.runbooks import (
    RunbookContext,
    approve,
    catalog_pins,
    resume,
    run_runbook,
)
from agentwatch.durations import parse_seconds
from agentwatch.ingest.contract.control import Applied, ControlMessage
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.location import METADATA_FILE

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


class FakeTopic:
    """The control topic in memory: what BreakerControl publishes, it reads back."""

    def __init__(self) -> None:
        self.published: list[ControlMessage] = []
        self.fail = False

    def publish(self, message: ControlMessage) -> Published:
        if self.fail:
            from agentwatch.alerts.response.control import ControlError

            raise ControlError("broker unreachable")
        self.published.append(message)
        return Published(message, 0, len(self.published) - 1)

    def read(self) -> dict[str, Applied]:
        return {m.key: Applied(m, 0, n) for n, m in enumerate(self.published)}

    def close(self) -> None:
        pass


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.topic = FakeTopic()
        self.store = LakeStore(tmp_path / "data" / METADATA_FILE)
        self.notified: list[tuple[str, str]] = []
        self.control = BreakerControl(self.topic, clock=lambda: T0)  # type: ignore[arg-type]
        self.context = RunbookContext(
            store=self.store,
            control=self.control,
            notify_owner=lambda alert, text: self.notified.append((alert.rule, text)),
            pinned_versions=lambda agent: {"prompt_version": "v3", "model": "gpt-4o-2024-08-06"},
            clock=lambda: T0,
        )
        self.books = load_runbooks()

    def run(self, book: str, alert: Alert) -> list[dict[str, Any]]:
        return run_runbook(self.books[book], alert, self.context)

    def actions(self) -> list[dict[str, Any]]:
        return list(self.store.read_log("actions").sort("ts").iter_rows(named=True))


def alert(rule: str = "PolicyViolationBurst", starts_at: dt.datetime = T0, **labels: str) -> Alert:
    return Alert(
        rule=rule,
        labels={"alertname": rule, "severity": "critical", "agent_id": "hr-assistant", **labels},
        annotations={"summary": "12 policy violations in 5 minutes"},
        state="firing",
        starts_at=starts_at,
    )


def test_the_shipped_runbooks_load_with_the_ids_rules_link_to() -> None:
    books = load_runbooks(RUNBOOK_DIR)
    assert {"contain-agent", "disable-tool", "rollback-release", "notify-owner"} <= set(books)
    assert [s.action for s in books["contain-agent"].steps] == ["open_breaker", "notify_owner"]
    assert books["contain-agent"].steps[0].params["cooldown"] == 600.0
    for url in (
        "runbooks/contain-agent",
        "https://wiki.example/runbooks/contain-agent.yaml#steps",
        "contain-agent",
        "alerts/runbooks/contain-agent.md",
    ):
        assert runbook_id(url) == "contain-agent"
        assert find_runbook(url, books) is books["contain-agent"]


def test_every_shipped_rules_runbook_url_names_a_shipped_runbook() -> None:
    books = load_runbooks()
    urls = {
        rule["annotations"]["runbook_url"]
        for path in sorted((RUNBOOK_DIR.parent / "rules").glob("*.yaml"))
        for rule in _rules(yaml.safe_load(path.read_text()))
        if rule.get("annotations", {}).get("runbook_url")
    }
    assert urls, "the shipped rules link no runbooks"
    assert {u: find_runbook(u, books) is not None for u in urls} == dict.fromkeys(urls, True)


def _rules(doc: Any) -> list[dict[str, Any]]:
    """Rules of a rules file, whether listed at the top or in Prometheus-style groups."""
    if isinstance(doc, list):
        return [r for r in doc if isinstance(r, dict)]
    if not isinstance(doc, dict):
        return []
    found = _rules(doc.get("rules", []))
    for group in doc.get("groups", []) or []:
        found += _rules(group)
    return found


def test_catalog_pins_give_rollbacks_the_pinned_versions() -> None:
    pins = catalog_pins(load_catalog(EXAMPLE_CATALOG))
    entry = next(a for a in load_catalog(EXAMPLE_CATALOG) if a.pinned.prompt_version is not None)
    assert pins(entry.agent_id)["prompt_version"] == entry.pinned.prompt_version  # type: ignore[index]
    assert pins("not-in-the-catalog") is None


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"id": "Bad Id", "steps": [{"action": "notify_owner"}]}, "id: must be"),
        ({"id": "x", "steps": []}, "steps: Expected `array` of length >= 1"),
        ({"id": "x", "steps": [{"action": "reboot"}]}, "unknown action"),
        ({"id": "x", "steps": [{"action": "throttle", "rate": -1}]}, "rate"),
        ({"id": "x", "steps": [{"action": "open_breaker", "colour": "red"}]}, "takes no colour"),
        ({"id": "x", "steps": [{"action": "open_breaker", "cooldown": "soon"}]}, "duration"),
        ({"id": "x", "steps": [{"action": "notify_owner", "on_failure": "panic"}]}, "on_failure"),
    ],
)
def test_mistakes_in_a_runbook_are_reported_with_the_step(doc: object, error: str) -> None:
    with pytest.raises(RunbookError, match=error):
        parse_runbook(doc, "bad.yaml")


def test_durations() -> None:
    assert [parse_seconds(v) for v in (90, "90s", "10m", "2h", "1d", "250ms")] == [
        90.0,
        90.0,
        600.0,
        7200.0,
        86400.0,
        0.25,
    ]


def test_contain_agent_opens_the_breaker_notifies_and_records_every_step(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    rows = h.run("contain-agent", alert())
    assert [(r["step"], r["action"], r["result"]) for r in rows] == [
        (1, "open_breaker", "ok"),
        (2, "notify_owner", "ok"),
    ]
    [message] = h.topic.published
    assert (message.key, message.state, message.cooldown_s) == ("hr-assistant", "open", 600.0)
    assert message.actor == "rule:PolicyViolationBurst"
    assert message.alert == alert().fingerprint
    assert h.notified == [("PolicyViolationBurst", "agent contained: its circuit breaker is open")]

    opened = h.actions()[0]
    assert opened["actor"] == "rule:PolicyViolationBurst"
    assert opened["alert_fingerprint"] == alert().fingerprint
    assert opened["runbook"] == "contain-agent"
    assert "12 policy violations" in opened["reason"]
    assert json.loads(opened["detail"])["control_id"] == message.id


def test_a_refired_alert_does_not_act_twice(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.run("contain-agent", alert())
    assert h.run("contain-agent", alert()) == []  # the same alert instance, again
    # A new instance (it resolved and fired again) finds the breaker still open.
    later = h.run("contain-agent", alert(starts_at=T0 + dt.timedelta(hours=1)))
    assert [(r["action"], r["result"]) for r in later] == [
        ("open_breaker", "skipped"),
        ("notify_owner", "ok"),
    ]
    assert len(h.topic.published) == 1


def test_disable_tool_opens_the_agent_and_tool_breaker_from_the_alerts_label(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    rows = h.run("disable-tool", alert("UnapprovedTool", tool_name="payroll_export"))
    assert rows[0]["tool_name"] == "payroll_export" and rows[0]["result"] == "ok"
    assert h.topic.published[0].key == "hr-assistant/payroll_export"

    without = h.run("disable-tool", alert("ToolErrors"))
    assert without[0]["result"] == "failed" and "tool_name" in without[0]["detail"]
    assert len(without) == 1  # on_failure: stop


def test_a_failing_step_is_retried_on_later_calls_up_to_the_limit(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.topic.fail = True
    for _ in range(5):
        h.run("contain-agent", alert())
    failed = [r for r in h.actions() if r["action"] == "open_breaker"]
    assert [r["result"] for r in failed] == ["failed"] * 3
    assert "broker unreachable" in failed[0]["detail"]
    assert h.notified == []


def test_steps_without_a_notifier_or_catalog_are_skipped_or_failed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.context.notify_owner = None
    [row] = h.run("notify-owner", alert())
    assert row["result"] == "skipped"
    h.context.pinned_versions = lambda agent: None
    rows = h.run("rollback-release", alert("QualityDrift"))
    assert rows[-1]["result"] == "waiting"
    approve(h.store, rows[-1]["action_id"], "ana", clock=lambda: T0)
    after = resume(rows[-1], h.context, h.books)
    assert after[0]["action"] == "rollback" and after[0]["result"] == "failed"
    assert "pins no versions" in after[0]["detail"]


def test_a_resolved_alert_starts_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    resolved = Alert(**{**alert().__dict__, "state": "resolved"})
    assert h.run("contain-agent", resolved) == []


def test_rollback_waits_for_a_persons_approval_then_goes_on(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first = h.run("rollback-release", alert("QualityDrift"))
    assert [(r["action"], r["result"]) for r in first] == [
        ("notify_owner", "ok"),
        ("throttle", "ok"),
        ("wait_for_approval", "waiting"),
    ]
    waiting = first[-1]
    assert json.loads(waiting["detail"])["approve_with"].startswith(
        f"agentwatch alerts approve {waiting['action_id']}"
    )
    assert h.run("rollback-release", alert("QualityDrift")) == []  # still waiting

    with pytest.raises(RunbookError, match="no runbook step waits"):
        approve(h.store, "nope", "ana")
    approved = approve(h.store, waiting["action_id"], "ana", clock=lambda: T0)
    with pytest.raises(RunbookError, match="approved already"):
        approve(h.store, waiting["action_id"], "bob")

    rest = resume(approved, h.context, h.books)
    assert [(r["action"], r["result"]) for r in rest] == [("rollback", "ok"), ("throttle", "ok")]
    rollback = next(m for m in h.topic.published if m.type == "rollback")
    assert rollback.versions == {"prompt_version": "v3", "model": "gpt-4o-2024-08-06"}
    throttles = [m.rate_per_s for m in h.topic.published if m.type == "throttle"]
    assert throttles == [0.5, None]
    assert h.run("rollback-release", alert("QualityDrift")) == []  # done

    actors = [(r["action"], r["actor"]) for r in h.actions()]
    assert ("approve", "person:ana") in actors
    assert ("rollback", "rule:QualityDrift") in actors


def test_the_actions_table_is_queryable_in_the_catalog(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.store.prepare()
    h.run("contain-agent", alert())
    con = connect_lake(h.store.db)
    try:
        rows = con.execute(
            "SELECT step, action, actor, result FROM actions ORDER BY step"
        ).fetchall()
    finally:
        con.close()
    assert rows == [
        (1, "open_breaker", "rule:PolicyViolationBurst", "ok"),
        (2, "notify_owner", "rule:PolicyViolationBurst", "ok"),
    ]


def test_alerts_approve_on_the_command_line_records_the_person_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentwatch.cli import build_parser
    from agentwatch.settings import Settings

    h = Harness(tmp_path)
    waiting = h.run("rollback-release", alert("QualityDrift"))[-1]
    monkeypatch.setattr(BreakerControl, "connect", classmethod(lambda cls, *a, **k: h.control))
    db = str(h.store.db)

    def approve_cli(*args: str) -> int:
        parsed = build_parser(Settings()).parse_args(["alerts", "approve", *args, "--db", db])
        code: int = parsed.handler(parsed)
        return code

    assert approve_cli("missing-id", "--by", "ana") == 1
    assert "no runbook step waits" in capsys.readouterr().err
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "agents:\n"
        "  - {agent_id: hr-assistant, owner: hr, oncall: hr-oncall, risk_tier: high,\n"
        "     status: active, pinned: {prompt_version: v2, model: gpt-4o-mini}}\n"
    )
    assert approve_cli(waiting["action_id"], "--by", "ana", "--catalog", str(catalog)) == 0
    out = capsys.readouterr().out
    assert f"approved {waiting['action_id']}" in out and "rollback: ok" in out
    approved = [r for r in h.actions() if r["action"] == "approve"]
    assert [(r["actor"], r["result"]) for r in approved] == [("person:ana", "ok")]
    rollback = next(m for m in h.topic.published if m.type == "rollback")
    assert rollback.versions == {"prompt_version": "v2", "model": "gpt-4o-mini"}
