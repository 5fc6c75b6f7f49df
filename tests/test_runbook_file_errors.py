"""A runbook file that does not fit the format is refused with one line: the file, the key
path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.alerts.response.runbook_files import (
    RUNBOOK_DIR,
    RunbookError,
    load_runbook,
    load_runbooks,
)
from agentwatch.cli import main
from agentwatch.durations import DurationError, parse_seconds

STEP = "steps: [{action: notify_owner}]\n"


def _not_a_duration(text: str) -> str:
    """What the duration grammar says about ``text`` (one grammar for every file)."""
    with pytest.raises(DurationError) as caught:
        parse_seconds(text)
    return str(caught.value)


BAD_RUNBOOKS = {
    "unknown top-level key": (
        f"id: x\ntitel: Contain\n{STEP}",
        "titel: unknown key (did you mean title?)",
    ),
    "misspelt run_when_silenced": (
        f"id: x\nrun_when_silencd: true\n{STEP}",
        "run_when_silencd: unknown key (did you mean run_when_silenced?)",
    ),
    "unknown key in the second step": (
        "id: x\nsteps:\n  - action: notify_owner\n  - {action: open_breaker, cooldwn: 5m}\n",
        "steps[1]: open_breaker takes no cooldwn (did you mean cooldown?)",
    ),
    "a parameter of another action": (
        "id: x\nsteps: [{action: open_breaker, rate: 1}]\n",
        "steps[0]: open_breaker takes no rate",
    ),
    "unknown action": (
        "id: x\nsteps: [{action: notify_owner}, {action: open_breakr}]\n",
        "steps[1].action: unknown action 'open_breakr' (did you mean open_breaker?)",
    ),
    "wrong type": (
        f"id: x\nrun_when_silenced: sometimes\n{STEP}",
        "run_when_silenced: Expected `bool`, got `str`",
    ),
    "wrong type in a step": (
        "id: x\nsteps: [{action: throttle, rate: fast}]\n",
        "steps[0].rate: Expected `float | null`, got `str`",
    ),
    "bad duration": (
        "id: x\nsteps: [{action: open_breaker, cooldown: soon}]\n",
        f"steps[0].cooldown: {_not_a_duration('soon')}",
    ),
    "missing id": (STEP, "id: required key is missing"),
    "step without an action": (
        "id: x\nsteps: [{why: halt it}]\n",
        "steps[0].action: required key is missing",
    ),
}


@pytest.mark.parametrize(("text", "problem"), BAD_RUNBOOKS.values(), ids=list(BAD_RUNBOOKS))
def test_a_bad_runbook_file_is_one_line_naming_the_file_key_path_and_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(RunbookError) as caught:
        load_runbook(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_every_shipped_runbook_decodes() -> None:
    shipped = sorted(p.stem for p in RUNBOOK_DIR.glob("*.yaml"))
    assert sorted(load_runbooks(RUNBOOK_DIR)) == shipped


def test_a_key_written_with_nothing_after_it_takes_its_default(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("id: x\ntitle:\ndescription:\nsteps: [{action: notify_owner, why: }]\n")
    book = load_runbook(path)
    assert (book.title, book.description, book.steps[0].why) == ("x", "", "")


def test_run_when_silenced_is_kept_when_the_runbook_is_read_from_its_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(f"id: x\nrun_when_silenced: true\n{STEP}")
    assert load_runbook(path).run_when_silenced


def test_alerts_run_with_a_bad_runbook_prints_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTWATCH_CONTROL_KEYS", "k1:" + "a" * 40)
    books = tmp_path / "books"
    books.mkdir()
    (books / "x.yaml").write_text(f"id: x\nstepz: []\n{STEP}")
    db = str(tmp_path / "db.sqlite")
    assert main(["alerts", "run", "--once", "--db", db, "--runbook-dir", str(books)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"agentwatch: {books / 'x.yaml'}: stepz: unknown key (did you mean steps?)"
    assert "Traceback" not in "\n".join(err)
