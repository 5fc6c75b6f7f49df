"""Whether a breaker really stopped its agent: confirmations, probes and escalation.

Publishing an open breaker proves only that the message is on the topic. The SDK
confirms by emitting a ``policy_check`` event (policy ``agentwatch.breaker``, outcome
``blocked``, ``attributes.control_id`` = the message id) the first time it halts a call
under that message. Until that event is seen the breaker is ``pending``; past the
timeout it is ``unconfirmed`` and escalated as a critical alert, because an agent that
neither confirms nor stops (old SDK, no guard installed, partitioned from Kafka) is
exactly the case a person must look at. A confirmation arriving later resolves it.

Half-open breakers are settled from the same events: the SDK marks the call it lets
through as a probe (outcome ``pass``, ``attributes.probe`` true), and the next call
event of that kind in that session says whether the probe went well.

Observations come from the events topic directly (fast, no processor needed) or from
the ``events`` view of the DuckDB catalog, opened read-only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import msgspec

from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.breaker import BreakerKey
from agentwatch.alerts.response.control import BreakerControl, Transition
from agentwatch.alerts.response.runbooks import action_row, record_actions
from agentwatch.clock import Clock
from agentwatch.ingest.contract.control import ControlMessage
from agentwatch.ingest.contract.events import (
    DEFAULT_TOPIC,
    AnyEvent,
    Event,
    LlmCall,
    PolicyCheck,
    ToolCall,
)
from agentwatch.ingest.sdk.control import BREAKER_POLICY
from agentwatch.kafka import client_options
from agentwatch.processors.store.lake import LakeStore
from agentwatch.processors.store.lake import connect as connect_lake

log = logging.getLogger(__name__)

UNCONFIRMED_RULE: Final = "BreakerUnconfirmed"
DEFAULT_CONFIRM_TIMEOUT_S: Final = 30.0
CONFIRM_ACTOR: Final = "system:confirm"

ConfirmStatus = Literal["pending", "confirmed", "unconfirmed", "superseded"]


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
    if outcome != "blocked" and not probe:
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
    """Reads observations from the ``events`` view of the DuckDB catalog, read-only."""

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


@dataclass
class Expectation:
    """One breaker message waiting for its confirmation (open) or its probe (half-open)."""

    message: ControlMessage
    published_at: dt.datetime
    deadline: dt.datetime
    status: ConfirmStatus = "pending"
    confirmed_at: dt.datetime | None = None
    session_id: str | None = None
    flagged_at: dt.datetime | None = None


@dataclass(frozen=True)
class ProbeVerdict:
    """How a half-open breaker's probe went."""

    key: BreakerKey
    control_id: str
    ok: bool
    session_id: str
    ts: dt.datetime


@dataclass
class _Probe:
    message: ControlMessage
    marker: Confirmation | None = None


