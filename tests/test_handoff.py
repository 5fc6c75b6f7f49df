"""The hand-off between the fetch loop and the landing thread: one piece of work in flight."""

from __future__ import annotations

import threading

import pytest

from agentwatch.processors.landing.handoff import Handoff


def test_the_result_of_the_work_in_flight_is_taken_once() -> None:
    handoff: Handoff[int] = Handoff("test")
    handoff.submit(lambda: 42)
    assert handoff.take() == 42
    assert handoff.take() is None
    handoff.close()


def test_the_work_runs_beside_the_caller_until_taken() -> None:
    release = threading.Event()
    handoff: Handoff[str] = Handoff("test")
    handoff.submit(lambda: "landed" if release.wait(10) else "timed out")
    assert handoff.busy and handoff.holding
    release.set()
    assert handoff.take() == "landed"
    assert not handoff.holding
    handoff.close()


def test_a_failure_of_the_work_is_raised_to_the_taker() -> None:
    def fail() -> int:
        raise OSError("disk full")

    handoff: Handoff[int] = Handoff("test")
    handoff.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        handoff.take()
    handoff.close()


def test_a_second_hand_off_before_the_first_is_taken_is_refused() -> None:
    handoff: Handoff[int] = Handoff("test")
    handoff.submit(lambda: 1)
    with pytest.raises(RuntimeError, match="not taken"):
        handoff.submit(lambda: 2)
    assert handoff.take() == 1
    handoff.close()


def test_closing_lets_the_work_in_flight_finish() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def work() -> None:
        started.set()
        release.wait(10)
        finished.append(True)

    handoff: Handoff[None] = Handoff("test")
    handoff.submit(work)
    started.wait(10)
    threading.Timer(0.05, release.set).start()
    handoff.close()
    assert finished == [True]
