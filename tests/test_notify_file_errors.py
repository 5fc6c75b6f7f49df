"""A notification config that does not fit the format is refused with one line: the file,
the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.alerts.notify.config import load_notify_config, shipped_config_path
from agentwatch.cli import main
from agentwatch.durations import DurationError, parse_seconds
from agentwatch.settings import ConfigError

ROUTE = "route: {receiver: r}\n"
RECEIVER = "receivers: [{name: r}]\n"


def _not_a_duration(text: str) -> str:
    """What the duration grammar says about ``text`` (one grammar for every file)."""
    with pytest.raises(DurationError) as caught:
        parse_seconds(text)
    return str(caught.value)


def _hook(settings: str) -> str:
    """A config whose third receiver has one webhook with these settings."""
    return (
        f"{ROUTE}receivers:\n  - name: r\n  - name: s\n"
        f"  - name: t\n    webhook_configs: [{{url: 'http://hooks.example/x', {settings}}}]\n"
    )


BAD_CONFIGS = {
    "unknown top-level key": (
        f"{ROUTE}recievers: [{{name: r}}]\n",
        "recievers: unknown key (did you mean receivers?)",
    ),
    "unknown key in an integration": (
        _hook("timout: 5"),
        "receivers[2].webhook_configs[0].timout: unknown key (did you mean timeout?)",
    ),
    "unknown key in a child route": (
        f"route: {{receiver: r, routes: [{{group_wiat: 1s}}]}}\n{RECEIVER}",
        "route.routes[0].group_wiat: unknown key (did you mean group_wait?)",
    ),
    "unknown key in an inhibit rule": (
        f"{ROUTE}{RECEIVER}inhibit_rules: [{{source_matchers: [a=b], targt_matchers: [c=d]}}]\n",
        "inhibit_rules[0].targt_matchers: unknown key (did you mean target_matchers?)",
    ),
    "a number that is a word": (
        _hook("max_alerts: lots"),
        "receivers[2].webhook_configs[0].max_alerts: Expected `int`, got `str`",
    ),
    "a boolean that is a word": (
        _hook("send_resolved: 'no'"),
        "receivers[2].webhook_configs[0].send_resolved: Expected `bool`, got `str`",
    ),
    "bad duration of a route": (
        f"route: {{receiver: r, group_wait: soon}}\n{RECEIVER}",
        f"route.group_wait: {_not_a_duration('soon')}",
    ),
    "bad duration of an integration": (
        _hook("timeout: soon"),
        f"receivers[2].webhook_configs[0].timeout: {_not_a_duration('soon')}",
    ),
    "zero http timeout": (
        f"global: {{http_timeout: 0}}\n{ROUTE}{RECEIVER}",
        "global.http_timeout: must be above 0, got 0",
    ),
    "zero timeout of an integration": (
        _hook("timeout: 0s"),
        "receivers[2].webhook_configs[0].timeout: must be above 0, got 0s",
    ),
    "zero repeat interval": (
        f"route: {{receiver: r, repeat_interval: 0}}\n{RECEIVER}",
        "route.repeat_interval: must be above 0, got 0",
    ),
    "zero group interval of a child route": (
        f"route: {{receiver: r, routes: [{{group_interval: 0s}}]}}\n{RECEIVER}",
        "route.routes[0].group_interval: must be above 0, got 0s",
    ),
    "max backoff below the initial backoff": (
        f"global: {{retry: {{initial_backoff: 1s, max_backoff: 1ms}}}}\n{ROUTE}{RECEIVER}",
        "global.retry.max_backoff: must be at least initial_backoff (1s), got 1ms",
    ),
    "missing route": (RECEIVER, "route: required key is missing"),
    "file receiver without a path": (
        f"{ROUTE}receivers: [{{name: r, file_configs: [{{send_resolved: false}}]}}]\n",
        "receivers[0].file_configs[0].path: required key is missing",
    ),
    "bad matcher of an inhibit rule": (
        f"{ROUTE}{RECEIVER}inhibit_rules: [{{source_matchers: [a=b], target_matchers: [c]}}]\n",
        "inhibit_rules[0].target_matchers[0]: bad matcher 'c' (use name=value, !=, =~ or !~)",
    ),
}


@pytest.mark.parametrize(("text", "problem"), BAD_CONFIGS.values(), ids=list(BAD_CONFIGS))
def test_a_bad_notification_config_is_one_line_naming_the_file_key_path_and_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_notify_config(path, tmp_path)
    assert str(caught.value) == f"notification config {path}: {problem}"


def test_the_shipped_config_decodes(tmp_path: Path) -> None:
    config = load_notify_config(shipped_config_path(), tmp_path)
    assert "local-file" in config.receivers and len(config.inhibit_rules) == 1


def test_a_list_written_with_nothing_after_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text(f"{ROUTE}{RECEIVER}inhibit_rules:\n  # - source_matchers: [...]\n")
    assert load_notify_config(path, tmp_path).inhibit_rules == []


def test_alerts_routes_with_a_bad_config_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_hook("max_alerts: lots"))
    assert main(["alerts", "routes", "--notify-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"agentwatch: notification config {path}: "
        "receivers[2].webhook_configs[0].max_alerts: Expected `int`, got `str`"
    ]
