"""The control side of circuit breakers: the compacted ``agent-control`` topic.

Each breaker (and each rollback or throttle directive) has one record key, so after
compaction the topic holds exactly the current state of everything, and reading it from
the beginning is how any process (the CLI, a runbook, a restarted evaluator, an agent's
SDK) learns it. There is no other store of breaker state to get out of step with it.

The wire format (key, JSON value, signature) is defined in
``agentwatch.ingest.contract.control``: every record published here is signed with the
keyring's signing key, and reading verifies like the SDK does (with the same reader),
so a forged record neither shows in ``breaker status`` nor enters the supervisor's
book. The transitions come from :mod:`agentwatch.alerts.response.breaker`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.response.breaker import (
    DEFAULT_COOLDOWN_S,
    Breaker,
    BreakerBook,
    BreakerKey,
    Change,
    Clock,
)
from agentwatch.clock import utc_now
from agentwatch.ingest.contract.control import (
    CONTROL_TOPIC,
    Applied,
    ControlMessage,
    Keyring,
    Rejected,
    control_key,
    encode_message,
    new_message_id,
)
from agentwatch.ingest.sdk.control_reader import ControlReader
from agentwatch.ingest.sdk.emitter import RateLimiter
from agentwatch.kafka import client_options
from agentwatch.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)

# One partition: control traffic is tiny, and a single total order makes the audit and
# the "read everything up to the end" catch-up simple.
CONTROL_PARTITIONS: Final = 1
CONTROL_CONFIG: Final[Mapping[str, str]] = {
    "cleanup.policy": "compact",
    # Let the cleaner compact soon, so the topic stays small for readers that replay it.
    "segment.ms": str(6 * 3600 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}


class ControlError(RuntimeError):
    """The control topic could not be read or written; the message says why."""


def control_topic_spec(name: str = CONTROL_TOPIC) -> TopicSpec:
    return TopicSpec(name, CONTROL_PARTITIONS, dict(CONTROL_CONFIG))


def ensure_control_topic(bootstrap: str, topic: str = CONTROL_TOPIC, timeout: float = 30.0) -> None:
    ensure_topics(bootstrap, [control_topic_spec(topic)], timeout)


def retired_agents(catalog: Catalog) -> list[str]:
    """The agents the catalog lists as retired: their breakers are held open."""
    return sorted(a.agent_id for a in catalog.with_status("retired"))


def breaker_from(applied: Applied) -> Breaker:
    """A breaker as a control message describes it."""
    m = applied.message
    state = m.state or "closed"
    return Breaker(
        key=BreakerKey(m.agent_id, m.tool),
        state=state,
        since=m.at,
        opened_at=m.at if state == "open" else None,
        cooldown_s=m.cooldown_s if m.cooldown_s is not None else DEFAULT_COOLDOWN_S,
        reason=m.reason,
        actor=m.actor,
    )


def breaker_message(breaker: Breaker, *, alert: str | None = None) -> ControlMessage:
    """The control message announcing a breaker's new state."""
    return ControlMessage(
        id=new_message_id(),
        type="breaker",
        agent_id=breaker.key.agent_id,
        tool=breaker.key.tool,
        state=breaker.state,
        at=breaker.since or utc_now(),
        actor=breaker.actor,
        reason=breaker.reason,
        cooldown_s=breaker.cooldown_s,
        alert=alert,
    )


@dataclass(frozen=True)
class Published:
    """A control message and where it landed on the topic."""

    message: ControlMessage
    partition: int
    offset: int


@dataclass(frozen=True)
class Transition:
    """A breaker change and the message that announced it (None when nothing changed)."""

    change: Change
    published: Published | None

    @property
    def breaker(self) -> Breaker:
        return self.change.after


