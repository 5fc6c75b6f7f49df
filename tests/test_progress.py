"""Progress of long commands: a bar on a terminal, a log line each tenth elsewhere."""

from __future__ import annotations

import logging

import pytest

from agentwatch.progress import progress_bar


def test_progress_is_logged_each_tenth_when_stderr_is_not_a_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="agentwatch.progress"),
        progress_bar("drift report", 25) as advance,
    ):
        for _ in range(25):
            advance(1)
    done = [r.__dict__["done"] for r in caplog.records]
    assert done == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert caplog.records[-1].getMessage() == "drift report: 25 of 25"


def test_one_step_of_work_shows_no_progress(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="agentwatch.progress"),
        progress_bar("drift report", 1) as advance,
    ):
        advance(1)
    assert caplog.records == []
