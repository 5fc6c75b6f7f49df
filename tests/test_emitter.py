"""The emitter: bounded, non-blocking, batching, retrying, and honest about what it drops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agentwatch.ingest.sdk.emitter import (
    DROP_BUFFER_FULL,
    DROP_CLOSED,
    DROP_REJECTED,
    DROP_UNDELIVERED,
    Emitter,
    Record,
    SendError,
)

WAIT = 5.0  # deadline for anything awaited; generous, only reached when a test fails


class ScriptedTransport:
    """A transport whose broker can be made slow (a gate) or failing (a script of errors)."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.attempts = 0
        self.closed = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when send_batch is first called
        self.failures: list[Exception] = []  # raised one per attempt, before sending
        self.changed = threading.Condition()

    def send_batch(self, records: list[Record]) -> None:
        self.entered.set()
        self.gate.wait()
        with self.changed:
            self.attempts += 1
            self.changed.notify_all()
            if self.failures:
                failure = self.failures.pop(0)
                if isinstance(failure, SendError):
                    failed = set(failure.retry) | set(failure.rejected)
                    self.batches.append([r for r in records if r not in failed])
                raise failure
            self.batches.append(list(records))
            self.changed.notify_all()

    def close(self) -> None:
        self.closed += 1

    def delivered(self) -> list[Record]:
        with self.changed:
            return [r for batch in self.batches for r in batch]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


def rec(i: int) -> Record:
    return (f"s{i % 3}".encode(), f'{{"n":{i}}}'.encode())


@pytest.fixture
def transport() -> Iterator[ScriptedTransport]:
    t = ScriptedTransport()
    yield t
    t.gate.set()  # never leave a sender thread parked on the gate


@pytest.fixture
def make_emitter(transport: ScriptedTransport) -> Iterator[Callable[..., Emitter]]:
    made: list[Emitter] = []

    def make(**options: object) -> Emitter:
        options.setdefault("exit_timeout_s", None)
        emitter = Emitter(transport, **options)  # type: ignore[arg-type]
        made.append(emitter)
        return emitter

    yield make
    transport.gate.set()
    for emitter in made:
        emitter.close(timeout=WAIT)


