"""The OTLP counters, shared by the receiver and the processor's Collector path.

``agentwatch_otlp_spans_total{outcome,reason,scope}`` accounts for every span received;
``agentwatch_otlp_attributes_total{outcome,scope}`` for every attribute of a mapped span.
Instrumentation scopes are few, but a hostile sender could invent many: past
``max_scopes`` distinct values the label folds into ``other``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from agentwatch.ingest.otlp.mapping import Mapped

OTHER = "other"


class OtlpMetrics:
    def __init__(self, registry: CollectorRegistry, max_scopes: int = 50) -> None:
        self.spans = Counter(
            "agentwatch_otlp_spans_total",
            "OTLP spans received, by outcome (mapped, skipped, unmapped, rejected), "
            "reason (the role mapped, or why not) and instrumentation scope",
            ["outcome", "reason", "scope"],
            registry=registry,
        )
        self.attributes = Counter(
            "agentwatch_otlp_attributes_total",
            "Attributes of mapped OTLP spans not read into a contract field, by outcome "
            "(kept, content_dropped, content_redacted, over_limit) and scope",
            ["outcome", "scope"],
            registry=registry,
        )
        self.requests = Counter(
            "agentwatch_otlp_requests_total",
            "OTLP export requests answered, by transport and answer",
            ["transport", "code"],
            registry=registry,
        )
        self.events = Counter(
            "agentwatch_otlp_events_total",
            "Contract events produced from OTLP spans",
            registry=registry,
        )
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
