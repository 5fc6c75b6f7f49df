"""The command line: a table of commands, and only the chosen one imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentwatch.cli import ALERTS, COMMANDS, build_parser, command_words, main
from agentwatch.processors.store.lake import LakeStore
from agentwatch.settings import Settings

HEAVY = ("scipy", "matplotlib", "polars", "kafka", "grafanalib", "prometheus_client")


def _modules_after(argv: list[str]) -> set[str]:
    """The modules imported by running ``agentwatch ARGV`` in a fresh interpreter."""
    code = (
        "import contextlib, io, json, sys\n"
        "from agentwatch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_help_lists_every_command_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for command in COMMANDS:
        assert f"{command.name} {command.help}" in text


def test_alerts_help_lists_every_alerts_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["alerts", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for command in ALERTS:
        assert f"{command.name} {command.help}" in text


def test_version_imports_no_command_module() -> None:
    loaded = _modules_after(["--version"])
    assert not any(m.startswith("agentwatch.commands.") for m in loaded)
    assert not [m for m in HEAVY if m in loaded]


def test_sql_imports_only_its_own_command_and_no_heavy_library(tmp_path: Path) -> None:
    db = tmp_path / "agentwatch.sqlite"
    LakeStore(db).prepare()
    loaded = _modules_after(["sql", "SELECT 1", "--db", str(db)])
    commands = {m for m in loaded if m.startswith("agentwatch.commands.")}
    assert commands == {"agentwatch.commands.sql", "agentwatch.commands.options"}
    assert not [m for m in HEAVY if m in loaded]


def test_the_whole_parser_has_every_command_and_subcommand() -> None:
    parser = build_parser(Settings())
    assert parser.parse_args(["alerts", "run"]).handler is not None
    for command in COMMANDS:
        if not command.subcommands:
            assert command.register() is not None
    for sub in ALERTS:
        assert sub.register() is not None


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--version"], []),
        (["--log-level", "debug", "sql", "SELECT 1", "--db", "x"], ["sql", "SELECT 1"]),
        (["alerts", "run", "--once"], ["alerts", "run"]),
        (["breaker", "--help"], ["breaker"]),
        (["--log-format=json", "demo"], ["demo"]),
    ],
)
def test_the_command_words_are_found_before_the_parser_is_built(
    argv: list[str], words: list[str]
) -> None:
    assert command_words(argv) == words


def test_an_unknown_command_is_an_error_naming_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-command"])
    assert exit_.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_logging_setup_leaves_other_formatters_in_local_time() -> None:
    import logging
    import time

    from agentwatch.logs import JsonFormatter, TextFormatter, setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "json")
        assert logging.Formatter.converter is time.localtime
        assert JsonFormatter.converter is time.gmtime
        assert TextFormatter.converter is time.gmtime
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.mark.parametrize(
    "argv",
    [
        ["contract", "schema", "--out", "{dir}"],
        ["contract", "check", "{dir}/missing.jsonl"],
        ["store", "maintain", "--db", "{dir}"],
    ],
)
def test_a_path_a_command_cannot_use_is_one_line_and_exit_1(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.format(dir=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("agentwatch: ") and "\n" not in err and str(tmp_path) in err


def test_a_config_file_that_is_a_directory_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path), "sql", "SELECT 1"]) == 2
    assert capsys.readouterr().err.strip() == f"agentwatch: config file {tmp_path}: Is a directory"


def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agentwatch.toml"
    config.write_bytes(b"\xff\xfe[process]\n")
    assert main(["--config", str(config), "sql", "SELECT 1"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_the_demo_refuses_a_missing_scenario_before_it_starts_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["demo", "--scenario", str(missing), "--data-dir", str(tmp_path / "d")]) == 2
    assert f"{missing}: cannot read: " in capsys.readouterr().err
    assert not (tmp_path / "d" / "kafka").exists()
