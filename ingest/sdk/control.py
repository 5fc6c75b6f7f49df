"""The SDK side of circuit breakers: follow ``agent-control`` and halt guarded calls.

The control topic is compacted and keyed per breaker, so reading it from the beginning
yields the current state of every breaker. A :class:`ControlFollower` does that in a
background thread for one agent and keeps the states in memory; its :meth:`guard`,
installed as the tracer's guard, raises :class:`AgentHalted` before an llm or tool call
that an open breaker covers. The first halt under each control message emits a
``policy_check`` event (policy ``agentwatch.breaker``, outcome ``blocked``) through the
tracer: the confirmation the control side waits for before it counts the breaker as
effective.

The follower must never hurt the agent: it never blocks a call on I/O, and when Kafka is
down the last states it knew hold. Before its first read of the topic has finished it
lets calls through; ``start(wait_s=...)`` waits (bounded) for that read. Only signed
records count (see :mod:`agentwatch.ingest.contract.control`, the wire format and the
fold): the rest are ignored, counted and logged (rate-limited); the last valid state holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self

from agentwatch.ingest.contract.control import (
    CONTROL_TOPIC,
    KEYS_ENV,
    KEYS_FILE_ENV,
    Applied,
    BreakerState,
    ControlKeyError,
    ControlMessage,
    Keyring,
    Rejected,
    Removed,
    control_key,
)
from agentwatch.ingest.sdk.control_reader import ControlReader
from agentwatch.ingest.sdk.emitter import RateLimiter
from agentwatch.kafka import KafkaSecurity, client_options

if TYPE_CHECKING:
    from agentwatch.ingest.sdk.calls import CallInfo
    from agentwatch.ingest.sdk.tracer import Tracer

log = logging.getLogger(__name__)

BREAKER_POLICY: Final = "agentwatch.breaker"
"""``policy_id`` of the events the SDK emits when a breaker halts it or admits a probe."""


class AgentHalted(RuntimeError):
    """Raised by the guard before a call that an open circuit breaker covers.

    Catching it does not let the agent act: every later guarded call under the same
    breaker raises it again until the breaker closes.
    """

    def __init__(self, applied: Applied, call: CallInfo) -> None:
        message = applied.message
        self.agent_id = message.agent_id
        self.breaker = message.key
        self.state = message.state
        self.reason = message.reason
        self.actor = message.actor
        self.control_id = message.id
        self.call = call
        super().__init__(
            f"agent {message.agent_id!r} halted before {call.kind} {call.name!r}: breaker "
            f"{message.key!r} is {message.state} ({message.reason or 'no reason given'}; "
            f"by {message.actor})"
        )


class AgentThrottled(RuntimeError):
    """Raised by the guard when a throttle's rate is used up; later calls may go through."""

    def __init__(self, agent_id: str, rate_per_s: float, call: CallInfo) -> None:
        self.agent_id = agent_id
        self.rate_per_s = rate_per_s
        self.call = call
        super().__init__(
            f"agent {agent_id!r} throttled to {rate_per_s:g} calls/s before {call.kind} "
            f"{call.name!r}"
        )


@dataclass(frozen=True)
class Decision:
    """What the guard does with one call: let it through, or raise ``error``.

    ``confirm`` is the control message whose halt or probe is reported as an event,
    and ``probe`` whether the call goes through as a half-open breaker's probe.
    """

    error: Exception | None = None
    confirm: Applied | None = None
    probe: bool = False


_ALLOW: Final = Decision()


