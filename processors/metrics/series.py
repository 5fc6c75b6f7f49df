"""Every series agentwatch exports to Prometheus, each defined once.

An entry holds what Prometheus sees (name, help, kind, unit, labels) and, for the
series counted from landed events, what it counts in the store: the rows of a table
that satisfy a SQL predicate (the predicates of ``processors/store/definitions.py``
where there is one) and what is summed over them. The exporter, the other /metrics
endpoints, the Prometheus rule export and the dashboards take their names, help and
labels from here; ``tests/test_metric_series.py`` checks each of them, and the SQL
meaning against the exporter's counts, against this list.

Names are spelled as Prometheus stores them: a counter with its ``_total`` suffix, a
histogram by its base name (``_bucket``, ``_sum`` and ``_count`` follow from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from agentwatch.processors.store.definitions import (
    BLOCKED_ACTION,
    CONTAINED,
    ERROR,
    SECURITY_BLOCK,
    VIOLATION,
)

Kind = Literal["counter", "histogram", "gauge"]
# The /metrics endpoint that serves a series: the processor, `agentwatch drift run`,
# `agentwatch alerts run` (alerts, breakers, runbooks, the registry's lifecycle) and
# the OTLP receiver.
Endpoint = Literal["processor", "drift", "alerts", "otlp"]


@dataclass(frozen=True)
class Counts:
    """What a series counts in the store: ``value`` over the rows of ``table`` where
    ``where`` holds, grouped by the series' labels (``labels`` gives the SQL of a label
    that is no column). ``over`` names labels the store does not split by (the series is
    compared summed over them)."""

    table: Literal["events", "sessions", "dead_letters"]
    where: str = "true"
    value: str = "count(*)"
    labels: tuple[tuple[str, str], ...] = ()
    over: tuple[str, ...] = ()


@dataclass(frozen=True)
class Series:
    name: str
    help: str
    kind: Kind
    unit: str
    labels: tuple[str, ...]
    endpoint: Endpoint
    counts: Counts | None = None

    @property
    def family(self) -> str:
        """The name a metric family is created with (a counter's without ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def gauge(self) -> GaugeMetricFamily:
        """An empty gauge family of this series, for a collector to fill on scrape."""
        assert self.kind == "gauge", self.name
        return GaugeMetricFamily(self.family, self.help, labels=list(self.labels))

    def counter(self, registry: CollectorRegistry | None) -> Counter:
        """A counter of this series on ``registry`` (None: on none until one takes it)."""
        assert self.kind == "counter", self.name
        return Counter(self.family, self.help, list(self.labels), registry=registry)


AGENT: Final = ("agent_id", "agent_version", "environment")


def _kind(kind: str) -> str:
    return f"kind = '{kind}'"


def _events(where: str = "true", value: str = "count(*)", **labels: str) -> Counts:
    return Counts("events", where, value, tuple(labels.items()))


def _seconds(column: str) -> str:
    return f"sum({column} / 1000)"


# ------------------------------------------------------------------ the processor: events
EVENTS: Final = Series(
    "agentwatch_events_total", "Trace events landed, by kind and status.", "counter",
    "events", (*AGENT, "kind", "status"), "processor", _events(),
)  # fmt: skip
LLM_CALLS: Final = Series(
    "agentwatch_llm_calls_total", "LLM calls.", "counter", "calls", (*AGENT, "model"),
    "processor", _events(_kind("llm_call")),
)  # fmt: skip
TOOL_CALLS: Final = Series(
    "agentwatch_tool_calls_total", "Tool calls.", "counter", "calls", (*AGENT, "tool_name"),
    "processor", _events(_kind("tool_call")),
)  # fmt: skip
TOKEN_TYPES: Final = ("input", "output", "cache_read", "reasoning")
TOKENS: Final = Series(
    "agentwatch_tokens_total", "LLM tokens by type.", "counter", "tokens",
    (*AGENT, "model", "type"), "processor",
    Counts("events", _kind("llm_call"),
           "sum(" + " + ".join(f"coalesce({t}_tokens, 0)" for t in TOKEN_TYPES) + ")",
           over=("type",)),
)  # fmt: skip
COST: Final = Series(
    "agentwatch_cost_usd_total", "LLM cost in USD (event cost, else priced).", "counter",
    "usd", (*AGENT, "model"), "processor",
    _events(_kind("llm_call"), "sum(coalesce(cost_usd_effective, 0))"),
)  # fmt: skip
UNPRICED: Final = Series(
    "agentwatch_unpriced_events_total",
    "LLM calls whose model has no price: their cost is unknown, not zero.", "counter",
    "calls", (*AGENT, "model"), "processor", _events("cost_source = 'unpriced'"),
)  # fmt: skip
ERRORS: Final = Series(
    "agentwatch_errors_total", "Events with status error, or of kind error.", "counter",
    "events", (*AGENT, "error_type"), "processor", _events(ERROR),
)  # fmt: skip
POLICY_CHECKS: Final = Series(
    "agentwatch_policy_checks_total", "Policy checks by outcome.", "counter", "checks",
    (*AGENT, "policy_id", "outcome"), "processor", _events(_kind("policy_check")),
)  # fmt: skip
POLICY_VIOLATIONS: Final = Series(
    "agentwatch_policy_violations_total", "Policy checks that found a violation.", "counter",
    "checks", (*AGENT, "policy_id", "severity"), "processor",
    _events(VIOLATION),
)  # fmt: skip
BLOCKED_ACTIONS: Final = Series(
    "agentwatch_blocked_actions_total",
    "Actions blocked by a policy check or a security control.", "counter", "actions",
    (*AGENT, "source"), "processor",
    _events(BLOCKED_ACTION, source=f"CASE WHEN {SECURITY_BLOCK} THEN 'security' ELSE 'policy' END"),
)  # fmt: skip
SECURITY_EVENTS: Final = Series(
    "agentwatch_security_events_total", "Security events by category.", "counter", "events",
    (*AGENT, "category", "action", "severity"), "processor", _events(_kind("security")),
)  # fmt: skip
ESCALATIONS: Final = Series(
    "agentwatch_escalations_total", "Escalations to a human.", "counter", "escalations",
    AGENT, "processor", _events(_kind("escalation")),
)  # fmt: skip
SESSIONS_STARTED: Final = Series(
    "agentwatch_sessions_started_total", "Sessions started.", "counter", "sessions", AGENT,
    "processor", _events(_kind("session_start")),
)  # fmt: skip
FEEDBACK_NEGATIVE: Final = Series(
    "agentwatch_feedback_negative_total",
    "Feedback with a negative score (kept out of the score histogram).", "counter",
    "feedback", AGENT, "processor", _events(f"{_kind('feedback')} AND score < 0"),
)  # fmt: skip
LLM_LATENCY: Final = Series(
    "agentwatch_llm_call_duration_seconds", "LLM call latency.", "histogram", "seconds",
    (*AGENT, "model"), "processor",
    _events(f"{_kind('llm_call')} AND latency_ms IS NOT NULL", _seconds("latency_ms")),
)  # fmt: skip
TTFT: Final = Series(
    "agentwatch_llm_time_to_first_token_seconds", "LLM time to first token.", "histogram",
    "seconds", (*AGENT, "model"), "processor",
    _events("time_to_first_token_ms IS NOT NULL", _seconds("time_to_first_token_ms")),
)  # fmt: skip
TOOL_LATENCY: Final = Series(
    "agentwatch_tool_call_duration_seconds", "Tool call latency.", "histogram", "seconds",
    (*AGENT, "tool_name"), "processor",
    _events(f"{_kind('tool_call')} AND latency_ms IS NOT NULL", _seconds("latency_ms")),
)  # fmt: skip
FEEDBACK_SCORE: Final = Series(
    "agentwatch_feedback_score", "Feedback scores >= 0 (mean = sum / count).", "histogram",
    "score", AGENT, "processor", _events(f"{_kind('feedback')} AND score >= 0", "sum(score)"),
)  # fmt: skip

# ------------------------------------------------------------ the processor: sessions, more
SESSIONS_ENDED: Final = Series(
    "agentwatch_sessions_total", "Sessions ended, by resolution.", "counter", "sessions",
    (*AGENT, "resolution"), "processor", Counts("sessions", "ended_at IS NOT NULL"),
)  # fmt: skip
SESSIONS_CONTAINED: Final = Series(
    "agentwatch_sessions_contained_total",
    "Sessions resolved with no escalation (containment numerator).", "counter", "sessions",
    AGENT, "processor", Counts("sessions", f"ended_at IS NOT NULL AND {CONTAINED}"),
)  # fmt: skip
SESSION_DURATION: Final = Series(
    "agentwatch_session_duration_seconds", "Session duration, start to end.", "histogram",
    "seconds", (*AGENT, "resolution"), "processor",
    Counts("sessions", "duration_s IS NOT NULL", "sum(duration_s)"),
)  # fmt: skip
DEAD_LETTERS: Final = Series(
    "agentwatch_pipeline_dead_letters_total", "Invalid messages, by reason.", "counter",
    "messages", ("reason_code",), "processor", Counts("dead_letters"),
)  # fmt: skip
REDACTIONS: Final = Series(
    "agentwatch_redactions_total",
    "Personal data and secrets redacted before storage, by rule and field.", "counter",
    "values", ("rule", "field"), "processor",
)  # fmt: skip

# ---------------------------------------------------------- the processor: its own health
TOPIC: Final = ("topic",)
PARTITION: Final = ("topic", "partition")
PIPELINE_RECORDS: Final = Series(
    "agentwatch_pipeline_records_total", "Kafka records consumed and landed (valid or not).",
    "counter", "records", TOPIC, "processor",
)  # fmt: skip
PIPELINE_EVENTS: Final = Series(
    "agentwatch_pipeline_events_total", "Valid events landed.", "counter", "events", TOPIC,
    "processor",
)  # fmt: skip
PIPELINE_DUPLICATES: Final = Series(
    "agentwatch_pipeline_duplicates_total", "Re-sent events dropped by event_id.", "counter",
    "events", TOPIC, "processor",
)  # fmt: skip
PIPELINE_LATE: Final = Series(
    "agentwatch_pipeline_late_events_total", "Events that arrived after their window closed.",
    "counter", "events", TOPIC, "processor",
)  # fmt: skip
CONSUMER_LAG: Final = Series(
    "agentwatch_pipeline_consumer_lag", "Records not yet consumed, per partition.", "gauge",
    "records", PARTITION, "processor",
)  # fmt: skip
PROCESSING_DELAY: Final = Series(
    "agentwatch_pipeline_processing_delay_seconds",
    "Landing time minus the newest event time of the last batch.", "gauge", "seconds",
    PARTITION, "processor",
)  # fmt: skip
LAST_COMMIT: Final = Series(
    "agentwatch_pipeline_last_commit_timestamp_seconds",
    "When the partition's last batch was committed.", "gauge", "timestamp", PARTITION,
    "processor",
)  # fmt: skip
PIPELINE_MEMORY: Final = Series(
    "agentwatch_pipeline_memory_bytes",
    "Memory a landing worker holds, by holder (dedup_index, duckdb, pending_records); "
    "the largest worker's.", "gauge", "bytes", ("holder",), "processor",
)  # fmt: skip
DUCKDB_MEMORY_LIMIT: Final = Series(
    "agentwatch_pipeline_duckdb_memory_limit_bytes",
    "DuckDB's memory limit in a landing worker, after any doubling; the largest worker's.",
    "gauge", "bytes", (), "processor",
)  # fmt: skip
OPEN_SESSIONS: Final = Series(
    "agentwatch_pipeline_open_sessions",
    "Sessions started and not yet ended, kept to report duration and containment; the "
    "largest worker's.", "gauge", "sessions", (), "processor",
)  # fmt: skip
LABELS_FOLDED: Final = Series(
    "agentwatch_label_values_folded_total",
    "Label values folded into 'other' by the cardinality guard.", "counter", "values",
    ("label",), "processor",
)  # fmt: skip

# ------------------------------------------------------------------- agentwatch drift run
DRIFT_KEY: Final = ("agent_id", "signal")
RELEASE_KEY: Final = ("agent_id", "dimension", "baseline", "candidate", "signal")
DRIFT_SCORE: Final = Series(
    "agentwatch_drift_score",
    "Largest drift severity of the signal in the agent's latest window (1 = threshold).",
    "gauge", "severity", DRIFT_KEY, "drift",
)  # fmt: skip
DRIFT_DETECTED: Final = Series(
    "agentwatch_drift_detected",
    "1 when a test of the signal found drift in the agent's latest window, else 0.",
    "gauge", "bool", DRIFT_KEY, "drift",
)  # fmt: skip
DRIFT_INSUFFICIENT: Final = Series(
    "agentwatch_drift_insufficient_data",
    "1 when no test of the signal had enough samples in the agent's latest window.",
    "gauge", "bool", DRIFT_KEY, "drift",
)  # fmt: skip
DRIFT_WINDOW_END: Final = Series(
    "agentwatch_drift_window_end_timestamp_seconds",
    "End of the agent's latest evaluated drift window (event time).", "gauge", "timestamp",
    ("agent_id",), "drift",
)  # fmt: skip
RELEASE_SCORE: Final = Series(
    "agentwatch_drift_release_score",
    "Largest drift severity of the candidate release against the stable one on the "
    "signal, in the agent's latest window (1 = threshold).", "gauge", "severity",
    RELEASE_KEY, "drift",
)  # fmt: skip
RELEASE_DETECTED: Final = Series(
    "agentwatch_drift_release_detected",
    "1 when a test found the candidate release unlike the stable one on the signal.",
    "gauge", "bool", RELEASE_KEY, "drift",
)  # fmt: skip

# ------------------------------------------------------------------ agentwatch alerts run
ALERT_KEY: Final = ("alertname", "severity", "agent_id", "state")
ALERTS: Final = Series(
    "agentwatch_alerts",
    "Pending and firing alerts (1 each; alerts sharing these labels are summed).", "gauge",
    "alerts", ALERT_KEY, "alerts",
)  # fmt: skip
ALERT_STARTED: Final = Series(
    "agentwatch_alerts_started_timestamp_seconds",
    "When the earliest alert with these labels started (pending or firing).", "gauge",
    "timestamp", ALERT_KEY, "alerts",
)  # fmt: skip
RULE_INFO: Final = Series(
    "agentwatch_alert_rule_info",
    "1 per alert rule in force, with its runbook (the rule's runbook_url annotation).",
    "gauge", "rules", ("alertname", "severity", "runbook_url"), "alerts",
)  # fmt: skip
LAST_EVALUATION: Final = Series(
    "agentwatch_alerts_last_evaluation_timestamp_seconds",
    "When the alert rules were last evaluated.", "gauge", "timestamp", (), "alerts",
)  # fmt: skip
BREAKER_OPEN: Final = Series(
    "agentwatch_breaker_open",
    "1 while the circuit breaker halts calls (open or half-open), 0 when closed; "
    "tool is empty for the agent's own breaker.", "gauge", "bool", ("agent_id", "tool"),
    "alerts",
)  # fmt: skip
RUNBOOK_STEP_FAILURES: Final = Series(
    "agentwatch_runbook_step_failures_total",
    "Runbook steps that failed (a failed open_breaker leaves an agent running).", "counter",
    "steps", ("runbook", "action"), "alerts",
)  # fmt: skip
AGENT_INFO: Final = Series(
    "agentwatch_agent_info", "1 per catalogued agent.", "gauge", "agents",
    ("agent_id", "risk_tier", "status", "owner", "business_owner", "technical_owner",
     "autonomy"), "alerts",
)  # fmt: skip
MODEL_APPROVED: Final = Series(
    "agentwatch_agent_model_approved", "1 per model approved for the agent.", "gauge",
    "models", ("agent_id", "model"), "alerts",
)  # fmt: skip
REVIEW_AGE: Final = Series(
    "agentwatch_agent_review_age_days",
    "Days since the agent's last access review (or since the registry first saw it).",
    "gauge", "days", ("agent_id",), "alerts",
)  # fmt: skip
REVIEW_INTERVAL: Final = Series(
    "agentwatch_agent_review_interval_days",
    "Days an access review stays valid for the agent (by its risk tier).", "gauge", "days",
    ("agent_id",), "alerts",
)  # fmt: skip
RELEASE_REGISTERED: Final = Series(
    "agentwatch_release_registered",
    "1 per registered release; approved is true or false, stage canary, full or empty.",
    "gauge", "releases", ("agent_id", "agent_version", "approved", "stage"), "alerts",
)  # fmt: skip

# -------------------------------------------------------------------------- OTLP receiver
OTLP_SPANS: Final = Series(
    "agentwatch_otlp_spans_total",
    "OTLP spans received, by outcome (mapped, skipped, unmapped, rejected), "
    "reason (the role mapped, or why not) and instrumentation scope", "counter", "spans",
    ("outcome", "reason", "scope"), "otlp",
)  # fmt: skip
OTLP_ATTRIBUTES: Final = Series(
    "agentwatch_otlp_attributes_total",
    "Attributes of mapped OTLP spans not read into a contract field, by outcome "
    "(kept, content_dropped, content_redacted, over_limit) and scope", "counter",
    "attributes", ("outcome", "scope"), "otlp",
)  # fmt: skip
OTLP_REQUESTS: Final = Series(
    "agentwatch_otlp_requests_total", "OTLP export requests answered, by transport and answer",
    "counter", "requests", ("transport", "code"), "otlp",
)  # fmt: skip
OTLP_EVENTS: Final = Series(
    "agentwatch_otlp_events_total", "Contract events produced from OTLP spans", "counter",
    "events", (), "otlp",
)  # fmt: skip

SERIES: Final[tuple[Series, ...]] = tuple(
    v for v in dict(globals()).values() if isinstance(v, Series)
)
"""Every exported series, in the order defined above."""

BY_NAME: Final = {s.name: s for s in SERIES}