@dataclass
class ConfirmationTracker:
    """Pure bookkeeping of confirmations and probes, with an injected clock.

    Feed it the breaker messages (``expect``) and the observations (``observe``);
    ``check`` returns alerts for breakers newly unconfirmed (firing) and for flagged ones
    confirmed since (resolved). ``actions`` drains the audit rows it produced.
    """

    clock: Clock
    timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S
    _seen: set[str] = field(default_factory=set)  # every control id given to expect()
    _expected: dict[str, Expectation] = field(default_factory=dict)  # by control id
    _latest: dict[str, str] = field(default_factory=dict)  # breaker key -> control id
    _probes: dict[str, _Probe] = field(default_factory=dict)  # control id -> probe
    _early: dict[str, Confirmation] = field(default_factory=dict)  # seen before expected
    _resolved: list[Alert] = field(default_factory=list)
    _actions: list[dict[str, Any]] = field(default_factory=list)

    def known(self, control_id: str) -> bool:
        return control_id in self._seen

    def expect(self, message: ControlMessage, published_at: dt.datetime | None = None) -> None:
        """Start waiting on a breaker message; a newer one for the same key supersedes."""
        if message.type != "breaker" or self.known(message.id):
            return
        self._seen.add(message.id)
        previous = self._latest.get(message.key)
        if previous is not None and previous in self._expected:
            older = self._expected[previous]
            if older.status == "pending":
                older.status = "superseded"
        self._latest[message.key] = message.id
        if message.state == "half_open":
            self._probes[message.id] = _Probe(message)
        if message.state != "open":
            return
        at = published_at or message.at
        self._expected[message.id] = Expectation(
            message, at, at + dt.timedelta(seconds=self.timeout_s)
        )
        early = self._early.pop(message.id, None)
        if early is not None:
            self._confirm(early)

    def status(self, control_id: str) -> ConfirmStatus | None:
        found = self._expected.get(control_id)
        return None if found is None else found.status

    def expectation(self, control_id: str) -> Expectation | None:
        return self._expected.get(control_id)

    def observe(self, observations: Iterable[Observation]) -> list[ProbeVerdict]:
        """Take observations in event-time order; returns the probes they settled."""
        verdicts: list[ProbeVerdict] = []
        for obs in sorted(observations, key=lambda o: o.ts):
            if isinstance(obs, Confirmation):
                if obs.probe:
                    probe = self._probes.get(obs.control_id)
                    if probe is not None and probe.marker is None:
                        probe.marker = obs
                elif obs.control_id in self._expected:
                    self._confirm(obs)
                elif obs.control_id not in self._probes:
                    self._early[obs.control_id] = obs  # its message may not be known yet
                continue
            for control_id, probe in list(self._probes.items()):
                marker = probe.marker
                if (
                    marker is not None
                    and marker.session_id == obs.session_id
                    and marker.call_kind == obs.kind
                    and obs.ts >= marker.ts
                ):
                    del self._probes[control_id]
                    m = probe.message
                    verdicts.append(
                        ProbeVerdict(
                            BreakerKey(m.agent_id, m.tool), m.id, obs.ok, obs.session_id, obs.ts
                        )
                    )
                    self._actions.append(
                        self._row(
                            m,
                            "probe",
                            "ok" if obs.ok else "failed",
                            {"control_id": m.id, "session_id": obs.session_id, "call": obs.name},
                        )
                    )
        return verdicts

    def _confirm(self, obs: Confirmation) -> None:
        found = self._expected[obs.control_id]
        if found.status in ("confirmed",):
            return
        was_flagged = found.status == "unconfirmed"
        found.status = "confirmed"
        found.confirmed_at = obs.ts
        found.session_id = obs.session_id
        waited = (obs.ts - found.published_at).total_seconds()
        self._actions.append(
            self._row(
                found.message,
                "confirm_breaker",
                "ok",
                {
                    "control_id": obs.control_id,
                    "status": "confirmed",
                    "session_id": obs.session_id,
                    "halted": f"{obs.call_kind}:{obs.call_name}",
                    "seconds_to_confirm": round(max(0.0, waited), 3),
                },
            )
        )
        if was_flagged:
            self._resolved.append(self._alert(found, "resolved", obs.ts))

    def check(self) -> list[Alert]:
        """Flag breakers past their timeout; returns the alerts to send (once each)."""
        now = self.clock()
        alerts, self._resolved = self._resolved, []
        for found in self._expected.values():
            if found.status == "pending" and now >= found.deadline:
                found.status = "unconfirmed"
                found.flagged_at = now
                alerts.append(self._alert(found, "firing", None))
                self._actions.append(
                    self._row(
                        found.message,
                        "confirm_breaker",
                        "failed",
                        {
                            "control_id": found.message.id,
                            "status": "unconfirmed",
                            "waited_s": round((now - found.published_at).total_seconds(), 3),
                        },
                    )
                )
        return alerts

    def actions(self) -> list[dict[str, Any]]:
        rows, self._actions = self._actions, []
        return rows

    def _alert(
        self, found: Expectation, state: Literal["firing", "resolved"], ended: dt.datetime | None
    ) -> Alert:
        m = found.message
        labels = {"alertname": UNCONFIRMED_RULE, "severity": "critical", "agent_id": m.agent_id}
        labels["breaker"] = m.key
        return Alert(
            rule=UNCONFIRMED_RULE,
            labels=labels,
            annotations={
                "summary": f"breaker {m.key} opened but agent {m.agent_id} has not confirmed",
                "description": (
                    f"Breaker {m.key} was opened by {m.actor} at {found.published_at:%H:%M:%S} "
                    f"UTC ({m.reason or 'no reason given'}); no halt confirmation from the "
                    f"agent within {self.timeout_s:g} s. The agent may run without the "
                    "control guard, or be cut off from Kafka: stop it by other means."
                ),
            },
            state=state,
            starts_at=found.published_at,
            ends_at=ended,
            value=(self.clock() - found.published_at).total_seconds(),
        )

    def _row(
        self, message: ControlMessage, action: str, result: str, detail: Mapping[str, Any]
    ) -> dict[str, Any]:
        return action_row(
            ts=self.clock(),
            action_id=f"{message.id}-{action}",
            alert_fingerprint=message.alert,
            rule=None,
            runbook=None,
            step=None,
            action=action,
            agent_id=message.agent_id,
            tool_name=message.tool,
            actor=CONFIRM_ACTOR,
            reason=message.reason,
            result=result,
            detail=detail,
        )


