"""Stored values are printed as they are: never read as Rich markup.

A value such as ``x[/]y`` must not crash a table, and ``[bold red]closed[/]`` or
``[link=...]`` must not style the output: they are shown as the characters they are.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

from rich.console import Console

from agentwatch.alerts.evaluation.evaluator import Evaluation
from agentwatch.alerts.notify.silences import Silence
from agentwatch.commands.alerts_run import print_evaluation
from agentwatch.commands.alerts_silence import silences_table
from agentwatch.commands.breaker import status_table
from agentwatch.processors.query.sql import write_rows
from agentwatch.terminal import Table, literal, text
from tests.test_sql_sandbox import _store, run_sql

CLOSING_TAG = "x[/]y"
STYLED = "[bold red]closed[/] [link=http://evil]click[/link]"
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _on_a_terminal(renderable: Any) -> str:
    """What a colour terminal would receive: escape codes included."""
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="truecolor", width=200).print(renderable)
    return out.getvalue()


def _plain(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(renderable)
    return out.getvalue()


def _sql_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    write_rows(columns, rows, "table", out)
    return out.getvalue()


def test_a_closing_tag_in_a_value_is_shown_as_written() -> None:
    assert CLOSING_TAG in _sql_table(["agent_id"], [(CLOSING_TAG,)])


def test_markup_and_a_link_in_a_value_are_shown_as_written() -> None:
    assert STYLED in _sql_table(["agent_id"], [(STYLED,)])


def test_markup_in_a_value_does_not_style_a_terminal() -> None:
    table = Table("agent_id")
    table.add_row(STYLED)
    shown = _on_a_terminal(table)
    assert STYLED in shown
    assert "\x1b]8;" not in shown  # no hyperlink
    assert "\x1b[1;31m" not in shown  # no bold red


def test_a_column_name_from_a_query_is_shown_as_written() -> None:
    assert "[red]h[/]" in _sql_table(["[red]h[/]"], [(1,)])


def test_a_terminal_control_sequence_in_a_value_is_shown_escaped() -> None:
    shown = _on_a_terminal(text("a\x1b[2Jb"))
    assert "a\\x1b[2Jb" in shown
    assert "\x1b[2J" not in shown


def test_a_table_title_from_data_is_shown_as_written() -> None:
    assert f"history of {CLOSING_TAG}" in _plain(Table("#" * 30, title=f"history of {CLOSING_TAG}"))


def test_styling_given_as_a_style_still_applies() -> None:
    shown = _on_a_terminal(text("open", "bold red"))
    assert "\x1b[1;31mopen" in shown


def test_literal_escapes_data_inside_a_markup_line() -> None:
    assert f"error: {CLOSING_TAG}" in _plain(f"[red]error: {literal(CLOSING_TAG)}[/]")


def test_the_sql_command_prints_stored_markup_as_written(tmp_path: Path) -> None:
    db = _store(tmp_path / "data")
    done = run_sql(db, f"SELECT '{CLOSING_TAG}' AS agent_id, '{STYLED}' AS status", tmp_path)
    assert done.returncode == 0, done.stderr
    assert CLOSING_TAG in done.stdout
    assert STYLED in done.stdout


def test_breaker_status_shows_a_reason_with_a_closing_tag() -> None:
    row = {
        "breaker": "victim",
        "state": "open",
        "since": "2026-01-01 12:00:00",
        "cooldown": "60 s left",
        "confirmed": "not yet",
        "actor": "person:[bold]me[/]",
        "reason": "regex [/] tripped",
    }
    shown = _plain(status_table([row]))
    assert "regex [/] tripped" in shown
    assert "person:[bold]me[/]" in shown


def test_a_silence_comment_with_markup_is_shown_as_written() -> None:
    silence = Silence(
        id="s1",
        matchers=(),
        starts_at=T0,
        ends_at=T0 + dt.timedelta(hours=1),
        created_by=CLOSING_TAG,
        comment=STYLED,
        created_at=T0,
    )
    shown = _plain(silences_table([silence], T0))
    assert CLOSING_TAG in shown
    assert STYLED in shown


def test_an_evaluation_error_with_a_closing_tag_is_shown_as_written() -> None:
    evaluation = Evaluation(
        at=T0, transitions=(), alerts=(), verdicts=(), errors={"Rule": f"bad {CLOSING_TAG}"}
    )
    out = io.StringIO()
    print_evaluation(evaluation, out)
    assert f"Rule: not evaluated: bad {CLOSING_TAG}" in out.getvalue()
