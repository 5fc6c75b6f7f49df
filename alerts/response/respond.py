"""The response to alerts: tell people, run the rule's runbook, supervise breakers.

The evaluator (``alerts run``) and the webhook receiver (``alerts receive``) only decide
*that* something is wrong; this module is what they hand each alert to. A firing alert
goes to the notifier (routing, grouping, silences, inhibition) and to the runbook its
``runbook_url`` names, which may open a circuit breaker on the control topic; from the
evaluator the runbooks run as soon as the alert's own rule is decided (:meth:`Response.
rule_sink`), and rules whose runbook opens a breaker are decided first. Once per
evaluation the breaker supervisor moves breakers through cooldown and probe, checks that
each agent confirmed its halt, and escalates the ones that did not.

Kafka is reached lazily: an evaluator whose rules never fire a breaker step works
without a broker, and one that cannot reach it keeps notifying and retries next time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentwatch.alerts.evaluation.evaluator import Evaluation, RuleEvaluation
from agentwatch.alerts.governance.catalog import Catalog
from agentwatch.alerts.governance.registry import apply_registry
from agentwatch.alerts.model import Alert
from agentwatch.alerts.notify.notifier import Notifier, catalog_contacts, evaluation_sink
from agentwatch.alerts.notify.senders import ThreadedSenders
from agentwatch.alerts.response.breaker import Breaker
from agentwatch.alerts.response.control import BreakerControl, retired_agents
from agentwatch.alerts.response.observations import CatalogSource
from agentwatch.alerts.response.runbook_files import (
    RUNBOOK_DIR,
    Runbook,
    find_runbook,
    load_runbooks,
    opens_breaker,
)
from agentwatch.alerts.response.runbooks import RunbookContext, catalog_pins, run_runbook
from agentwatch.alerts.response.supervisor import BreakerSupervisor
from agentwatch.alerts.rules import Rule
from agentwatch.clock import Clock, utc_now
from agentwatch.ingest.contract.control import Keyring
from agentwatch.processors.store.lake import LakeStore

log = logging.getLogger(__name__)

OWNER_NOTICE = "owner_notice"
NO_CATALOG_RESPONSE = "no owners, pinned versions or retired agents; runbooks act on no agent"


@dataclass
class Response:
    notifier: Notifier
    runbooks: Mapping[str, Runbook]
    context: RunbookContext
    connect_control: Callable[[], BreakerControl] | None
    db: Path
    clock: Clock = utc_now
    _supervisor: BreakerSupervisor | None = None
    _retry_at: dt.datetime | None = None
    retry_after: dt.timedelta = dt.timedelta(seconds=60)
    # Told every breaker after each supervisor cycle (the /metrics of `alerts run`).
    breaker_sink: Callable[[Sequence[Breaker]], None] | None = None

    def respond(self, alerts: Sequence[Alert]) -> None:
        """Run the runbook of every firing alert (idempotent per alert instance)."""
        for alert in alerts:
            if alert.state != "firing":
                continue
            url = alert.annotations.get("runbook_url", "")
            runbook = find_runbook(url, self.runbooks) if url else None
            if runbook is None:
                if url:
                    log.warning(
                        "no runbook at the alert's runbook_url",
                        extra={"rule": alert.rule, "runbook_url": url},
                    )
                continue
            silenced = self.notifier.silenced(alert, self.clock())
            if silenced is not None and not runbook.run_when_silenced:
                log.info(
                    "runbook held by a silence",
                    extra={"rule": alert.rule, "runbook": runbook.id, "reason": silenced},
                )
                continue
            try:
                rows = run_runbook(runbook, alert, self.context)
            except Exception:
                log.exception("runbook failed", extra={"rule": alert.rule, "runbook": runbook.id})
                continue
            for row in rows:
                log.info(
                    "runbook step", extra={k: row[k] for k in ("action", "agent_id", "result")}
                )

    def supervise(self, now: dt.datetime) -> None:
        """One supervisor cycle: cooldowns, probes, confirmations; escalations notified."""
        supervisor = self._connect_supervisor()
        if supervisor is None:
            return
        try:
            report = supervisor.cycle()
            if self.breaker_sink is not None:
                self.breaker_sink([s.breaker for s in supervisor.control.status()])
        except Exception:
            log.exception("breaker supervision failed; retrying next time")
            self._supervisor = None
            return
        if report.alerts:
            self.notifier.process(report.alerts, now)

    def _connect_supervisor(self) -> BreakerSupervisor | None:
        if self._supervisor is None and self.connect_control is not None:
            now = self.clock()
            if self._retry_at is not None and now < self._retry_at:
                return None
            try:
                control = self.connect_control()
            except Exception as exc:
                self._retry_at = now + self.retry_after
                log.warning(
                    "control topic unreachable; breakers not supervised for now",
                    extra={"error": str(exc), "retry_at": self._retry_at.isoformat()},
                )
                return None
            self._supervisor = BreakerSupervisor(
                control, CatalogSource(self.db), store=self.context.store
            )
            # Runbooks open breakers through the same, already connected, control: the
            # first breaker of an incident then costs no connection set-up.
            if self.context.control is None:
                self.context.control = control
        return self._supervisor

    def urgent(self, rule: Rule) -> bool:
        """True when ``rule``'s runbook can open a breaker: the evaluator measures such
        rules first and most often, since their alerts contain agents."""
        url = rule.annotations.get("runbook_url", "")
        runbook = find_runbook(url, self.runbooks) if url else None
        return runbook is not None and opens_breaker(runbook)

    def rule_sink(self) -> Callable[[RuleEvaluation], None]:
        """The evaluator's rule sink: the runbooks of a rule's alerts that start firing
        run as soon as that rule is decided, before the next rule is measured."""

        def sink(result: RuleEvaluation) -> None:
            self.respond([t.alert for t in result.transitions])

        return sink

    def evaluation_sink(self, *, run_runbooks: bool = True) -> Callable[[Evaluation], None]:
        """The evaluator's sink: breaker supervision, the runbooks (unless the rule sink
        already ran them: ``run_runbooks=False``), then the notifier."""
        notify = evaluation_sink(self.notifier)

        def sink(evaluation: Evaluation) -> None:
            self.supervise(evaluation.at)
            if run_runbooks:
                self.respond([t.alert for t in evaluation.transitions])
            notify(evaluation)

        return sink

    def received_sink(self, may_act: Callable[[Alert], bool]) -> Callable[[Sequence[Alert]], None]:
        """For ``alerts receive``: alerts from an existing Alertmanager trigger runbooks.

        Every alert is notified; only those ``may_act`` allows run their runbook.
        """

        def sink(alerts: Sequence[Alert]) -> None:
            self.notifier.process(alerts, self.clock())
            self.respond([a for a in alerts if a.state != "firing" or may_act(a)])

        return sink


def owner_notifier(notifier: Notifier, clock: Clock) -> Callable[[Alert, str], None]:
    """A runbook's notify_owner step: an info notice routed to the agent's owner.

    The notice carries ``owner_notice="true"`` so the critical alert that triggered the
    runbook does not inhibit it (see the shipped notify.yaml). It is derived from that
    alert: it resolves with it, is muted by its silences, and does not reach a receiver
    the alert itself reaches.
    """

    def notify(alert: Alert, message: str) -> None:
        notice = dataclasses.replace(
            alert,
            rule=f"{alert.rule}OwnerNotice",
            labels={
                **alert.labels,
                "alertname": f"{alert.rule}OwnerNotice",
                "severity": "info",
                OWNER_NOTICE: "true",
            },
            annotations={**alert.annotations, "summary": message},
            state="firing",
            starts_at=clock(),
        )
        notifier.derive(alert, notice, clock())

    return notify


def build_response(
    db: Path,
    notify_config: Path,
    bootstrap: str,
    control_topic: str,
    keyring: Keyring,
    catalog: Catalog,
    runbook_dir: Path = RUNBOOK_DIR,
) -> Response:
    """Notifications, runbooks and breaker supervision over ``catalog`` and the store at ``db``."""
    catalog = apply_registry(db, catalog)  # with the registry's retirements
    store = LakeStore(db)
    # One worker per receiver: a receiver that hangs delays neither evaluation nor
    # the runbooks and breakers that contain an agent.
    notifier = Notifier.from_files(
        notify_config, db.parent, catalog_contacts(catalog), ThreadedSenders()
    )
    retired = retired_agents(catalog)

    def connect() -> BreakerControl:
        return BreakerControl.connect(
            bootstrap, control_topic, keyring=keyring, timeout_s=5.0, retired=retired
        )

    context = RunbookContext(
        store=store,
        connect_control=connect,
        notify_owner=owner_notifier(notifier, utc_now),
        pinned_versions=catalog_pins(catalog),
    )
    return Response(notifier, load_runbooks(runbook_dir), context, connect, db)