def test_a_full_batch_is_sent_without_waiting_for_the_linger(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    emitter = make_emitter(max_batch=3, linger_ms=60_000)
    for i in range(7):
        emitter.emit(*rec(i))

    assert transport.wait_until(lambda: len(transport.batches) == 2)
    assert [len(b) for b in transport.batches] == [3, 3]
    assert emitter.stats().buffered == 1  # the partial batch lingers


def test_a_partial_batch_is_sent_once_the_linger_has_passed(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    emitter = make_emitter(max_batch=100, linger_ms=30)
    started = time.monotonic()
    emitter.emit(*rec(1))
    emitter.emit(*rec(2))

    assert transport.wait_until(lambda: len(transport.batches) == 1)
    assert time.monotonic() - started >= 0.03
    assert transport.batches == [[rec(1), rec(2)]]


def test_flush_delivers_everything_emitted_before_it_in_order(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    emitter = make_emitter(max_batch=10, linger_ms=60_000)
    for i in range(25):
        emitter.emit(*rec(i))

    assert emitter.flush(timeout=WAIT) is True
    assert transport.delivered() == [rec(i) for i in range(25)]
    stats = emitter.stats()
    assert (stats.emitted, stats.sent, stats.dropped_total, stats.buffered) == (25, 25, 0, 0)


def test_flush_returns_false_when_the_transport_is_stuck_past_the_timeout(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    transport.gate.clear()
    emitter = make_emitter()
    emitter.emit(*rec(1))

    assert emitter.flush(timeout=0.05) is False


def test_emit_returns_at_once_and_drops_the_overflow_while_the_transport_is_stuck(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    transport.gate.clear()
    emitter = make_emitter(buffer_size=100, max_batch=10, linger_ms=0)
    emitter.emit(*rec(0))
    assert transport.entered.wait(WAIT)  # the sender now holds one batch, stuck

    slowest = 0.0
    for i in range(1, 1001):
        started = time.perf_counter()
        emitter.emit(*rec(i))
        slowest = max(slowest, time.perf_counter() - started)

    assert slowest < 0.05
    stats = emitter.stats()
    assert stats.emitted == 1001
    assert stats.buffered == 100
    assert stats.dropped == {DROP_BUFFER_FULL: 900}
    assert stats.sent == 0


def test_transport_errors_are_counted_and_the_batch_retried_until_it_goes(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    transport.failures = [ConnectionError("broker down"), ConnectionError("still down")]
    emitter = make_emitter(retry_backoff_ms=1, max_batch=10)
    for i in range(5):
        emitter.emit(*rec(i))

    assert emitter.flush(timeout=WAIT) is True
    assert transport.delivered() == [rec(i) for i in range(5)]
    stats = emitter.stats()
    assert (stats.send_errors, stats.sent, stats.dropped_total) == (2, 5, 0)


def test_a_partial_failure_retries_only_the_failed_records_and_drops_the_rejected(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    transport.failures = [SendError("partial", retry=[rec(1)], rejected=[rec(2)])]
    emitter = make_emitter(retry_backoff_ms=1, max_batch=10, linger_ms=60_000)
    for i in range(4):
        emitter.emit(*rec(i))

    assert emitter.flush(timeout=WAIT) is True
    assert transport.batches == [[rec(0), rec(3)], [rec(1)]]
    stats = emitter.stats()
    assert (stats.sent, stats.send_errors, stats.dropped) == (3, 1, {DROP_REJECTED: 1})


def test_close_delivers_what_is_buffered_and_closes_the_transport(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    emitter = make_emitter(linger_ms=60_000)
    for i in range(3):
        emitter.emit(*rec(i))

    assert emitter.close(timeout=WAIT) is True
    assert transport.delivered() == [rec(0), rec(1), rec(2)]
    assert transport.closed == 1


def test_close_is_idempotent(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    emitter = make_emitter()
    emitter.emit(*rec(1))

    assert emitter.close(timeout=WAIT) is True
    assert emitter.close(timeout=WAIT) is True
    assert transport.closed == 1
    assert transport.delivered() == [rec(1)]


def test_close_gives_up_at_its_timeout_and_counts_what_was_not_delivered(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    transport.failures = [ConnectionError("down")] * 1_000_000
    emitter = make_emitter(retry_backoff_ms=1, max_retry_backoff_ms=1, max_batch=2)
    for i in range(5):
        emitter.emit(*rec(i))
    assert transport.wait_until(lambda: transport.attempts >= 1)

    started = time.monotonic()
    assert emitter.close(timeout=0.2) is False
    assert time.monotonic() - started < 2.0
    assert emitter.flush(timeout=WAIT)  # the in-flight batch is given up after its attempt
    assert emitter.stats().dropped == {DROP_UNDELIVERED: 5}
    assert emitter.stats().sent == 0


def test_events_emitted_after_close_are_dropped_and_counted(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    emitter = make_emitter()
    emitter.close(timeout=WAIT)

    emitter.emit(*rec(1))

    assert emitter.stats().dropped == {DROP_CLOSED: 1}
    assert transport.delivered() == []


def test_the_context_manager_closes_the_emitter(transport: ScriptedTransport) -> None:
    with Emitter(transport, linger_ms=60_000, exit_timeout_s=None) as emitter:
        emitter.emit(*rec(1))

    assert transport.delivered() == [rec(1)]
    assert transport.closed == 1


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "dropped" in record.getMessage():
            self.records.append(record)


def test_drops_are_logged_in_aggregate_not_once_per_drop(
    make_emitter: Callable[..., Emitter], transport: ScriptedTransport
) -> None:
    captured = _Captured()
    logger = logging.getLogger("agentwatch.ingest.sdk.emitter")
    logger.addHandler(captured)
    try:
        transport.gate.clear()
        emitter = make_emitter(buffer_size=10, max_batch=10, linger_ms=0, report_interval_s=3600)
        emitter.emit(*rec(0))
        assert transport.entered.wait(WAIT)
        for i in range(1, 1011):
            emitter.emit(*rec(i))
        transport.gate.set()
        emitter.close(timeout=WAIT)
    finally:
        logger.removeHandler(captured)

    assert 1 <= len(captured.records) <= 2
    reported = sum(sum(getattr(r, "dropped", {}).values()) for r in captured.records)
    assert reported == 1000
