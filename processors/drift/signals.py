"""The signals drift is measured on, and the one query per family that counts them.

A family is a kind of row (LLM calls, tool calls, policy checks, feedback, all events,
ended sessions). Its query reads the family's rows once in a time range and returns, per
bucket of event time, agent, environment and release dimensions, how often each key of
each of its signals occurred: a histogram bin for a numeric signal, a category for a
mix, ``true``/``false`` for a rate. Those counts add up across buckets, so a reference of
days is a sum of precomputed bucket summaries, never a re-scan of its raw events.

Numeric signals are binned on a fixed grid per signal: logarithmic (24 bins a decade,
about 10% wide) for quantities with long tails such as latencies, tokens, cost and
duration; one bin per integer for counts; 0.05 wide for feedback scores. Values outside
the grid go to its first or last bin.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from agentwatch.processors.drift.stats import FloatArray, Kind
from agentwatch.processors.store.definitions import BLOCKED, ERROR, VIOLATION
from agentwatch.processors.store.tables import EVENTS_SCHEMA
from agentwatch.processors.store.views import SESSIONS

# Columns every family query groups by, besides the bucket.
GROUP_COLUMNS: Final = ("agent_id", "environment", "agent_version", "model", "prompt_version")
# Separates a split signal's subject from its key in the counting query.
SPLIT_MARK: Final = "\x1f"
# A call that did not fail: the latency and tokens of failed calls say nothing of drift.
CALL_OK: Final = f"NOT coalesce({ERROR}, false)"


@dataclass(frozen=True)
class Bins:
    """A fixed grid: ``count`` bins from ``lo``, each ``width`` wide (in log10 units if log)."""

    scale: Literal["log", "linear"]
    lo: float
    width: float
    count: int

    def sql(self, expr: str) -> str:
        """The bin index of ``expr`` as text, clipped into the grid."""
        if self.scale == "log":
            origin = float(np.log10(self.lo))
            raw = f"floor((log10(greatest({expr}, {self.lo!r})) - {origin!r}) / {self.width!r})"
        else:
            raw = f"floor(({expr} - {self.lo!r}) / {self.width!r})"
        return f"CAST(least(greatest({raw}, 0), {self.count - 1}) AS BIGINT)::VARCHAR"

    def values(self, index: np.ndarray) -> FloatArray:
        """Representative value of each bin: its centre (geometric centre if log)."""
        centre = np.asarray(index, dtype=np.float64) + 0.5
        if self.scale == "log":
            return np.asarray(self.lo * 10.0 ** (centre * self.width), dtype=np.float64)
        return np.asarray(self.lo + centre * self.width, dtype=np.float64)

    def positions(self, index: np.ndarray) -> FloatArray:
        """Where each bin sits for the tests: log10 of its value on a log grid.

        Distances such as Wasserstein are then measured in relative terms (a 20% slowdown
        is the same shift at 100 ms and at 10 s) and are not dominated by the long tail.
        """
        values = self.values(index)
        return np.asarray(np.log10(values), dtype=np.float64) if self.scale == "log" else values

    def edges(self) -> FloatArray:
        i = np.arange(self.count + 1, dtype=np.float64)
        if self.scale == "log":
            return np.asarray(self.lo * 10.0 ** (i * self.width), dtype=np.float64)
        return np.asarray(self.lo + i * self.width, dtype=np.float64)


def _log(lo: float, decades: int) -> Bins:
    return Bins("log", lo, 1.0 / 24.0, decades * 24)


MILLISECONDS: Final = _log(1.0, 7)  # 1 ms .. 10^7 ms
TOKENS: Final = _log(1.0, 7)
USD: Final = _log(1e-7, 9)  # 1e-7 .. 100 USD
SECONDS: Final = _log(0.01, 8)  # 10 ms .. 10^6 s
PER_SESSION: Final = Bins("linear", -0.5, 1.0, 501)  # 0, 1, ..., 500
SCORE: Final = Bins("linear", -1.025, 0.05, 241)  # -1.0, -0.95, ..., 11.0


@dataclass(frozen=True)
class Family:
    name: str
    source: Literal["events", "sessions"]
    where: str
    # Non-LLM events take the model and prompt version of their session's first LLM call.
    attributed: bool = True


FAMILIES: Final = {
    f.name: f
    for f in (
        Family("llm", "events", "kind = 'llm_call'", attributed=False),
        Family("tool", "events", "kind = 'tool_call'"),
        Family("policy", "events", "kind = 'policy_check'"),
        Family("feedback", "events", "kind = 'feedback'"),
        Family("events", "events", "true"),
        Family("session", "sessions", "ended_at IS NOT NULL"),
    )
}


@dataclass(frozen=True)
class Signal:
    """One measured quantity: the key its rows count under, and which rows count.

    ``expr`` is the value (numeric), the category (categorical) or the condition that
    makes a success (rate), over the family's rows that satisfy ``where``.
    """

    name: str
    kind: Kind
    family: str
    expr: str
    where: str
    description: str
    bins: Bins | None = None
    unit: str = ""
    # The rows of one session are alike (its intent picks its tools, its context grows):
    # tests then count sessions, not rows, as independent observations.
    clustered: bool = False
    # One test per value of this expression (e.g. tool_name): the signal is then named
    # ``name[value]`` in the results, so a failing tool is named, not averaged away.
    split: str | None = None

    def key_sql(self) -> str:
        if self.kind == "numeric":
            assert self.bins is not None
            key = self.bins.sql(self.expr)
        elif self.kind == "rate":
            key = f"CASE WHEN coalesce({self.expr}, false) THEN 'true' ELSE 'false' END"
        else:
            key = f"CAST({self.expr} AS VARCHAR)"
        if self.split is not None:
            return (
                f"CASE WHEN ({self.where}) AND {self.split} IS NOT NULL "
                f"THEN CAST({self.split} AS VARCHAR) || '{SPLIT_MARK}' || {key} END"
            )
        return f"CASE WHEN {self.where} THEN {key} END"


def _numeric(
    name: str,
    family: str,
    expr: str,
    where: str,
    bins: Bins,
    unit: str,
    description: str,
    clustered: bool = False,
    split: str | None = None,
) -> Signal:
    return Signal(name, "numeric", family, expr, f"({where}) AND {expr} IS NOT NULL",
                  description, bins, unit, clustered, split)  # fmt: skip


SIGNALS: Final = {
    s.name: s
    for s in (
        _numeric("llm_latency_ms", "llm", "latency_ms", CALL_OK, MILLISECONDS, "ms",
                 "latency of successful LLM calls"),
        _numeric("tool_latency_ms", "tool", "latency_ms", CALL_OK, MILLISECONDS, "ms",
                 "latency of successful tool calls", clustered=True),
        _numeric("input_tokens", "llm", "input_tokens", CALL_OK, TOKENS, "tokens",
                 "input tokens per successful LLM call", clustered=True),
        _numeric("output_tokens", "llm", "output_tokens", CALL_OK, TOKENS, "tokens",
                 "output tokens per successful LLM call"),
        _numeric("cost_per_session_usd", "session", "cost_usd", "true", USD, "USD",
                 "priced LLM cost of an ended session"),
        _numeric("llm_calls_per_session", "session", "llm_calls", "true", PER_SESSION, "calls",
                 "LLM calls of an ended session"),
        _numeric("tool_calls_per_session", "session", "tool_calls", "true", PER_SESSION,
                 "calls", "tool calls of an ended session"),
        _numeric("session_duration_s", "session", "duration_s", "true", SECONDS, "s",
                 "session duration, start to end"),
        _numeric("feedback_score", "feedback", "score", "true", SCORE, "score",
                 "feedback scores"),
        Signal("tool_mix", "categorical", "tool", "tool_name", "tool_name IS NOT NULL",
               "which tools are called (every call, failed ones too)", clustered=True),
        Signal("model_mix", "categorical", "llm", "model", "model IS NOT NULL",
               "which models are called"),
        Signal("resolution_mix", "categorical", "session", "resolution",
               "resolution IS NOT NULL", "how sessions end"),
        Signal("policy_outcome_mix", "categorical", "policy", "outcome", "outcome IS NOT NULL",
               "policy check outcomes: pass, violation, blocked"),
        Signal("error_type_mix", "categorical", "events", "coalesce(error_type, '(none)')",
               ERROR, "error types of events with status error or of kind error",
               clustered=True),
        Signal("intent_mix", "categorical", "session", "intent", "intent IS NOT NULL",
               "what users came for (sessions that give an intent)"),
        Signal("escalation_rate", "rate", "session", "escalated", "true",
               "share of ended sessions with an escalation"),
        Signal("containment_rate", "rate", "session", "contained", "contained IS NOT NULL",
               "share of ended sessions resolved without escalation"),
        Signal("violation_rate", "rate", "policy", VIOLATION, "true",
               "share of policy checks that found a violation (not blocked)"),
        Signal("block_rate", "rate", "policy", BLOCKED, "true",
               "share of policy checks that blocked the action"),
        Signal("error_rate", "rate", "events", ERROR, "true",
               "share of events with status error or of kind error"),
        Signal("tool_error_rate", "rate", "tool", ERROR, "true",
               "share of one tool's calls that failed", split="tool_name"),
        _numeric("tool_call_latency_ms", "tool", "latency_ms", CALL_OK, MILLISECONDS, "ms",
                 "latency of one tool's successful calls", split="tool_name"),
        Signal("security_rate", "rate", "events", "kind = 'security'", "true",
               "share of events that are security events (injection, jailbreak, ...)"),
        Signal("security_mix", "categorical", "events", "category",
               "kind = 'security' AND category IS NOT NULL",
               "categories of security events: prompt_injection, jailbreak, ..."),
    )
}  # fmt: skip


def base_signal(name: str) -> str:
    """``tool_error_rate`` for ``tool_error_rate[search_kb]``: the signal a result is of."""
    return name.split("[", 1)[0]


def signal_of(name: str) -> Signal:
    """The signal of a result's name, split (``name[subject]``) or not."""
    return SIGNALS[base_signal(name)]


