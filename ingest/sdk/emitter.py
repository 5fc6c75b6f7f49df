"""Background delivery of encoded events, so that tracing can never slow or break the agent.

The agent's threads only append to a bounded in-memory buffer; one sender thread cuts
batches and ships them through a :class:`Transport`, retrying with backoff for as long as
the transport fails. When the transport is slow or down the buffer fills and further
events are dropped and counted: memory stays bounded and ``emit`` never waits on I/O.
Delivery is at least once: a batch whose outcome is unknown is sent again, and the
processor deduplicates by ``event_id``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol

from agentwatch.ingest.contract.wire import DEFAULT_TOPIC
from agentwatch.kafka import KafkaSecurity, client_options

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes]
"""One Kafka message as (key, value)."""

DROP_BUFFER_FULL: Final = "buffer_full"
DROP_CLOSED: Final = "closed"
DROP_UNDELIVERED: Final = "undelivered"
DROP_REJECTED: Final = "rejected"
DROP_INTERNAL: Final = "internal_error"


class Transport(Protocol):
    """Where batches go. Called from the sender thread only, so it may block."""

    def send_batch(self, records: list[Record]) -> None:
        """Deliver every record, or raise; :class:`SendError` narrows what to retry."""
        ...

    def close(self) -> None: ...


class SendError(Exception):
    """A batch was partly delivered: only ``retry`` is sent again; ``rejected`` never can be.

    Raising any other exception from ``send_batch`` retries the whole batch.
    """

    def __init__(
        self, message: str, *, retry: Sequence[Record] = (), rejected: Sequence[Record] = ()
    ) -> None:
        super().__init__(message)
        self.retry = list(retry)
        self.rejected = list(rejected)


@dataclass(frozen=True)
class EmitterStats:
    """Counters since the emitter was made; ``emitted`` = ``sent`` + dropped + still pending."""

    emitted: int
    sent: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    send_errors: int = 0
    buffered: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class RateLimiter:
    """Lets an action through at most once per interval, so a flood of failures is one log line."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next = float("-inf")
        self._lock = threading.Lock()

    def ready(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self._interval
            return True


_OPEN: set[Emitter] = set()


@atexit.register
def _close_open_emitters() -> None:
    # Without this, events buffered when the agent exits would die with the daemon thread.
    for emitter in list(_OPEN):
        emitter.close(emitter.exit_timeout_s)


class Emitter:
    """A bounded buffer drained by a background thread; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
        *,
        buffer_size: int = 10_000,
        max_batch: int = 500,
        linger_ms: float = 50.0,
        retry_backoff_ms: float = 100.0,
        max_retry_backoff_ms: float = 5_000.0,
        report_interval_s: float = 30.0,
        exit_timeout_s: float | None = 5.0,
        name: str = "agentwatch-emitter",
    ) -> None:
        """``exit_timeout_s`` bounds the flush at interpreter exit; ``None`` skips that flush."""
        if buffer_size < 1 or max_batch < 1:
            raise ValueError("buffer_size and max_batch must be at least 1")
        if linger_ms < 0 or retry_backoff_ms <= 0 or max_retry_backoff_ms < retry_backoff_ms:
            raise ValueError("need linger_ms >= 0 and 0 < retry_backoff_ms <= max_retry_backoff_ms")
        self._transport = transport
        self._buffer_size = buffer_size
        self._max_batch = max_batch
        self._linger = linger_ms / 1000
        self._backoff = retry_backoff_ms / 1000
        self._max_backoff = max_retry_backoff_ms / 1000
        self._report_interval = report_interval_s
        self.exit_timeout_s = exit_timeout_s

        lock = threading.Lock()
        self._work = threading.Condition(lock)  # wakes the sender
        self._progress = threading.Condition(lock)  # wakes flush() and close()
        self._buf: deque[Record] = deque()
        self._oldest: float = 0.0  # monotonic time the current partial batch started waiting
        self._accepted = 0  # records ever put in the buffer, numbering them in order
        self._taken = 0  # records handed to the sender so far
        self._done = 0  # records no longer pending; batches finish in order, so a prefix
        self._flush_upto = 0  # a flush waits for records up to here: send them without lingering
        self._closing = False
        self._stopped = False
        self._close_result: bool | None = None
        self._abandon = threading.Event()  # close timed out: stop retrying

        self._emitted = 0
        self._sent = 0
        self._send_errors = 0
        self._dropped: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()  # drops already logged
        self._next_report = 0.0
        self._error_log = RateLimiter(report_interval_s)

        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if exit_timeout_s is not None:
            _OPEN.add(self)

    # -- the agent's side: none of these may block on I/O or raise --------------------

    def emit(self, key: bytes, value: bytes) -> None:
        """Queue one record; drop and count it when the buffer is full or the emitter closed."""
        try:
            with self._work:
                self._emitted += 1
                if self._closing:
                    self._dropped[DROP_CLOSED] += 1
                    return
                buffered = len(self._buf)
                if buffered >= self._buffer_size:
                    self._dropped[DROP_BUFFER_FULL] += 1
                    return
                self._buf.append((key, value))
                self._accepted += 1
                if buffered == 0:
                    self._oldest = time.monotonic()
                    self._work.notify()
                elif buffered + 1 == self._max_batch:
                    self._work.notify()
        except Exception:  # pragma: no cover - only MemoryError-like failures get here
            self._dropped[DROP_INTERNAL] += 1

    def stats(self) -> EmitterStats:
        with self._work:
            return EmitterStats(
                emitted=self._emitted,
                sent=self._sent,
                dropped=dict(self._dropped),
                send_errors=self._send_errors,
                buffered=len(self._buf),
            )

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until nothing emitted before this call is pending; False if the timeout came first.

        Records count as no longer pending once sent, or dropped and counted.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._work:
            target = self._accepted
            self._flush_upto = max(self._flush_upto, target)
            self._work.notify()
            return self._wait_done(target, deadline)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Deliver what is buffered, then stop; what cannot go by the timeout is dropped.

        Safe to call more than once. Returns whether everything was delivered in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        _OPEN.discard(self)
        with self._work:
            self._closing = True
            self._work.notify()
            delivered = self._wait_done(self._accepted, deadline)
            if self._close_result is not None:
                delivered = self._close_result
            elif not delivered:
                self._abandon.set()
                undelivered = len(self._buf)
                self._buf.clear()
                self._taken += undelivered
                if undelivered:
                    self._dropped[DROP_UNDELIVERED] += undelivered
                self._work.notify()
            self._close_result = delivered
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._thread.join(remaining)
        self._report_drops(force=True)
        return delivered

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wait_done(self, target: int, deadline: float | None) -> bool:
        # Called with the lock held.
        while self._done < target and not self._stopped:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._progress.wait(remaining)
        return self._done >= target

    # -- the sender thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._report_drops()
                step = self._next_batch()
                if step is None:
                    return
                batch, end = step
                if batch:
                    self._deliver(batch)
                with self._work:
                    self._done = max(self._done, end)
                    self._progress.notify_all()
        except BaseException:
            log.exception("agentwatch emitter: sender thread failed; events will be dropped")
            raise
        finally:
            with self._work:
                self._closing = True
                self._stopped = True
                leftover = len(self._buf)
                self._buf.clear()
                if leftover:
                    self._dropped[DROP_UNDELIVERED] += leftover
                self._done = self._accepted
                self._progress.notify_all()
            try:
                self._transport.close()
            except Exception:
                log.warning("agentwatch emitter: closing the transport failed", exc_info=True)

    def _next_batch(self) -> tuple[list[Record], int] | None:
        """The next batch and the sequence number of its last record; ([], n) when idle."""
        with self._work:
            while True:
                buffered = len(self._buf)
                now = time.monotonic()
                if buffered:
                    due = self._oldest + self._linger
                    if (
                        buffered >= self._max_batch
                        or self._closing
                        or self._taken < self._flush_upto
                        or now >= due
                    ):
                        count = min(buffered, self._max_batch)
                        batch = [self._buf.popleft() for _ in range(count)]
                        self._taken += count
                        self._oldest = now  # leftovers have waited already; at most one linger more
                        return batch, self._taken
                    timeout = due - now
                elif self._closing:
                    return None
                else:
                    timeout = self._report_interval
                if not self._work.wait(timeout) and not buffered:
                    return [], self._taken  # idle: let the loop report drops

    def _deliver(self, batch: list[Record]) -> None:
        pending = batch
        backoff = self._backoff
        while pending:
            failure: Exception | None = None
            retry: list[Record] = []
            rejected: list[Record] = []
            try:
                self._transport.send_batch(pending)
            except SendError as exc:
                failure, retry, rejected = exc, exc.retry, exc.rejected
            except Exception as exc:
                failure, retry = exc, pending
            with self._work:
                self._sent += max(0, len(pending) - len(retry) - len(rejected))
                if rejected:
                    self._dropped[DROP_REJECTED] += len(rejected)
                if failure is not None:
                    self._send_errors += 1
            if failure is not None and self._error_log.ready():
                log.warning(
                    "agentwatch emitter: send failed (%s: %s); retrying %d, rejected %d",
                    type(failure).__name__,
                    failure,
                    len(retry),
                    len(rejected),
                    extra={"retry": len(retry), "rejected": len(rejected)},
                )
            pending = retry
            if pending:
                self._report_drops()
                if self._abandon.wait(backoff):
                    with self._work:
                        self._dropped[DROP_UNDELIVERED] += len(pending)
                    return
                backoff = min(backoff * 2, self._max_backoff)

    def _report_drops(self, force: bool = False) -> None:
        """Log drops in aggregate, at most once per interval, never from the agent's thread."""
        now = time.monotonic()
        if not force and now < self._next_report:
            return
        with self._work:
            new = self._dropped - self._reported
            if not new:
                return
            self._reported = Counter(self._dropped)
            total = sum(self._dropped.values())
        self._next_report = now + self._report_interval
        log.warning(
            "agentwatch emitter: dropped %d events (%s); %d dropped in total",
            sum(new.values()),
            ", ".join(f"{reason}={n}" for reason, n in sorted(new.items())),
            total,
            extra={"dropped": dict(new), "dropped_total": total},
        )


# -- Kafka ------------------------------------------------------------------------------

_PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "acks": "all",
    "linger_ms": 5,  # the emitter batches already
    "client_id": "agentwatch-sdk",
    # Bounds on how long one attempt may hold the sender thread, so close() stays prompt
    # and a down broker turns into retries with backoff rather than one endless wait.
    "bootstrap_timeout_ms": 5_000,
    "max_block_ms": 5_000,
    "request_timeout_ms": 10_000,
    "delivery_timeout_ms": 30_000,
    "reconnect_backoff_max_ms": 5_000,
}

