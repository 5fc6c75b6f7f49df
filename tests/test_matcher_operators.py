"""Matchers: ``name==value`` is a typo for ``name=value``, never a value starting with ``=``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.alerts.notify.config import parse_notify_config
from agentwatch.alerts.notify.routing import Matcher, RoutingError
from agentwatch.alerts.notify.silences import SilenceStore
from agentwatch.cli import main


def test_a_doubled_equals_sign_is_refused_with_the_matcher_meant() -> None:
    with pytest.raises(RoutingError, match=r"did you mean agent_id=x\?"):
        Matcher.parse("agent_id==x")


def test_a_quoted_value_that_starts_with_an_equals_sign_is_kept() -> None:
    matcher = Matcher.parse('agent_id="=x"')
    assert (matcher.op, matcher.value) == ("=", "=x")
    assert Matcher.parse(str(matcher)) == matcher


def test_a_not_equal_matcher_is_not_taken_for_a_doubled_equals_sign() -> None:
    assert Matcher.parse("agent_id!=x") == Matcher.create("agent_id", "!=", "x")


def test_a_route_matcher_with_a_doubled_equals_sign_names_its_key_path() -> None:
    doc = {
        "route": {"receiver": "r", "routes": [{"receiver": "r", "matchers": ["severity==crit"]}]},
        "receivers": [{"name": "r"}],
    }
    with pytest.raises(RoutingError, match=r"route\.routes\[0\]\.matchers\[0\]: .*severity=crit\?"):
        parse_notify_config(doc, Path("."))


def test_silence_with_a_doubled_equals_sign_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "agentwatch.sqlite")
    argv = ["alerts", "silence", "--db", db, "--match", "agent_id==x", "--comment", "c"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean agent_id=x?" in err and "\n" not in err and "Traceback" not in err
    assert SilenceStore(tmp_path).all() == []