# Suffix of the name under which the distinct sessions behind a signal's counts are kept.
SESSIONS_SUFFIX: Final = "#sessions"


def family_signals(family: str) -> list[Signal]:
    return [s for s in SIGNALS.values() if s.family == family]


# --------------------------------------------------------------------------- queries

_SESSIONS_FROM: Final = "FROM events\n"
assert SESSIONS.count(_SESSIONS_FROM) == 1 and SESSIONS.count("CREATE VIEW sessions") == 1


def _ts(value: dt.datetime) -> str:
    return f"TIMESTAMPTZ '{value.astimezone(dt.UTC).isoformat()}'"


def _str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def event_columns() -> list[str]:
    """The events columns that the sessions view and the signals read, found in their SQL.

    Copying only these into the temporary table makes it several times cheaper than all.
    """
    text = " ".join(
        [SESSIONS, *(f"{s.expr} {s.where}" for s in SIGNALS.values())]
        + [f.where for f in FAMILIES.values()]
    )
    fixed = {"ts", "kind", "session_id", "status", *GROUP_COLUMNS}
    return [c for c in EVENTS_SCHEMA if c in fixed or re.search(rf"\b{c}\b", text)]


def setup_statements(
    lo: dt.datetime, hi: dt.datetime, lookback: dt.timedelta, agent_id: str | None
) -> list[str]:
    """Temporary objects of one read-only connection: events in range, and their sessions.

    The range's events are read from the segments once into a temporary table that
    every family query then reads. ``drift_sessions`` is the store's own ``sessions``
    definition over those events only, so session properties mean exactly what they mean
    in SQL, without aggregating all of history to find the sessions that ended in range.
    """
    agent = f" AND agent_id = {_str(agent_id)}" if agent_id is not None else ""
    events = (
        f"CREATE TEMP TABLE drift_events AS SELECT {', '.join(event_columns())} FROM main.events "
        f"WHERE ts >= {_ts(lo - lookback)} AND ts < {_ts(hi)}{agent}"
    )
    sessions = SESSIONS.replace("CREATE VIEW sessions", "CREATE TEMP VIEW drift_sessions").replace(
        _SESSIONS_FROM, "FROM drift_events\n"
    )
    return [events, sessions]