class ControlTopic:
    """Writes signed control messages and reads the topic's current, verified state.

    Writes are synchronous (acks=all) and raise :class:`ControlError`: the control side
    must know whether a breaker really went out. Reads keep one consumer and its
    positions, so refreshing after the first full read costs only the new records.
    Not thread-safe; one per thread.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        topic: str = CONTROL_TOPIC,
        *,
        keyring: Keyring,
        timeout_s: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.keyring = keyring
        self.timeout_s = timeout_s
        self.rejected = 0
        self._rejected_log = RateLimiter(60.0)
        self._producer: Any = None
        ms = int(timeout_s * 1000)
        self._reader = ControlReader(
            topic,
            keyring,
            {
                **client_options(bootstrap),
                "client_id": "agentwatch-control-reader",
                "request_timeout_ms": ms,
                "bootstrap_timeout_ms": ms,
            },
            self._on_rejected,
        )

    def publish(self, message: ControlMessage) -> Published:
        from kafka.errors import KafkaError

        control_key(message.agent_id, message.tool)  # refuses keys the SDK could not follow
        key, value = message.key.encode(), encode_message(message)
        try:
            if self._producer is None:
                from kafka import KafkaProducer

                ms = int(self.timeout_s * 1000)
                self._producer = KafkaProducer(
                    **client_options(self.bootstrap),
                    acks="all",
                    client_id="agentwatch-control",
                    bootstrap_timeout_ms=ms,
                    max_block_ms=ms,
                    request_timeout_ms=ms,
                    delivery_timeout_ms=ms + 1000,
                )
            future = self._producer.send(
                self.topic, key=key, value=value, headers=self.keyring.sign(key, value)
            )
            meta = future.get(timeout=self.timeout_s + 2)
        except (KafkaError, OSError) as exc:
            raise ControlError(
                f"could not publish to {self.topic} at {self.bootstrap}: {exc!r}"
            ) from exc
        published = Published(message, meta.partition, meta.offset)
        self._reader.fold.current[message.key] = Applied(message, meta.partition, meta.offset)
        log.info(
            "control message published",
            extra={
                "key": message.key,
                "type": message.type,
                "state": message.state,
                "actor": message.actor,
                "control_id": message.id,
                "key_id": self.keyring.signing_id,
                "offset": meta.offset,
            },
        )
        return published

    def read(self) -> dict[str, Applied]:
        """The current message per key: catch up with the topic up to its end now."""
        from kafka.errors import KafkaError

        try:
            current = self._reader.catch_up(timeout_s=self.timeout_s)
        except LookupError:
            self._reader.close()
            raise ControlError(
                f"topic {self.topic!r} does not exist at {self.bootstrap}: create it "
                "with `agentwatch breaker open` or ensure_control_topic()"
            ) from None
        except TimeoutError as exc:
            self._reader.close()
            raise ControlError(str(exc)) from None
        except KafkaError as exc:
            self._reader.close()
            raise ControlError(f"could not read {self.topic} at {self.bootstrap}: {exc!r}") from exc
        assert current is not None  # only a stop callback ends a catch-up early
        return current

    def _on_rejected(self, rejected: Rejected) -> None:
        self.rejected += 1
        if self._rejected_log.ready():
            log.warning(
                "ignored a control record",
                extra={"record": rejected.where, "why": rejected.reason, "so_far": self.rejected},
            )

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
        self._reader.close()


def read_control(
    bootstrap: str | Sequence[str],
    topic: str = CONTROL_TOPIC,
    *,
    keyring: Keyring,
    timeout_s: float = 10.0,
) -> dict[str, Applied]:
    """The current control message per key, read from the beginning of the topic."""
    reader = ControlTopic(bootstrap, topic, keyring=keyring, timeout_s=timeout_s)
    try:
        return reader.read()
    finally:
        reader.close()


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker as ``breaker status`` shows it: its state and the message that set it."""

    breaker: Breaker
    applied: Applied | None


