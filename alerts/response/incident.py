"""A contained incident, end to end: a misbehaving agent, the alert, the breaker, the halt.

Used by the demo, the end-to-end test and the containment benchmark. The agent here is
a real SDK client (``Tracer`` with a ``ControlFollower``) that starts failing its policy
checks at a high rate, as an agent does after a bad prompt release or under attack. The
rest is the production path: the processor lands its events, ``agentwatch alerts run``
fires the violation-burst rule, notifies on-call, runs the ``contain-agent`` runbook,
which opens the agent's breaker on the control topic; the SDK halts the agent before
its next tool call and confirms with an event. ``chain`` reads every step back from the
tables, with its time, so the story is told from the audit trail, not from the driver;
``confirmed_ids`` reads the halt confirmations the same way for ``breaker status``.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import duckdb

from agentwatch.alerts.governance.catalog import AgentEntry
from agentwatch.clock import utc_now
from agentwatch.ingest.contract.control import CONTROL_TOPIC, Keyring
from agentwatch.ingest.sdk.control import BREAKER_POLICY, AgentHalted, ControlFollower
from agentwatch.ingest.sdk.session import Session
from agentwatch.ingest.sdk.tracer import Tracer
from agentwatch.kafka import KafkaSecurity
from agentwatch.processors.store.attach import StoreMissing
from agentwatch.processors.store.attach import connect as connect_lake
from agentwatch.processors.store.definitions import BLOCKED, FAILED_CHECK

# The SDK's confirmation that it halted a call under a breaker message: a block under the
# breaker's policy, naming the message (alerts/response/observations.py reads it live).
_CONFIRMATION: Final = f"kind = 'policy_check' AND policy_id = ? AND {BLOCKED}"
_CONTROL_ID: Final = "json_extract_string(attributes, '$.control_id')"


@dataclass
class AgentRun:
    """What the misbehaving agent saw."""

    started_at: dt.datetime
    burst_at: dt.datetime | None = None
    halted_at: dt.datetime | None = None
    halted_before: str | None = None
    steps: int = 0
    halted_calls: int = 0
    errors: list[str] = field(default_factory=list)


class MisbehavingAgent:
    """An SDK-instrumented agent that answers tickets, then fails its policy checks.

    It keeps trying after it is halted (as a real agent's loop would), so every attempt
    meets the open breaker; the SDK confirms the halt once.
    """

    def __init__(
        self,
        bootstrap: str,
        entry: AgentEntry,
        *,
        topic: str = "agent-events",
        control_topic: str = CONTROL_TOPIC,
        keyring: Keyring | None = None,
        steps_per_s: float = 20.0,
        violation_rate: float = 0.6,
        seed: int = 7,
        security: KafkaSecurity | None = None,
    ) -> None:
        # Everything but its guardrail failures is as approved in the catalog, so the
        # incident is the violation burst alone, not a governance breach too.
        self.agent_id = agent_id = entry.agent_id
        self.model = min(entry.approved_models or {"gpt-4o-mini"})
        self.tool = min(entry.approved_tools or {"kb.search"})
        self.prompt_version = entry.pinned.prompt_version
        self.tracer = Tracer.to_kafka(
            bootstrap, topic, agent_id=agent_id, agent_version=entry.pinned.agent_version,
            linger_ms=20.0, security=security,
        )  # fmt: skip
        self.follower = ControlFollower(
            bootstrap, agent_id, topic=control_topic, keyring=keyring, security=security
        )
        self.follower.attach(self.tracer)
        self.period = 1.0 / steps_per_s
        self.violation_rate = violation_rate
        self.rng = random.Random(seed)
        self.burst = threading.Event()
        self.stop = threading.Event()
        self.run = AgentRun(started_at=utc_now())
        self._thread = threading.Thread(target=self._loop, name=f"agent-{agent_id}", daemon=True)

    def start(self) -> MisbehavingAgent:
        self.follower.start(wait_s=5.0)
        self._thread.start()
        return self

    def start_burst(self) -> None:
        self.run.burst_at = utc_now()
        self.burst.set()

    def close(self) -> AgentRun:
        self.stop.set()
        self._thread.join(10)
        self.tracer.close(timeout=10)
        self.follower.close()
        return self.run

    def _loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                with self.tracer.session(f"{self.agent_id}-s{n}", intent="password_reset") as s:
                    for _ in range(5):
                        if self.stop.wait(self.period):
                            break
                        self._step(s)
            except AgentHalted as halted:
                self.run.halted_calls += 1
                if self.run.halted_at is None:
                    self.run.halted_at = utc_now()
                    self.run.halted_before = f"{halted.call.kind} {halted.call.name}"
                self.stop.wait(0.5)
            except Exception as exc:  # the agent's own bug: record, keep going
                self.run.errors.append(repr(exc))

    def _step(self, s: Session) -> None:
        failing = self.burst.is_set() and self.rng.random() < self.violation_rate
        s.policy_check("pii-output", "violation" if failing else "pass", "high")
        with s.tool_call(self.tool, "function"):
            pass
        with s.llm_call(self.model, prompt_version=self.prompt_version) as call:
            call.input_tokens, call.output_tokens = 900, 120
        self.run.steps += 1


@dataclass(frozen=True)
class ChainStep:
    at: dt.datetime | None
    step: str
    detail: str


VIOLATION_RULE = "AgentViolationBurst"


def chain(
    db: Path, agent_id: str, since: dt.datetime, rule: str = VIOLATION_RULE
) -> list[ChainStep]:
    """The incident as the tables record it, in order; a missing step has no time."""
    con = connect_lake(db)
    try:

        def one(sql: str, *params: object) -> tuple[object, ...] | None:
            return con.execute(sql, [*params]).fetchone()

        first_bad = one(
            "SELECT min(ts), count(*) FROM events WHERE agent_id = ? AND ts >= ? "
            f"AND kind = 'policy_check' AND {FAILED_CHECK} "
            "AND policy_id <> ?",
            agent_id, since, BREAKER_POLICY,
        )  # fmt: skip
        pending = one(
            "SELECT min(ts), any_value(rule) FROM alert_events WHERE agent_id = ? AND ts >= ? "
            "AND state = 'pending' AND rule = ?",
            agent_id, since, rule,
        )  # fmt: skip
        firing = one(
            "SELECT min(ts), any_value(rule), any_value(value) FROM alert_events "
            "WHERE agent_id = ? AND ts >= ? AND state = 'firing' AND rule = ?",
            agent_id, since, rule,
        )  # fmt: skip
        notified = one(
            "SELECT min(n.ts), any_value(n.receiver) FROM notifications n JOIN "
            "(SELECT DISTINCT fingerprint FROM alert_events WHERE agent_id = ? AND ts >= ? "
            " AND state = 'firing' AND rule = ?) a "
            "ON contains(n.alert_fingerprints, a.fingerprint) "
            "WHERE n.ts >= ? AND n.status = 'sent'",
            agent_id, since, rule, since,
        )  # fmt: skip
        opened = one(
            "SELECT min(ts), any_value(actor) FROM actions WHERE agent_id = ? AND ts >= ? "
            "AND action = 'open_breaker' AND result = 'ok'",
            agent_id, since,
        )  # fmt: skip
        confirmed = one(
            "SELECT min(ts), any_value(json_extract_string(attributes, '$.call_name')) "
            f"FROM events WHERE agent_id = ? AND ts >= ? AND {_CONFIRMATION}",
            agent_id, since, BREAKER_POLICY,
        )  # fmt: skip
    finally:
        con.close()

    def at(row: tuple[object, ...] | None) -> dt.datetime | None:
        value = row[0] if row else None
        return value if isinstance(value, dt.datetime) else None

    def field_(row: tuple[object, ...] | None, i: int) -> object:
        return row[i] if row else None

    return [
        ChainStep(at(first_bad), "first policy violation",
                  f"{field_(first_bad, 1)} violations from {agent_id}"),
        ChainStep(at(pending), "alert pending", f"{field_(pending, 1)}"),
        ChainStep(at(firing), "alert firing",
                  f"{field_(firing, 1)} at {_pct(field_(firing, 2))} of checks"),
        ChainStep(at(notified), "on-call notified", f"receiver {field_(notified, 1)}"),
        ChainStep(at(opened), "breaker opened", f"by {field_(opened, 1)} (runbook contain-agent)"),
        ChainStep(at(confirmed), "agent halted and confirmed",
                  f"stopped before tool/llm call {field_(confirmed, 1)}"),
    ]  # fmt: skip


def wait_for_chain(
    db: Path, agent_id: str, since: dt.datetime, timeout_s: float, rule: str = VIOLATION_RULE
) -> list[ChainStep]:
    """Poll the tables until every step of the chain is recorded, or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            steps = chain(db, agent_id, since, rule)
        except (duckdb.Error, StoreMissing):  # the processor has not created the lake yet
            steps = []
        if steps and all(s.at is not None for s in steps):
            return steps
        if time.monotonic() > deadline:
            return steps
        time.sleep(0.5)


def confirmed_ids(db: Path, ids: Iterable[str]) -> set[str] | None:
    """Which breaker messages their agent confirmed, per the store; None without one."""
    wanted = sorted(set(ids))
    if not db.exists():
        return None
    if not wanted:
        return set()
    try:
        con = connect_lake(db)
    except duckdb.Error:
        return None
    try:
        rows = con.execute(
            f"SELECT DISTINCT {_CONTROL_ID} FROM events WHERE {_CONFIRMATION} "
            f"AND {_CONTROL_ID} IN ({', '.join('?' for _ in wanted)})",
            [BREAKER_POLICY, *wanted],
        ).fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return {r[0] for r in rows}


def _pct(value: object) -> str:
    return f"{value:.0%}" if isinstance(value, float) else "?"