def family_query(family: Family, lo: dt.datetime, hi: dt.datetime, grain_s: int) -> str:
    """Counts per (bucket, agent, environment, versions, signal, key) of one family.

    ``bucket`` is the bucket's number: floor(epoch seconds / grain). One scan of the
    family's rows; each row yields one key per signal through an unnest. A second
    grouping set gives, with a null key, the number of distinct sessions behind each
    signal's counts (see ``Signal.clustered``).
    """
    signals = family_signals(family.name)
    structs = ", ".join(f"{{'signal': {_str(s.name)}, 'key': {s.key_sql()}}}" for s in signals)
    grain_us = grain_s * 1_000_000
    if family.source == "sessions":
        time_col = "ended_at"
        source = "drift_sessions"
        dims = "agent_version, model, prompt_version"
    else:
        time_col = "ts"
        source = "drift_events"
        if family.attributed:
            source = (
                "drift_events LEFT JOIN (SELECT session_id, "
                "arg_min(model, ts) FILTER (WHERE kind = 'llm_call' AND model IS NOT NULL) "
                "AS session_model, "
                "arg_min(prompt_version, ts) FILTER "
                "(WHERE kind = 'llm_call' AND prompt_version IS NOT NULL) AS session_prompt "
                "FROM drift_events GROUP BY session_id) USING (session_id)"
            )
            dims = (
                "agent_version, coalesce(model, session_model) AS model, "
                "coalesce(prompt_version, session_prompt) AS prompt_version"
            )
        else:
            dims = "agent_version, model, prompt_version"
    keys = "bucket, agent_id, environment, agent_version, model, prompt_version, signal"
    return f"""
SELECT {keys}, key,
       CASE WHEN grouping(key) = 1 THEN count(DISTINCT session_id) ELSE count(*) END::BIGINT
           AS n
FROM (
    SELECT epoch_us({time_col}) // {grain_us} AS bucket,
           agent_id, coalesce(environment, 'prod') AS environment, {dims}, session_id,
           s['signal'] AS signal, s['key'] AS key
    FROM (
        SELECT *, unnest([{structs}]) AS s
        FROM {source}
        WHERE {time_col} >= {_ts(lo)} AND {time_col} < {_ts(hi)} AND ({family.where})
    )
)
WHERE key IS NOT NULL
GROUP BY GROUPING SETS (({keys}, key), ({keys}))
"""