class BreakerControl:
    """Open, close and advance breakers, publishing every transition on the control topic.

    The state machine's book is rebuilt from the topic before each operation (cheaply:
    see :class:`ControlTopic`), so changes made elsewhere, e.g. by a person with the CLI,
    are never overwritten with stale state. ``retired`` names the agents the catalog
    lists as retired: their breakers are held open, and every write (open, close, tick,
    probe) first publishes the holds the topic lacks, so the SDKs see them.
    """

    def __init__(
        self,
        topic: ControlTopic,
        *,
        clock: Clock | None = None,
        default_cooldown_s: float = DEFAULT_COOLDOWN_S,
        retired: Iterable[str] = (),
    ) -> None:
        self.topic = topic
        self.clock: Clock = clock or utc_now
        self.default_cooldown_s = default_cooldown_s
        self.retired = frozenset(retired)
        self._applied: dict[str, Applied] = {}

    @classmethod
    def connect(
        cls,
        bootstrap: str,
        topic: str = CONTROL_TOPIC,
        *,
        keyring: Keyring,
        create: bool = True,
        timeout_s: float = 10.0,
        **options: Any,
    ) -> BreakerControl:
        """A control on ``bootstrap`` signing with ``keyring``, creating the topic if asked."""
        if create:
            ensure_control_topic(bootstrap, topic, timeout_s)
        return cls(ControlTopic(bootstrap, topic, keyring=keyring, timeout_s=timeout_s), **options)

    def disconnect(self) -> None:
        """Close the Kafka clients (``close`` closes a breaker)."""
        self.topic.close()

    def book(self) -> BreakerBook:
        """The state machine over the topic's current breakers."""
        self._applied = self.topic.read()
        breakers = [breaker_from(a) for a in self._applied.values() if a.message.type == "breaker"]
        return BreakerBook(
            self.clock,
            default_cooldown_s=self.default_cooldown_s,
            breakers=breakers,
            retired=(),  # applied below, so its transitions are published
        )

    def _publish(self, change: Change, alert: str | None) -> Transition:
        if not change.changed:
            return Transition(change, None)
        return Transition(change, self.topic.publish(breaker_message(change.after, alert=alert)))

    def _hold(self, book: BreakerBook) -> list[Transition]:
        return [self._publish(c, None) for c in book.set_retired(self.retired)]

    def status(self) -> list[BreakerStatus]:
        """Every breaker, retired agents shown held open; reading publishes nothing."""
        book = self.book()
        book.set_retired(self.retired)
        return [BreakerStatus(b, self._applied.get(str(b.key))) for b in book]

    def open(
        self,
        agent_id: str,
        tool: str | None = None,
        *,
        reason: str,
        actor: str,
        cooldown_s: float | None = None,
        alert: str | None = None,
    ) -> Transition:
        """Open a breaker; an already open one is left as it is (``published`` is None)."""
        book = self.book()
        self._hold(book)
        change = book.open(
            BreakerKey(agent_id, tool), reason=reason, actor=actor, cooldown_s=cooldown_s
        )
        return self._publish(change, alert)

    def close(
        self, agent_id: str, tool: str | None = None, *, reason: str, actor: str
    ) -> Transition:
        """Close a breaker by hand; raises BreakerError for a retired agent."""
        book = self.book()
        self._hold(book)
        change = book.close(BreakerKey(agent_id, tool), reason=reason, actor=actor)
        return self._publish(change, None)

    def tick(self) -> list[Transition]:
        """Hold retired agents open, and half-open the breakers whose cooldown is over."""
        book = self.book()
        held = self._hold(book)
        return held + [self._publish(c, None) for c in book.tick()]

    def probe_result(
        self, key: BreakerKey, *, ok: bool, actor: str = "system:probe", detail: str = ""
    ) -> Transition:
        """Settle a half-open breaker: closed after a good probe, open again after a bad one."""
        book = self.book()
        self._hold(book)
        change = book.probe_result(key, ok=ok, actor=actor, detail=detail)
        return self._publish(change, None)

    def rollback(
        self,
        agent_id: str,
        versions: Mapping[str, str],
        *,
        reason: str,
        actor: str,
        alert: str | None = None,
    ) -> Published:
        """Ask the agent to go back to ``versions`` (e.g. its pinned prompt and model)."""
        return self.topic.publish(
            ControlMessage(
                id=new_message_id(),
                type="rollback",
                agent_id=agent_id,
                at=self.clock(),
                actor=actor,
                reason=reason,
                versions=dict(versions),
                alert=alert,
            )
        )

    def throttle(
        self,
        agent_id: str,
        rate_per_s: float | None,
        *,
        reason: str,
        actor: str,
        alert: str | None = None,
    ) -> Published:
        """Limit the agent's guarded calls to ``rate_per_s``; None lifts the limit."""
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"a throttle rate must be > 0 calls/s, got {rate_per_s}")
        return self.topic.publish(
            ControlMessage(
                id=new_message_id(),
                type="throttle",
                agent_id=agent_id,
                at=self.clock(),
                actor=actor,
                reason=reason,
                rate_per_s=rate_per_s,
                alert=alert,
            )
        )


__all__ = [
    "CONTROL_TOPIC",
    "BreakerControl",
    "BreakerStatus",
    "ControlError",
    "ControlTopic",
    "Published",
    "Transition",
    "breaker_from",
    "breaker_message",
    "control_topic_spec",
    "ensure_control_topic",
    "read_control",
    "retired_agents",
]
