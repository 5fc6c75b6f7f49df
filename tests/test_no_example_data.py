"""The shipped example catalog is the demo's: nothing loads it unless it is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentwatch.alerts.governance.catalog import EXAMPLE_CATALOG, load_catalog
from agentwatch.alerts.response.control import BreakerControl, retired_agents
from agentwatch.cli import build_parser, main
from agentwatch.settings import Settings
from tests.test_runbooks import FakeTopic

COMMANDS = [
    ["breaker", "open", "my-agent", "--reason", "r"],
    ["breaker", "close", "my-agent", "--reason", "r"],
    ["breaker", "status"],
    ["alerts", "run"],
    ["alerts", "receive"],
    ["alerts", "routes"],
    ["alerts", "export-prometheus"],
    ["alerts", "approve", "some-action", "--by", "ana"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_no_command_loads_the_example_catalog_unless_told(argv: list[str]) -> None:
    args = build_parser(Settings()).parse_args(argv)
    assert args.catalog is None
    named = build_parser(Settings()).parse_args([*argv, "--catalog", str(EXAMPLE_CATALOG)])
    assert named.catalog == EXAMPLE_CATALOG


def test_without_a_catalog_no_agent_is_known_or_retired() -> None:
    assert len(load_catalog(None)) == 0
    assert retired_agents(load_catalog(None)) == []
    assert retired_agents(load_catalog(EXAMPLE_CATALOG)) != []  # the demo's fleet has one


def _fake_control(monkeypatch: pytest.MonkeyPatch) -> FakeTopic:
    topic = FakeTopic()

    def connect(*args: Any, retired: Any = (), **kwargs: Any) -> BreakerControl:
        return BreakerControl(topic, retired=retired)  # type: ignore[arg-type]

    monkeypatch.setattr(BreakerControl, "connect", connect)
    return topic


def test_breaker_open_without_a_catalog_publishes_only_the_breaker_it_was_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = _fake_control(monkeypatch)
    db = str(tmp_path / "agentwatch.sqlite")
    assert main(["breaker", "open", "my-agent", "--reason", "drill", "--db", db]) == 0
    assert [(m.agent_id, m.state) for m in topic.published] == [("my-agent", "open")]
    assert "no agent catalog (--catalog): no retired agents are held open" in (
        capsys.readouterr().err
    )


def test_breaker_open_with_the_example_catalog_named_holds_its_retired_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    topic = _fake_control(monkeypatch)
    argv = ["breaker", "open", "my-agent", "--reason", "drill", "--db", str(tmp_path / "x.db")]
    assert main([*argv, "--catalog", str(EXAMPLE_CATALOG)]) == 0
    retired = retired_agents(load_catalog(EXAMPLE_CATALOG))
    assert sorted(m.agent_id for m in topic.published) == sorted([*retired, "my-agent"])
