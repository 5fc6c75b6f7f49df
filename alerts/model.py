"""The alert as every part of the alerting side sees it: evaluator, notifier, runbooks."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

AlertState = Literal["pending", "firing", "resolved"]


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable id of one alert instance: the rule and its labels, order-independent."""
    return _fingerprint(rule, tuple(sorted(labels.items())))


@functools.lru_cache(maxsize=1 << 14)  # the same few instances, every evaluation
def _fingerprint(rule: str, labels: tuple[tuple[str, str], ...]) -> str:
    doc = json.dumps({"rule": rule, "labels": dict(labels)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert instance at one moment of its life.

    ``labels`` always hold ``alertname`` (the rule) and ``severity``, and ``agent_id``
    when the rule is per agent, as in Prometheus and Alertmanager.
    """

    rule: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    starts_at: dt.datetime
    ends_at: dt.datetime | None = None
    value: float | None = None
    samples: int | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.labels)

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "warning")

    @property
    def agent_id(self) -> str | None:
        return self.labels.get("agent_id")