@dataclass(frozen=True)
class CycleReport:
    """What one supervision cycle did."""

    transitions: list[Transition]
    verdicts: list[ProbeVerdict]
    alerts: list[Alert]
    actions: list[dict[str, Any]]


class BreakerSupervisor:
    """One loop for the control side: cooldowns, probes, confirmations and escalation.

    Call :meth:`cycle` periodically (the evaluator's tick). It learns every breaker
    message from the topic itself, so breakers opened by runbooks, by people or by
    another process are all tracked alike. Alerts go to the notifier; audit rows go to
    the ``actions`` table when a store is given.
    """

    def __init__(
        self,
        control: BreakerControl,
        source: ObservationSource,
        *,
        timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S,
        store: LakeStore | None = None,
        lookback_s: float = 3600.0,
        clock: Clock | None = None,
    ) -> None:
        self.control = control
        self.source = source
        self.store = store
        self.clock: Clock = clock or control.clock
        self.tracker = ConfirmationTracker(self.clock, timeout_s)
        self._since = self.clock() - dt.timedelta(seconds=lookback_s)

    def cycle(self) -> CycleReport:
        transitions = self.control.tick()
        self._learn()
        verdicts = self.tracker.observe(self.source.poll(self._since))
        for verdict in verdicts:
            detail = (
                f"probe {'succeeded' if verdict.ok else 'failed'} in session {verdict.session_id}"
            )
            transitions.append(self.control.probe_result(verdict.key, ok=verdict.ok, detail=detail))
        self._learn()
        alerts = self.tracker.check()
        actions = self.tracker.actions()
        if self.store is not None and actions:
            record_actions(self.store, actions)
        return CycleReport(transitions, verdicts, alerts, actions)

    def _learn(self) -> None:
        for status in self.control.status():
            applied = status.applied
            if applied is not None and not self.tracker.known(applied.message.id):
                self.tracker.expect(applied.message)


__all__ = [
    "UNCONFIRMED_RULE",
    "BreakerSupervisor",
    "CallOutcome",
    "CatalogSource",
    "Confirmation",
    "ConfirmationTracker",
    "CycleReport",
    "EventsTopicSource",
    "Expectation",
    "ObservationSource",
    "ProbeVerdict",
    "observe_event",
    "observe_row",
]
