"""``agentwatch contract check FILE``: each invalid event named by its line in the file, and a
file that cannot be read refused as a usage error (exit 2), not as invalid events (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.cli import main
from tests.examples import valid_lines

MISSING_KIND = b'{"a": 1}'


def check(path: Path) -> int:
    return main(["contract", "check", str(path)])


def test_an_invalid_event_after_blank_lines_is_named_by_its_line_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n\n\n" + MISSING_KIND + b"\n")
    assert check(events) == 1
    assert capsys.readouterr().out.splitlines() == [
        "line 4: missing_field: Object missing required field `kind`",
        "0 valid, 1 invalid",
    ]


def test_lines_are_counted_through_blank_lines_between_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = valid_lines()[0]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\r\n".join([good, b"", b"  ", MISSING_KIND, b"", good, MISSING_KIND]))
    assert check(events) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:-1]] == ["line 4", "line 7"]
    assert out[-1] == "2 valid, 2 invalid"


def test_a_file_of_valid_events_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(valid_lines()) + b"\n\n")
    assert check(events) == 0
    assert capsys.readouterr().out == f"{len(valid_lines())} valid, 0 invalid\n"


def test_a_missing_file_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert check(missing) == 1
    captured = capsys.readouterr()
    assert captured.err == f"agentwatch: {missing}: No such file or directory\n"
    assert captured.out == ""


def test_a_directory_given_as_the_file_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path) == 1
    assert capsys.readouterr().err == f"agentwatch: {tmp_path}: Is a directory\n"
