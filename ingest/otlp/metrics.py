"""The OTLP counters, shared by the receiver and the processor's Collector path.

``agentwatch_otlp_spans_total{outcome,reason,scope}`` accounts for every span received;
``agentwatch_otlp_attributes_total{outcome,scope}`` for every attribute of a mapped span.
Instrumentation scopes are few, but a hostile sender could invent many: past
``max_scopes`` distinct values the label folds into ``other``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agentwatch.ingest.otlp.mapping import Mapped
from agentwatch.processors.metrics import series

OTHER = "other"


class OtlpMetrics:
    def __init__(self, registry: CollectorRegistry, max_scopes: int = 50) -> None:
        self.spans = series.OTLP_SPANS.counter(registry)
        self.attributes = series.OTLP_ATTRIBUTES.counter(registry)
        self.requests = series.OTLP_REQUESTS.counter(registry)
        self.events = series.OTLP_EVENTS.counter(registry)
        self._max_scopes = max_scopes
        self._scopes: set[str] = set()

    def _scope(self, scope: str) -> str:
        if scope in self._scopes:
            return scope
        if len(self._scopes) >= self._max_scopes:
            return OTHER
        self._scopes.add(scope)
        return scope

    def record(self, mapped: Mapped) -> None:
        for (outcome, reason, scope), n in mapped.spans.items():
            self.spans.labels(outcome, reason, self._scope(scope)).inc(n)
        for (outcome, scope), n in mapped.attributes.items():
            self.attributes.labels(outcome, self._scope(scope)).inc(n)
        self.events.inc(len(mapped.events))
