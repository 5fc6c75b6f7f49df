"""Routing: matchers, the route tree walk, inheritance, group keys and catalog contacts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.notify.config import load_notify_config, shipped_config_path
from agentwatch.alerts.notify.notifier import catalog_contacts
from agentwatch.alerts.notify.routing import (
    Matcher,
    Router,
    RoutingError,
    parse_route,
)
from agentwatch.cli import main
from agentwatch.durations import DurationError, format_duration, parse_duration

TREE = yaml.safe_load(
    """
receiver: default
group_by: [alertname]
group_wait: 30s
routes:
  - matchers: ['severity="critical"']
    receiver: pager
    group_by: [alertname, agent_id]
    group_wait: 5s
    continue: true
    routes:
      - match: {agent_id: payments-bot}
        receiver: payments-pager
  - matchers: ['severity=~"critical|error"', 'agent_id=~"support-.*"']
    receiver: support
    repeat_interval: 1h
  - match_re: {team: "ops|sre"}
    receiver: ops
    group_by: ['...']
"""
)
RECEIVERS = ["default", "pager", "payments-pager", "support", "ops", "x-oncall"]


def router(lookup=None) -> Router:  # type: ignore[no-untyped-def]
    return Router(parse_route(TREE), RECEIVERS, lookup)


def receivers(labels: dict[str, str], r: Router | None = None) -> list[str]:
    return [t.receiver for t in (r or router()).targets(labels)]


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("severity=critical", {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "warning"}, False),
        ("severity!=critical", {}, True),
        ("agent_id=~support-.*", {"agent_id": "support-bot"}, True),
        ("agent_id=~support", {"agent_id": "support-bot"}, False),  # anchored, as in Prometheus
        ("agent_id!~support-.*", {"agent_id": "billing"}, True),
        ('agent_id=""', {}, True),  # a missing label reads as empty
        ('summary="a, b"', {"summary": "a, b"}, True),
    ],
)
def test_matchers(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


def test_matcher_round_trips_and_rejects_garbage() -> None:
    m = Matcher.parse('description=~"say \\"hi\\".*"')
    assert Matcher.parse(str(m)) == m
    with pytest.raises(RoutingError):
        Matcher.parse("no operator")
    with pytest.raises(RoutingError):
        Matcher.parse("x=~(unclosed")


def test_durations() -> None:
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("500ms") == dt.timedelta(milliseconds=500)
    assert parse_duration(45) == dt.timedelta(seconds=45)
    assert format_duration(dt.timedelta(seconds=5430)) == "1h30m30s"
    for bad in ("", "5", "5 m", "m5", "-1s"):
        with pytest.raises(DurationError):
            parse_duration(bad)


def test_unmatched_alerts_go_to_the_root() -> None:
    assert receivers({"alertname": "A", "severity": "info"}) == ["default"]


def test_first_match_wins_unless_continue() -> None:
    # critical: pager (continue) and then the support route matches too.
    labels = {"alertname": "A", "severity": "critical", "agent_id": "support-bot"}
    assert receivers(labels) == ["pager", "support"]
    # error: only the support route.
    assert receivers(labels | {"severity": "error"}) == ["support"]


def test_deepest_matching_route_is_the_target() -> None:
    labels = {"alertname": "A", "severity": "critical", "agent_id": "payments-bot"}
    assert receivers(labels) == ["payments-pager"]


def test_children_inherit_group_by_and_timers() -> None:
    labels = {"alertname": "A", "severity": "critical", "agent_id": "payments-bot"}
    (target,) = router().targets(labels)
    assert target.group_by == ("alertname", "agent_id")
    assert target.group_wait == dt.timedelta(seconds=5)
    assert target.group_interval == dt.timedelta(minutes=5)  # root default
    assert target.repeat_interval == dt.timedelta(hours=4)
    support = router().targets(labels | {"severity": "error", "agent_id": "support-1"})[0]
    assert support.repeat_interval == dt.timedelta(hours=1)
    assert support.group_by == ("alertname",)


def test_zero_timers_are_settings_not_defaults() -> None:
    r = Router(parse_route({"receiver": "default", "group_wait": "0s"}), RECEIVERS)
    assert r.targets({})[0].group_wait == dt.timedelta(0)


def test_group_keys_follow_alertmanager() -> None:
    labels = {"alertname": "HighErrors", "severity": "critical", "agent_id": "payments-bot"}
    (target,) = router().targets(labels)
    assert target.group_key(labels) == (
        '{}/{severity="critical"}/{agent_id="payments-bot"}:'
        '{agent_id="payments-bot", alertname="HighErrors"}'
    )
    # group_by ['...'] groups by every label.
    ops = router().targets({"alertname": "X", "team": "sre", "pod": "p1"})[0]
    assert ops.group_labels({"alertname": "X", "team": "sre", "pod": "p1"}) == {
        "alertname": "X",
        "team": "sre",
        "pod": "p1",
    }


def test_receiver_from_uses_the_label_then_the_lookup_then_the_fallback() -> None:
    tree = {
        "receiver": "default",
        "routes": [{"matchers": ["severity=critical"], "receiver_from": "oncall"}],
    }
    contacts = {"bot-x": "x-oncall", "bot-y": "undefined-receiver"}
    r = Router(parse_route(tree), RECEIVERS, lambda agent, field: contacts.get(agent))
    crit = {"alertname": "A", "severity": "critical"}
    assert receivers(crit | {"agent_id": "bot-x"}, r) == ["x-oncall"]
    assert receivers(crit | {"agent_id": "bot-x", "oncall": "pager"}, r) == ["pager"]
    assert receivers(crit | {"agent_id": "bot-y"}, r) == ["default"]  # unknown name
    assert receivers(crit | {"agent_id": "bot-z"}, r) == ["default"]  # not in the catalog
    assert receivers(crit, r) == ["default"]  # no agent at all


def test_bad_trees_are_refused() -> None:
    with pytest.raises(RoutingError, match="not defined"):
        Router(parse_route({"receiver": "nope"}), RECEIVERS)
    with pytest.raises(RoutingError, match="needs a receiver"):
        Router(parse_route({"routes": []}), RECEIVERS)
    with pytest.raises(
        RoutingError, match=r"route\.grop_by: unknown key \(did you mean group_by\?\)"
    ):
        parse_route({"receiver": "default", "grop_by": ["x"]})
    with pytest.raises(RoutingError, match="receiver_from"):
        parse_route({"receiver": "default", "receiver_from": "boss"})


def test_shipped_config_routes_the_catalog_agents_to_their_contacts(tmp_path: Path) -> None:
    config = load_notify_config(shipped_config_path(), tmp_path)
    catalog = load_catalog(EXAMPLE_CATALOG)
    r = Router(config.route, list(config.receivers), catalog_contacts(catalog))
    agent = next(iter(catalog))
    base = {"alertname": "A", "agent_id": agent.agent_id}
    assert receivers(base | {"severity": "critical"}, r) == [agent.oncall]
    assert receivers(base | {"severity": "warning"}, r) == [agent.owner]
    assert receivers({"alertname": "DeadLetters", "severity": "warning"}, r) == ["local-file"]
    assert receivers(base | {"agent_id": "shadow-agent", "severity": "critical"}, r) == [
        "local-file"
    ]
    for entry in catalog:
        assert entry.owner in config.receivers and entry.oncall in config.receivers


def test_routes_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "routes"]) == 0
    assert "ok, " in capsys.readouterr().out
    labels = ["alertname=AgentViolationBurst", "agent_id=hr-assistant-1", "severity=critical"]
    assert main(["alerts", "routes", *labels, "--catalog", str(EXAMPLE_CATALOG)]) == 0
    out = capsys.readouterr().out
    assert out.startswith('people-platform-oncall\tgroup {}/{severity="critical"}:')
    broken = tmp_path / "notify.yaml"
    broken.write_text("route: {receiver: nobody}\nreceivers: []\n")
    assert main(["alerts", "routes", "--notify-config", str(broken)]) == 2
    assert "receiver 'nobody' is not defined" in capsys.readouterr().err
