"""The deliver and retry stages: notifications handed to senders, failures tried again.

Each integration of a receiver is a channel of its own, delivered and logged apart. A
delivery goes to its integration's sender (``senders.py``); when the sender is done,
``collect`` turns the result into an outcome: ``sent``, or ``failed`` for good (after
the retry stage gave up, or at once for an error that retrying cannot fix). Deliveries
waiting for a retry are resubmitted by ``resubmit_due`` once their time has come.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from agentwatch.alerts.notify.config import NotifyConfig
from agentwatch.alerts.notify.receivers import DeliveryError, Integration, Notification
from agentwatch.alerts.notify.senders import Senders
from agentwatch.alerts.notify.stages import Group, RetryStage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Channel:
    """One integration of one receiver; ``name`` is what the log's receiver column says."""

    receiver: str
    name: str
    integration: Integration


def channels(config: NotifyConfig) -> dict[str, list[Channel]]:
    """Each receiver's integrations, named ``receiver/kind#n`` when it has several."""
    found: dict[str, list[Channel]] = {}
    for receiver, integrations in config.receivers.items():
        kinds = [i.kind for i in integrations]
        found[receiver] = []
        for i, integ in enumerate(integrations):
            name = receiver
            if len(integrations) > 1:
                nth = kinds[:i].count(integ.kind)
                name = f"{receiver}/{integ.kind}" + (f"#{nth}" if nth else "")
            found[receiver].append(Channel(receiver, name, integ))
    return found


@dataclass
class Delivery:
    """One notification to one integration (``channel``), through all its attempts."""

    id: str
    channel: str
    integration: Integration
    notification: Notification
    group: Group  # handed back with the outcome
    attempts: int = 0
    next_attempt: dt.datetime | None = None
    last_error: str = ""


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    status: Literal["sent", "failed"]
    error: str | None = None


class DeliveryStage:
    """Runs deliveries on senders and retries them; the dispatcher reads the outcomes."""

    def __init__(self, retry: RetryStage, senders: Senders) -> None:
        self.retry = retry
        self.senders = senders
        self._running: dict[str, Delivery] = {}
        self._retrying: list[Delivery] = []

    @property
    def pending(self) -> int:
        """Deliveries waiting for a retry or running on a sender."""
        return len(self._retrying) + len(self._running)

    def next_attempt(self) -> dt.datetime | None:
        return min((d.next_attempt for d in self._retrying if d.next_attempt), default=None)

    def submit(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        self._running[delivery.id] = delivery
        integration, notification = delivery.integration, delivery.notification
        self.senders.submit(delivery.channel, delivery.id, lambda: integration.send(notification))

    def resubmit_due(self, now: dt.datetime) -> None:
        due = [d for d in self._retrying if d.next_attempt is not None and d.next_attempt <= now]
        self._retrying = [d for d in self._retrying if d not in due]
        for delivery in due:
            self.submit(delivery)

    def collect(self, now: dt.datetime) -> list[Outcome]:
        outcomes = []
        for done in self.senders.collect():
            delivery = self._running.pop(str(done.token), None)
            if delivery is None:
                continue
            if done.error is None:
                outcomes.append(Outcome(delivery, "sent"))
                continue
            failed = self._failed(delivery, done.error, now)
            if failed is not None:
                outcomes.append(failed)
        return outcomes

    def _failed(self, delivery: Delivery, error: BaseException, now: dt.datetime) -> Outcome | None:
        if isinstance(error, DeliveryError):
            message = str(error)
        else:  # a bug in an integration must not lose the notification
            log.error(
                "notification integration crashed",
                exc_info=error,
                extra={"receiver": delivery.channel},
            )
            message = f"{type(error).__name__}: {error}"
        delivery.last_error = message
        retry_at = self.retry.next_attempt(delivery.attempts, error, now)
        if retry_at is not None:
            delivery.next_attempt = retry_at
            self._retrying.append(delivery)
            log.warning(
                "notification delivery failed; will retry",
                extra={
                    "receiver": delivery.channel,
                    "attempt": delivery.attempts,
                    "retry_in_s": (retry_at - now).total_seconds(),
                    "error": message,
                },
            )
            return None
        retryable = isinstance(error, DeliveryError) and error.retryable
        why = "" if retryable else " (not retryable)"
        return Outcome(delivery, "failed", f"after {delivery.attempts} attempt(s){why}: {message}")

    def close(self, now: dt.datetime, timeout_s: float) -> list[Outcome]:
        """Stop the senders; what is not done by then fails, saying so: nothing is lost."""
        self.senders.close(timeout_s)
        outcomes = self.collect(now)
        for d in [*self._retrying, *self._running.values()]:
            last = d.last_error or "none, the last attempt was still running"
            error = f"notifier stopped after {d.attempts} attempt(s); last error: {last}"
            outcomes.append(Outcome(d, "failed", error))
        self._retrying, self._running = [], {}
        return outcomes
