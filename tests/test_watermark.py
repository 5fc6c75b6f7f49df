"""Late events: within the allowed lateness they count; past it they are marked late."""

from __future__ import annotations

from agentwatch.processors.landing.watermark import mark_late
from tests.frames import at, events


def late_flags(
    seconds: list[float], watermark_s: float | None = None, lateness: float = 60
) -> list[bool]:
    frame = events(*({"ts": at(s)} for s in seconds))
    marked, _ = mark_late(frame, at(watermark_s) if watermark_s is not None else None, lateness)
    return marked["_late"].to_list()


def test_in_order_events_are_never_late() -> None:
    assert late_flags([0, 10, 70, 200]) == [False, False, False, False]


def test_an_out_of_order_event_within_the_lateness_is_not_late() -> None:
    # window [0, 60) closes at 60 + 60 s lateness = 120; the watermark is only 100
    assert late_flags([100, 30]) == [False, False]


def test_an_event_whose_window_closed_is_late() -> None:
    # window [0, 60) closed once the watermark reached 120
    assert late_flags([130, 30]) == [False, True]


def test_the_watermark_carries_over_from_earlier_batches() -> None:
    assert late_flags([30], watermark_s=500) == [True]


def test_the_new_watermark_is_the_highest_event_time() -> None:
    frame = events({"ts": at(50)}, {"ts": at(400)}, {"ts": at(10)})
    _, watermark = mark_late(frame, at(100), 60)
    assert watermark == at(400)


def test_an_empty_batch_keeps_the_watermark() -> None:
    frame = events()
    _, watermark = mark_late(frame, at(5), 60)
    assert watermark == at(5)