class _TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ControlState:
    """The control messages in force for one agent, and the guard's decisions over them.

    Thread-safe and free of I/O, so the guard's cost is a lock and a few dict lookups.
    Each breaker message confirms once (its first halt); each half-open message admits
    one probe call per process, the control side judging the probe by its event.
    """

    def __init__(self, agent_id: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.agent_id = agent_id
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._current: dict[str, Applied] = {}
        self._loaded = False
        self._confirmed: set[str] = set()  # message ids already confirmed
        self._probed: set[str] = set()  # half-open message ids whose probe went
        self._bucket: tuple[str, _TokenBucket] | None = None
        self._version = 0  # bumped on every change, so waiters know to look again

    # -- fed by the follower ------------------------------------------------------------

    def load(self, snapshot: Mapping[str, Applied]) -> list[Applied]:
        """Replace everything with a full read of the topic; returns what changed."""
        mine = {k: a for k, a in snapshot.items() if a.message.agent_id == self.agent_id}
        with self._changed:
            changed = []
            for key, applied in mine.items():
                before = self._current.get(key)
                if before is None or before.message.id != applied.message.id:
                    changed.append(applied)
            self._current = mine
            self._loaded = True
            self._version += 1
            self._changed.notify_all()
        return changed

    def apply(self, applied: Applied) -> bool:
        """Take one message read after the initial load; False if not for this agent."""
        if applied.message.agent_id != self.agent_id:
            return False
        with self._changed:
            self._current[applied.message.key] = applied
            self._version += 1
            self._changed.notify_all()
        return True

    def remove(self, key: str) -> None:
        """A tombstone (null value) deletes a key: the breaker is gone, i.e. closed."""
        with self._changed:
            if self._current.pop(key, None) is not None:
                self._version += 1
                self._changed.notify_all()

    # -- read by the agent and by tests -------------------------------------------------

    @property
    def loaded(self) -> bool:
        with self._lock:
            return self._loaded

    def current(self) -> dict[str, Applied]:
        with self._lock:
            return dict(self._current)

    def breaker_state(self, tool: str | None = None) -> BreakerState:
        applied = self.current().get(control_key(self.agent_id, tool))
        return (
            "closed" if applied is None or applied.message.state is None else applied.message.state
        )

    def wait_for(self, predicate: Callable[[ControlState], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds after a change; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = self._version
            if predicate(self):  # outside the lock: it reads through the public API
                return True
            with self._changed:
                while self._version == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)

    def decide(self, call: CallInfo) -> Decision:
        """Halt, throttle or admit one call."""
        with self._lock:
            covering = [
                a
                for key in (
                    control_key(self.agent_id),
                    control_key(self.agent_id, call.name),
                )
                if (a := self._current.get(key)) is not None
            ]
            for applied in covering:
                if applied.message.state == "open":
                    return self._halt(applied, call)
            for applied in covering:
                message = applied.message
                if message.state == "half_open":
                    if message.id in self._probed:
                        return self._halt(applied, call)
                    self._probed.add(message.id)
                    return Decision(confirm=applied, probe=True)
            throttle = self._current.get(control_key(self.agent_id, kind="throttle"))
            rate = throttle.message.rate_per_s if throttle is not None else None
            if throttle is None or rate is None or rate <= 0:
                self._bucket = None
                return _ALLOW
            if self._bucket is None or self._bucket[0] != throttle.message.id:
                self._bucket = (throttle.message.id, _TokenBucket(rate, self._monotonic()))
            if self._bucket[1].take(self._monotonic()):
                return _ALLOW
            return Decision(error=AgentThrottled(self.agent_id, rate, call))

    def _halt(self, applied: Applied, call: CallInfo) -> Decision:
        # Called with the lock held.
        first = applied.message.id not in self._confirmed
        self._confirmed.add(applied.message.id)
        return Decision(error=AgentHalted(applied, call), confirm=applied if first else None)


RollbackCallback = Callable[[ControlMessage], None]


class ControlFollower:
    """Follows the control topic for one agent and guards its tracer's calls.

    Usage::

        follower = ControlFollower(bootstrap, "it-support", on_rollback=switch_versions)
        tracer = Tracer.to_kafka(bootstrap, agent_id="it-support")
        follower.attach(tracer).start(wait_s=2.0)

    ``keyring`` verifies the records (by default the keys named by the environment);
    without keys the follower refuses to start with :class:`ControlKeyError`, unless
    ``insecure_unsigned=True`` says to obey records nobody signed. ``on_rollback`` runs
    in the follower's thread, once per rollback message, with the message whose
    ``versions`` the agent should pin; its exceptions are logged. ``consumer_options``
    go to kafka-python's ``KafkaConsumer``.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        agent_id: str,
        *,
        topic: str = CONTROL_TOPIC,
        keyring: Keyring | None = None,
        insecure_unsigned: bool = False,
        on_rollback: RollbackCallback | None = None,
        poll_timeout_s: float = 0.5,
        retry_backoff_s: float = 0.2,
        max_retry_backoff_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        security: KafkaSecurity | None = None,
        **consumer_options: Any,
    ) -> None:
        control_key(agent_id)  # refuses ids that cannot be keys
        keyring = keyring or Keyring.from_env()
        if keyring is None and not insecure_unsigned:
            raise ControlKeyError(
                f"agentwatch control: no control keys for agent {agent_id!r}: set "
                f"{KEYS_FILE_ENV} (a file of 'key-id:secret' lines) or {KEYS_ENV}, or pass "
                "insecure_unsigned=True to obey unsigned control records"
            )
        if keyring is None:
            log.warning(
                "agentwatch control: obeying UNSIGNED control records (insecure_unsigned)",
                extra={"agent_id": agent_id},
            )
        self.bootstrap = bootstrap
        self.agent_id = agent_id
        self.topic = topic
        self.keyring = keyring
        self.state = ControlState(agent_id, monotonic)
        self.on_rollback = on_rollback
        self._tracer: Tracer | None = None
        self._poll_ms = int(poll_timeout_s * 1000)
        self._backoff = retry_backoff_s
        self._max_backoff = max_retry_backoff_s
        self._options: dict[str, Any] = {
            "client_id": f"agentwatch-control-{agent_id}",
            "request_timeout_ms": 10_000,
            "bootstrap_timeout_ms": 5_000,
            "reconnect_backoff_max_ms": 5_000,
            **consumer_options,
            **client_options(bootstrap, security),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._errors = 0
        self._rejected = 0
        self._connected = False
        self._error_log = RateLimiter(60.0)
        self._rejected_log = RateLimiter(60.0)
        self._rolled_back: set[str] = set()

    # -- wiring -------------------------------------------------------------------------

    def attach(self, tracer: Tracer) -> Self:
        """Install the guard on ``tracer``; confirmations are emitted through it."""
        self._tracer = tracer
        tracer.guard = self.guard
        return self

    def start(self, wait_s: float = 0.0) -> Self:
        """Start following; wait up to ``wait_s`` for the first full read of the topic."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"agentwatch-control-{self.agent_id}", daemon=True
            )
            self._thread.start()
        if wait_s > 0:
            self.state.wait_for(lambda s: s.loaded, wait_s)
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Stop following; the daemon thread may finish a connection attempt on its own."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether the last attempt to read the topic is going well."""
        with self._lock:
            return self._connected

    def stats(self) -> dict[str, int | bool]:
        """``rejected`` counts the records refused: unsigned, badly signed or unreadable."""
        with self._lock:
            return {
                "connected": self._connected,
                "errors": self._errors,
                "rejected": self._rejected,
            }

    # -- the guard ----------------------------------------------------------------------

    def guard(self, call: CallInfo) -> None:
        """The tracer's guard: raises :class:`AgentHalted` (or AgentThrottled) or returns.

        Only those two exceptions ever leave it; a failure of its own lets the call go.
        """
        try:
            decision = self.state.decide(call)
        except Exception:
            self._internal_error("agentwatch control: the guard failed; letting the call go")
            return
        if decision.confirm is not None:
            self._report(call, decision)
        if decision.error is not None:
            raise decision.error

    def _report(self, call: CallInfo, decision: Decision) -> None:
        """Emit the halt confirmation (or probe marker) as a ``policy_check`` event."""
        tracer = self._tracer
        applied = decision.confirm
        if tracer is None or applied is None:
            return
        message = applied.message
        try:
            tracer.session(call.session_id).policy_check(
                BREAKER_POLICY,
                "pass" if decision.probe else "blocked",
                "high",
                attributes={
                    "breaker_key": message.key,
                    "breaker_state": message.state,
                    "control_id": message.id,
                    "control_partition": applied.partition,
                    "control_offset": applied.offset,
                    "call_kind": call.kind,
                    "call_name": call.name,
                    "probe": decision.probe,
                },
            )
        except Exception:
            self._internal_error("agentwatch control: could not emit the confirmation")

    # -- the follower thread ------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff
        while not self._stop.is_set():
            reader = ControlReader(self.topic, self.keyring, self._options, self._rejected_record)
            try:
                self._follow(reader)
            except Exception as exc:
                with self._lock:
                    self._errors += 1
                    self._connected = False
                if self._error_log.ready():
                    log.warning(
                        "agentwatch control: cannot follow %s (%s: %s); last known states hold",
                        self.topic,
                        type(exc).__name__,
                        exc,
                        extra={"agent_id": self.agent_id},
                    )
            else:
                backoff = self._backoff
            finally:
                try:
                    reader.close()
                except Exception:
                    log.debug("closing the control consumer failed", exc_info=True)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff)

    def _follow(self, reader: ControlReader) -> None:
        """Read the whole topic, swap it in at once, then apply each new record."""
        snapshot = reader.catch_up(stop=self._stop.is_set)
        if snapshot is None:
            return
        for applied in self.state.load(snapshot):
            self._on_applied(applied)
        with self._lock:
            self._connected = True
        while not self._stop.is_set():
            for folded in reader.poll(self._poll_ms):
                if isinstance(folded, Removed):
                    self.state.remove(folded.key)
                elif self.state.apply(folded):
                    self._on_applied(folded)

    def _rejected_record(self, rejected: Rejected) -> None:
        with self._lock:
            self._rejected += 1
            count = self._rejected
        if self._rejected_log.ready():
            text = "agentwatch control: ignored a control record (%s); %d so far; last states hold"
            log.warning(text, rejected, count, extra={"agent_id": self.agent_id})

    def _on_applied(self, applied: Applied) -> None:
        message = applied.message
        if (
            message.type != "rollback"
            or self.on_rollback is None
            or message.id in self._rolled_back
        ):
            return
        self._rolled_back.add(message.id)
        try:
            self.on_rollback(message)
        except Exception:
            self._internal_error("agentwatch control: the rollback callback failed")

    def _internal_error(self, text: str) -> None:
        with self._lock:
            self._errors += 1
        if self._error_log.ready():
            log.warning(text, exc_info=True, extra={"agent_id": self.agent_id})


__all__ = [
    "BREAKER_POLICY",
    "AgentHalted",
    "AgentThrottled",
    "ControlFollower",
    "ControlState",
    "Decision",
]