# Errors that sending the same record again cannot cure.
_PERMANENT_ERRORS: Final = (
    "MessageSizeTooLargeError",
    "RecordListTooLargeError",
    "InvalidRecordError",
    "CorruptRecordError",
)


def _is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, TypeError | ValueError) or type(exc).__name__ in _PERMANENT_ERRORS


class KafkaTransport:
    """Keyed sends with kafka-python's producer, which is created on first use.

    Creating the producer contacts the broker, so it happens in the sender thread, never
    in the agent's; if the broker is down, creation fails and the emitter retries it.
    ``producer_options`` go to ``KafkaProducer`` and override the defaults above
    (e.g. ``compression_type="zstd"``, ``api_version=(4, 0)``); ``security`` (TLS, SASL)
    defaults to the ``AGENTWATCH_KAFKA_*`` environment.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        topic: str = DEFAULT_TOPIC,
        *,
        close_timeout_s: float = 5.0,
        security: KafkaSecurity | None = None,
        **producer_options: Any,
    ) -> None:
        self.topic = topic
        self._options: dict[str, Any] = {
            **_PRODUCER_DEFAULTS,
            **producer_options,
            **client_options(bootstrap, security),
        }
        # Wait a little past the producer's own delivery timeout, by which every record
        # has succeeded or failed, so nothing is re-sent while still in flight.
        self._send_timeout_s = self._options["delivery_timeout_ms"] / 1000 + 5
        self._close_timeout_s = close_timeout_s
        self._producer: Any = None

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        producer = KafkaProducer(**self._options)
        # kafka-python closes its producers at exit before our emitter's exit hook has
        # drained the buffer (atexit runs hooks newest first); the emitter closes it instead.
        cleanup = getattr(producer, "_cleanup", None)
        if cleanup is not None:
            atexit.unregister(cleanup)
        self._producer = producer
        return producer

    def send_batch(self, records: list[Record]) -> None:
        producer = self._producer if self._producer is not None else self._connect()
        outcome: list[Any] = []  # a future, or the exception send() raised
        first_error: BaseException | None = None
        for index, (key, value) in enumerate(records):
            try:
                outcome.append(producer.send(self.topic, value=value, key=key))
            except Exception as exc:
                first_error = first_error or exc
                if _is_permanent(exc):
                    outcome.append(exc)
                    continue
                # No metadata (broker unreachable): the rest of the batch would wait the same.
                outcome.extend([exc] * (len(records) - index))
                break
        try:
            producer.flush(timeout=self._send_timeout_s)
        except Exception as exc:  # timed out: unfinished records are retried
            first_error = first_error or exc

        retry: list[Record] = []
        rejected: list[Record] = []
        for record, result in zip(records, outcome, strict=True):
            error = result if isinstance(result, BaseException) else _future_error(result)
            if error is None:
                continue
            first_error = first_error or error
            (rejected if _is_permanent(error) else retry).append(record)
        if retry or rejected:
            raise SendError(
                f"{type(first_error).__name__}: {first_error}", retry=retry, rejected=rejected
            ) from first_error

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=self._close_timeout_s)


def _future_error(future: Any) -> BaseException | None:
    if not future.is_done:
        return TimeoutError("not acknowledged before the send timeout")
    exc: BaseException | None = future.exception
    return exc
