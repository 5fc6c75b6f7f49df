"""Column layouts of the stored tables, in one place for the decoder, the store and the docs.

``events`` is one wide, sparse row per valid event: the contract's common fields, every
kind's fields (null where the kind has none), ``attributes`` kept as JSON text, and the
Kafka coordinates of the message (``_topic``, ``_partition``, ``_offset``, ``_kafka_ts``)
that make each row traceable and each batch idempotent.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from agentwatch.processors.store.histograms import HISTOGRAM_TYPE

UTC_TS = pl.Datetime("us", "UTC")

# Fields as they appear in the JSON message, read by polars with this exact schema.
CONTRACT_FIELDS: Final[dict[str, pl.DataType]] = {
    "schema_version": pl.Int64(),
    "event_id": pl.String(),
    "ts": pl.String(),
    "kind": pl.String(),
    "agent_id": pl.String(),
    "session_id": pl.String(),
    "agent_version": pl.String(),
    "environment": pl.String(),
    "trace_id": pl.String(),
    "span_id": pl.String(),
    "parent_span_id": pl.String(),
    "latency_ms": pl.Float64(),
    "status": pl.String(),
    "error_type": pl.String(),
    "attributes": pl.String(),
    # session_start / session_end
    "channel": pl.String(),
    "user_segment": pl.String(),
    "intent": pl.String(),
    "resolution": pl.String(),
    # llm_call
    "model": pl.String(),
    "provider": pl.String(),
    "prompt_id": pl.String(),
    "prompt_version": pl.String(),
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cache_read_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "finish_reason": pl.String(),
    "time_to_first_token_ms": pl.Float64(),
    # tool_call
    "tool_name": pl.String(),
    "tool_type": pl.String(),
    # policy_check / security
    "policy_id": pl.String(),
    "outcome": pl.String(),
    "severity": pl.String(),
    "category": pl.String(),
    "action": pl.String(),
    # escalation
    "reason": pl.String(),
    "target": pl.String(),
    # feedback
    "score": pl.Float64(),
    "label": pl.String(),
}

KAFKA_FIELDS: Final[dict[str, pl.DataType]] = {
    "_topic": pl.String(),
    "_partition": pl.Int32(),
    "_offset": pl.Int64(),
    "_kafka_ts": UTC_TS,
}

# Columns the processor derives at landing time.
DERIVED_FIELDS: Final[dict[str, pl.DataType]] = {
    # cost_usd when the event carries it, else priced from the pricing table; null when
    # the model has no price (cost_source 'unpriced'), never a silent 0.
    "cost_usd_effective": pl.Float64(),
    "cost_source": pl.String(),  # 'event' | 'pricing' | 'unpriced'; null on non-LLM events
    "pricing_version": pl.String(),
    # Arrived after its event-time minute was closed (watermark minus allowed lateness):
    # stored and counted, but left out of the windowed metrics.
    "_late": pl.Boolean(),
}

EVENTS_SCHEMA: Final[dict[str, pl.DataType]] = {
    **CONTRACT_FIELDS,
    "ts": UTC_TS,
    **DERIVED_FIELDS,
    **KAFKA_FIELDS,
}

# Partial per-minute aggregates of a batch's events (processors/store/rollups.py): the
# keys, then measures that merge by sum (min/max for the times, bin counts for the
# histograms). Readers GROUP BY the keys: several rows may share a minute and keys.
MINUTE_ROLLUPS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "window_start": UTC_TS,  # the event-time minute
    "late": pl.Boolean(),  # rows of late events: in the rules, not in the metrics views
    "agent_id": pl.String(),
    "agent_version": pl.String(),
    "environment": pl.String(),
    "kind": pl.String(),
    "model": pl.String(),  # the event's own
    "prompt_version": pl.String(),  # the event's own
    "session_model": pl.String(),  # its session's first LLM call's, where it has none
    "session_prompt_version": pl.String(),  # likewise
    "tool_name": pl.String(),
    "resolution": pl.String(),  # of session ends
    "events": pl.Int64(),
    "errors": pl.Int64(),
    "violations": pl.Int64(),
    "blocked": pl.Int64(),
    "contained": pl.Int64(),  # session ends resolved without escalation
    "input_tokens": pl.Int64(),
    "output_tokens": pl.Int64(),
    "cache_read_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),  # of priced LLM calls; null when none was priced
    "priced_calls": pl.Int64(),
    "score_sum": pl.Float64(),  # feedback scores
    "scored": pl.Int64(),
    "first_ts": UTC_TS,
    "last_ts": UTC_TS,
    "latency_ms": HISTOGRAM_TYPE,
    "ttft_ms": HISTOGRAM_TYPE,  # time to first token of LLM calls
    "duration_s": HISTOGRAM_TYPE,  # of session ends: since the session's start
}

# On a minute rollup row: true while the hour and day tiers do not hold it yet (a batch
# lands it so; a maintenance pass adds it to them and clears it). NULL is false: rows
# written with their tiers at once.
UNTIERED: Final = "_untiered"

DEAD_LETTERS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "reason_code": pl.String(),
    "reason": pl.String(),
    **KAFKA_FIELDS,
    "key": pl.Binary(),
    "raw": pl.Binary(),
    "size_bytes": pl.Int64(),
}


# Append-only logs written by the alerting side; current state is derived from them.
ALERT_EVENTS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,  # when the transition happened
    "fingerprint": pl.String(),  # stable id of one alert: rule name + its labels
    "rule": pl.String(),
    "state": pl.String(),  # 'pending' | 'firing' | 'resolved'
    "severity": pl.String(),
    "agent_id": pl.String(),
    "labels": pl.String(),  # JSON object
    "annotations": pl.String(),  # JSON object
    "value": pl.Float64(),  # the condition's value at the transition
    "samples": pl.Int64(),  # how many observations the value rests on
    "starts_at": UTC_TS,  # when the condition first held (pending since)
}

ACTIONS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,
    "action_id": pl.String(),
    "alert_fingerprint": pl.String(),  # null for actions people take by hand
    "rule": pl.String(),
    "runbook": pl.String(),
    "step": pl.Int64(),
    "action": pl.String(),  # e.g. open_breaker, rollback, disable_tool, notify_owner
    "agent_id": pl.String(),
    "tool_name": pl.String(),
    "actor": pl.String(),  # 'rule:<name>' or 'person:<name>'
    "reason": pl.String(),
    "result": pl.String(),  # 'ok' | 'failed' | 'waiting' | 'skipped'
    "detail": pl.String(),  # JSON object
}

NOTIFICATIONS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,
    "notification_id": pl.String(),
    "receiver": pl.String(),
    "group_key": pl.String(),
    "status": pl.String(),  # 'sent' | 'failed' | 'suppressed'
    "attempts": pl.Int64(),
    "alert_fingerprints": pl.String(),  # JSON list
    "firing": pl.Int64(),
    "resolved": pl.Int64(),
    "error": pl.String(),
}

DRIFT_SCORES_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,  # when the test ran
    "window_end": UTC_TS,  # end of the current (candidate) window, event time
    "agent_id": pl.String(),
    "environment": pl.String(),
    "comparison": pl.String(),  # 'rolling' (reference period vs now) or 'release'
    "dimension": pl.String(),  # what differs in a release comparison: agent_version, ...
    "baseline": pl.String(),  # the reference: a period, or the stable version
    "candidate": pl.String(),  # the current window, or the canary version
    "signal": pl.String(),  # e.g. llm_latency_ms, tool_mix, escalation_rate
    "test": pl.String(),  # ks, wasserstein, psi, chi2, jensen_shannon, two_proportion
    "statistic": pl.Float64(),
    "p_value": pl.Float64(),  # null for distance scores
    "score": pl.Float64(),  # the value compared with the threshold
    "threshold": pl.Float64(),
    "verdict": pl.String(),  # 'ok' | 'drift' | 'insufficient_data'
    "n_ref": pl.Int64(),
    "n_cur": pl.Int64(),
}

# Samples of OTLP spans that did not map to events, with how many of their kind each
# request held: what OpenTelemetry ingest leaves out, and why (docs/opentelemetry.md).
OTLP_UNMAPPED_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,  # the span's end
    "reason": pl.String(),  # not_genai, unknown_operation, no_model, no_tool_name
    "scope": pl.String(),  # instrumentation scope
    "span_name": pl.String(),
    "service_name": pl.String(),
    "trace_id": pl.String(),
    "span_id": pl.String(),
    "attributes": pl.String(),  # JSON object, message content left out
    **KAFKA_FIELDS,
}

# The agent registry's history (alerts/governance/registry.py): one row per change of an
# agent's entry, with the entry as it stands after it (JSON) and the field-level diff.
CATALOG_CHANGES_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,
    "agent_id": pl.String(),
    "change": pl.String(),  # 'added' | 'changed' | 'removed' | 'retired'
    "actor": pl.String(),  # 'person:<name>' or 'catalog:<file>'
    "reason": pl.String(),
    "source": pl.String(),  # the catalog file the entry was read from
    "entry": pl.String(),  # JSON object: the whole entry after the change; null if removed
    "diff": pl.String(),  # JSON list of {"field", "before", "after"}
}

# Releases (alerts/governance/releases.py): registrations, approvals and rollout stages.
RELEASES_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,
    "agent_id": pl.String(),
    "version": pl.String(),  # the agent_version events carry
    "event": pl.String(),  # 'registered' | 'approved' | 'staged'
    "actor": pl.String(),
    "note": pl.String(),
    "prompt_versions": pl.List(pl.String()),
    "models": pl.List(pl.String()),
    "tools": pl.List(pl.String()),
    "tool_tiers": pl.String(),  # JSON object: tool name -> read | write | destructive
    "eval_file": pl.String(),
    "eval_sha256": pl.String(),
    "eval_score": pl.Float64(),
    "stage": pl.String(),  # 'canary' | 'full'
    "canary_share": pl.Float64(),
}

# Access reviews (alerts/governance/review.py): one row per agent per review.
ACCESS_REVIEWS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "ts": UTC_TS,
    "agent_id": pl.String(),
    "reviewer": pl.String(),
    "window_start": UTC_TS,
    "window_end": UTC_TS,
    "findings": pl.String(),  # JSON object, as `agents review --format json` prints it
}


# Tables of what the stream brings: landed with each batch of a topic-partition, in its
# transaction (the rollups' coarser tiers: by maintenance, from the landed minutes).
STREAM_TABLES: Final[dict[str, dict[str, pl.DataType]]] = {
    "events": EVENTS_SCHEMA,
    "dead_letters": DEAD_LETTERS_SCHEMA,
    "otlp_unmapped": OTLP_UNMAPPED_SCHEMA,
    "minute_rollups": {**MINUTE_ROLLUPS_SCHEMA, UNTIERED: pl.Boolean()},
    # The same rows cut to hours and days (rollups.TIERS), added by maintenance.
    "hour_rollups": MINUTE_ROLLUPS_SCHEMA,
    "day_rollups": MINUTE_ROLLUPS_SCHEMA,
}
# Append-only logs of the alerting and governance side.
LOG_TABLES: Final[dict[str, dict[str, pl.DataType]]] = {
    "alert_events": ALERT_EVENTS_SCHEMA,
    "actions": ACTIONS_SCHEMA,
    "notifications": NOTIFICATIONS_SCHEMA,
    "drift_scores": DRIFT_SCORES_SCHEMA,
    "catalog_changes": CATALOG_CHANGES_SCHEMA,
    "releases": RELEASES_SCHEMA,
    "access_reviews": ACCESS_REVIEWS_SCHEMA,
}
TABLE_SCHEMAS: Final[dict[str, dict[str, pl.DataType]]] = {**STREAM_TABLES, **LOG_TABLES}
