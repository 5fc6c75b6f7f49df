"""Breaker changes and silences need an agent, a tool, a reason or a comment that says something."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.cli import main


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("action", ["open", "close"])
def test_a_breaker_change_with_an_empty_agent_is_refused(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "agentwatch.sqlite")
    line = _refused(["breaker", action, "", "--reason", "r", "--db", db], capsys)
    assert line.endswith("argument AGENT: must not be empty or blank")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["open", "close"])
def test_a_breaker_change_with_a_blank_reason_is_refused(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "agentwatch.sqlite")
    line = _refused(["breaker", action, "bot", "--reason", "  ", "--db", db], capsys)
    assert line.endswith("argument --reason: must not be empty or blank")
    assert list(tmp_path.iterdir()) == []


def test_a_breaker_change_with_an_empty_tool_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(["breaker", "open", "bot", "--tool", "", "--reason", "r"], capsys)
    assert line.endswith("argument --tool: must not be empty or blank")


def test_breaker_status_of_an_empty_agent_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert _refused(["breaker", "status", ""], capsys).endswith(
        "argument AGENT: must not be empty or blank"
    )


def test_a_silence_with_an_empty_comment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "agentwatch.sqlite")
    argv = ["alerts", "silence", "--db", db, "--match", "agent_id=x", "--comment", ""]
    assert _refused(argv, capsys).endswith("argument --comment: must not be empty or blank")
    assert list(tmp_path.iterdir()) == []
