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

This module is the bookkeeping, pure and clock-driven; what the events say is read by
:mod:`agentwatch.alerts.response.observations`, and the loop that runs both with the
breakers' cooldowns is :mod:`agentwatch.alerts.response.supervisor`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agentwatch.alerts.model import Alert
from agentwatch.alerts.response.audit import action_row
from agentwatch.alerts.response.breaker import BreakerKey
from agentwatch.alerts.response.observations import Confirmation, Observation
from agentwatch.clock import Clock
from agentwatch.ingest.contract.control import ControlMessage

UNCONFIRMED_RULE: Final = "BreakerUnconfirmed"
DEFAULT_CONFIRM_TIMEOUT_S: Final = 30.0
CONFIRM_ACTOR: Final = "system:confirm"

ConfirmStatus = Literal["pending", "confirmed", "unconfirmed", "superseded"]


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
