"""What the agents' events say about breakers: halt confirmations, probes, call outcomes.

The SDK confirms a halt with a ``policy_check`` event (policy ``agentwatch.breaker``,
outcome ``blocked``, ``attributes.control_id`` = the message id) and marks the call it
lets through a half-open breaker as a probe (outcome ``pass``, ``attributes.probe``
true); the llm and tool calls after it say how the probe went. Observations come from
the events topic directly (fast, no processor needed) or from the ``events`` view of
the lake, opened read-only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from agentwatch.ingest.contract.events import AnyEvent, Event, LlmCall, PolicyCheck, ToolCall
from agentwatch.ingest.contract.wire import DEFAULT_TOPIC
from agentwatch.ingest.sdk.control import BREAKER_POLICY
from agentwatch.kafka import client_options
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.definitions import IS_BLOCKED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confirmation:
    """The SDK's report that it halted a call (or let a probe through) under a message."""

    control_id: str
    breaker_key: str
    agent_id: str
    session_id: str
    ts: dt.datetime
    probe: bool
    call_kind: str | None
    call_name: str | None


@dataclass(frozen=True)
class CallOutcome:
    """An llm or tool call the agent made, and whether it went well."""

    agent_id: str
    session_id: str
    kind: str
    name: str
    ts: dt.datetime
    ok: bool


Observation = Confirmation | CallOutcome


def _confirmation(
    agent_id: str, session_id: str, ts: dt.datetime, outcome: str, attributes: Mapping[str, Any]
) -> Confirmation | None:
    control_id = attributes.get("control_id")
    if not isinstance(control_id, str):
        return None
    probe = bool(attributes.get("probe")) and outcome == "pass"
    if not IS_BLOCKED.holds({"outcome": outcome}) and not probe:
        return None
    kind, name = attributes.get("call_kind"), attributes.get("call_name")
    return Confirmation(
        control_id=control_id,
        breaker_key=str(attributes.get("breaker_key", agent_id)),
        agent_id=agent_id,
        session_id=session_id,
        ts=ts,
        probe=probe,
        call_kind=kind if isinstance(kind, str) else None,
        call_name=name if isinstance(name, str) else None,
    )


def observe_event(event: Event) -> Observation | None:
    """What a decoded contract event tells about breakers, if anything."""
    if isinstance(event, PolicyCheck) and event.policy_id == BREAKER_POLICY:
        return _confirmation(
            event.agent_id, event.session_id, event.ts, event.outcome, event.attributes or {}
        )
    if isinstance(event, ToolCall | LlmCall):
        name = event.tool_name if isinstance(event, ToolCall) else event.model
        kind = "tool_call" if isinstance(event, ToolCall) else "llm_call"
        ok = event.status != "error" and event.error_type is None
        return CallOutcome(event.agent_id, event.session_id, kind, name, event.ts, ok)
    return None


def observe_row(row: Mapping[str, Any]) -> Observation | None:
    """The same from a row of the ``events`` view (attributes as JSON text)."""
    kind = row.get("kind")
    ts = row["ts"]
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    if kind == "policy_check" and row.get("policy_id") == BREAKER_POLICY:
        try:
            attributes = json.loads(row.get("attributes") or "{}")
        except ValueError:
            return None
        if not isinstance(attributes, dict):
            return None
        return _confirmation(
            row["agent_id"], row["session_id"], ts, str(row.get("outcome")), attributes
        )
    if kind in ("tool_call", "llm_call"):
        name = row.get("tool_name") if kind == "tool_call" else row.get("model")
        ok = row.get("status") != "error" and row.get("error_type") is None
        return CallOutcome(row["agent_id"], row["session_id"], kind, str(name), ts, ok)
    return None


class ObservationSource(Protocol):
    def poll(self, since: dt.datetime) -> list[Observation]:
        """Observations at or after ``since`` not returned before, in event-time order."""
        ...


_EVENT_DECODER: Final = msgspec.json.Decoder(AnyEvent)


class EventsTopicSource:
    """Reads observations straight from the events topic (no processor needed).

    The first poll starts at the offsets of ``since``; later polls continue from there.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        topic: str = DEFAULT_TOPIC,
        *,
        agents: Iterable[str] | None = None,
        poll_timeout_s: float = 0.5,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.agents = None if agents is None else frozenset(agents)
        self._poll_ms = int(poll_timeout_s * 1000)
        self._consumer: Any = None

    def _start(self, since: dt.datetime) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            **client_options(self.bootstrap),
            group_id=None,
            enable_auto_commit=False,
            client_id="agentwatch-confirm",
        )
        partitions = consumer.partitions_for_topic(self.topic) or set()
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        stamp = int(since.timestamp() * 1000)
        offsets = consumer.offsets_for_times(dict.fromkeys(assigned, stamp)) if assigned else {}
        ends = consumer.end_offsets(assigned) if assigned else {}
        for tp in assigned:
            found = offsets.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        self._consumer = consumer
        return consumer

    def poll(self, since: dt.datetime) -> list[Observation]:
        consumer = self._consumer or self._start(since)
        found: list[Observation] = []
        for records in consumer.poll(timeout_ms=self._poll_ms).values():
            for record in records:
                try:
                    event = _EVENT_DECODER.decode(record.value)
                except (msgspec.DecodeError, TypeError):
                    continue
                if self.agents is not None and event.agent_id not in self.agents:
                    continue
                observation = observe_event(event)
                if observation is not None and observation.ts >= since:
                    found.append(observation)
        return sorted(found, key=lambda o: o.ts)

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


class CatalogSource:
    """Reads observations from the ``events`` view of the lake, attached read-only."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._seen: set[tuple[str, str]] = set()  # (event_id, kind) already returned
        self._floor: dt.datetime | None = None

    def poll(self, since: dt.datetime) -> list[Observation]:
        import duckdb

        if not self.db.exists():
            return []
        start = since if self._floor is None else max(since, self._floor)
        con = connect_lake(self.db)
        try:
            cursor = con.execute(
                "SELECT event_id, ts, kind, agent_id, session_id, policy_id, outcome, status, "
                "error_type, tool_name, model, attributes FROM events WHERE ts >= ? AND ("
                "kind IN ('tool_call', 'llm_call') OR (kind = 'policy_check' AND policy_id = ?)"
                ") ORDER BY ts",
                [start, BREAKER_POLICY],
            )
            columns = [d[0] for d in cursor.description or []]
            rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
        except duckdb.Error as exc:
            log.warning("cannot read confirmations from the catalog", extra={"error": str(exc)})
            return []
        finally:
            con.close()
        found: list[Observation] = []
        for row in rows:
            ident = (str(row["event_id"]), str(row["kind"]))
            if ident in self._seen:
                continue
            self._seen.add(ident)
            observation = observe_row(row)
            if observation is not None:
                found.append(observation)
        if found:
            # Re-read a little overlap next time: rows of the same millisecond may land later.
            self._floor = found[-1].ts - dt.timedelta(seconds=60)
        return found
