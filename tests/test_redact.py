"""Redaction before storage: a corpus per detector, its known false positives, the pipeline.

Each detector has texts it must redact and texts it must leave alone. ``FALSE_POSITIVES``
names what the detectors are known to take wrongly, so a change in them shows here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwatch.processors.landing.decode import RawBatch
from agentwatch.processors.landing.pipeline import (
    LandingSettings,
    PartitionState,
    land_batch,
    metric_deltas,
)
from agentwatch.processors.landing.redact import (
    DETECTORS,
    RedactionConfig,
    RedactionError,
    Redactor,
    load_redaction,
)
from agentwatch.processors.metrics.exporter import CounterDelta
from tests.frames import events

# rule -> (texts with the secret in them, texts without)
CORPUS: dict[str, tuple[list[str], list[str]]] = {
    "email": (
        ["write to jane.doe+hr@example.co.uk today", "cc: a_b@mail.example.org"],
        ["user@localhost has no domain", "the @ sign alone", "version 1.2@3"],
    ),
    "phone": (
        [
            "call +44 20 7946 0958",
            "reach me at (415) 555-0132",
            "office 415-555-0132",
            "+1.415.555.0132",
        ],
        ["ticket HND-482910", "order 12345", "2026-11-20", "v10.0.19041"],
    ),
    "payment_card": (
        [
            "card 4111 1111 1111 1111 exp 12/29",
            "paid with 5500-0000-0000-0004",
            "amex 378282246310005",
        ],
        ["4111 1111 1111 1112 fails the Luhn check", "tracking 1234567890123"],
    ),
    "iban": (
        ["pay to DE89 3704 0044 0532 0130 00", "IBAN GB29NWBK60161331926819"],
        ["DE89 alone", "ABC123"],
    ),
    "national_id": (
        ["SSN 123-45-6789", "NI number AB 12 34 56 C"],
        ["000-12-3456 is not a valid SSN", "666-12-3456 neither", "123-00-4567 neither"],
    ),
    "api_key": (
        [
            "key sk-proj-abcdefghijklmnopqrstuvwx",
            "AKIAIOSFODNN7EXAMPLE in the config",
            "ghp_" + "a" * 36,
        ],
        ["sk-short", "the AKIA prefix alone"],
    ),
    "token": (
        [
            "Authorization: Bearer abcdefghijklmnop0123",
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ],
        ["bearer of bad news", "eyJ alone"],
    ),
}

# Known false positives: text the detectors redact although it is not personal data.
FALSE_POSITIVES: dict[str, list[str]] = {
    "phone": ["build +1 2024 11 20", "order +12 345 678"],
    "payment_card": ["shipment 4242 4242 4242 4242 is a test number that passes Luhn"],
    "iban": ["part number AB12 CDEF GHIJ KLMN looks like an IBAN"],
    "national_id": ["range 123-45-6789 written as a ticket id"],
}


def config(**keys: Any) -> RedactionConfig:
    return msgspec.convert(keys, RedactionConfig)


EVERY_RULE = Redactor(config(fields={"reason": ["*"]}))


def redact(
    text: str, redactor: Redactor = EVERY_RULE, agent: str = "a1"
) -> tuple[str, dict[str, int]]:
    frame = events({"agent_id": agent, "kind": "escalation", "reason": text})
    out = redactor.events(frame)
    counts = {r["rule"]: r["count"] for r in out.counts.iter_rows(named=True)}
    return out.frame["reason"][0], counts


@pytest.mark.parametrize(
    ("rule", "text"), [(rule, t) for rule, (hits, _) in CORPUS.items() for t in hits]
)
def test_each_detector_redacts_its_corpus(rule: str, text: str) -> None:
    redacted, counts = redact(text)
    assert f"[REDACTED:{rule}]" in redacted, redacted
    assert counts.get(rule, 0) >= 1


@pytest.mark.parametrize(
    ("rule", "text"), [(rule, t) for rule, (_, misses) in CORPUS.items() for t in misses]
)
def test_each_detector_leaves_its_near_misses_alone(rule: str, text: str) -> None:
    redacted, _ = redact(text)
    assert f"[REDACTED:{rule}]" not in redacted, redacted


@pytest.mark.parametrize(
    ("rule", "text"), [(rule, t) for rule, texts in FALSE_POSITIVES.items() for t in texts]
)
def test_the_known_false_positives_are_still_redacted(rule: str, text: str) -> None:
    redacted, _ = redact(text)
    assert f"[REDACTED:{rule}]" in redacted, redacted


def test_every_detector_has_a_corpus() -> None:
    assert set(CORPUS) == set(DETECTORS)


def test_redacted_json_attributes_stay_valid_json() -> None:
    redactor = Redactor(RedactionConfig())
    attrs = json.dumps({"user": "jane@example.com", "card": "4111 1111 1111 1111"})
    frame = events({"agent_id": "a1", "kind": "tool_call", "tool_name": "t", "attributes": attrs})
    out = json.loads(redactor.events(frame).frame["attributes"][0])
    assert out == {"user": "[REDACTED:email]", "card": "[REDACTED:payment_card]"}


def test_a_custom_rule_and_a_per_agent_exception() -> None:
    redactor = Redactor(
        config(
            fields={"reason": ["*"]},
            custom=[{"name": "employee_id", "pattern": r"EMP-\d{6}"}],
            agents={"helpdesk-1": {"off": ["phone"]}},
        )
    )
    assert redact("EMP-123456 at 415-555-0132", redactor)[0] == (
        "[REDACTED:employee_id] at [REDACTED:phone]"
    )
    assert redact("EMP-123456 at 415-555-0132", redactor, "helpdesk-1")[0] == (
        "[REDACTED:employee_id] at 415-555-0132"
    )


def test_a_field_redacted_for_one_agent_only() -> None:
    redactor = Redactor(config(fields={}, agents={"legal-1": {"fields": {"intent": ["email"]}}}))
    frame = events(
        {"agent_id": "legal-1", "kind": "session_start", "intent": "a@b.example"},
        {"agent_id": "hr-1", "kind": "session_start", "intent": "a@b.example"},
    )
    assert redactor.events(frame).frame["intent"].to_list() == ["[REDACTED:email]", "a@b.example"]


def test_an_unknown_rule_or_field_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(RedactionError, match="unknown rule\\(s\\) \\['e-mail'\\]; known: api_key"):
        Redactor(config(fields={"reason": ["e-mail"]}))
    with pytest.raises(RedactionError, match="'latency_ms' is not a text field"):
        Redactor(config(fields={"latency_ms": ["*"]}))
    path = tmp_path / "redaction.yaml"
    path.write_text("fields: {reason: ['*']}\nenabeld: true\n")
    with pytest.raises(
        RedactionError, match=r"redaction\.yaml: enabeld: unknown key \(did you mean enabled\?\)$"
    ):
        load_redaction(path)


def test_a_bad_custom_pattern_is_refused() -> None:
    with pytest.raises(RedactionError, match=r"custom\.bad\.pattern: not a valid regex") as caught:
        Redactor(config(custom=[{"name": "bad", "pattern": "(?<=x)y"}]))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"name": "", "pattern": r"EMP-\d{6}"}, "name"),
        ({"name": "employee_id", "pattern": ""}, "pattern"),
    ],
)
def test_a_custom_rule_with_an_empty_name_or_pattern_is_refused_naming_the_key(
    tmp_path: Path, rule: dict[str, str], key: str
) -> None:
    path = tmp_path / "redaction.yaml"
    path.write_text(
        f"custom:\n  - {{name: ticket_id, pattern: 'TCK-[0-9]+'}}\n  - {json.dumps(rule)}\n"
    )
    with pytest.raises(RedactionError) as caught:
        load_redaction(path)
    assert str(caught.value) == f"{path}: custom[1].{key}: must not be empty"


def test_the_shipped_examples_load_once_uncommented(tmp_path: Path) -> None:
    """The commented examples of the shipped file, switched on as a user would."""
    shipped = (Path(__file__).parents[1] / "processors/landing/redaction.yaml").read_text()
    lines = shipped.replace("custom: []", "custom:").replace("agents: {}", "agents:")
    uncommented = "\n".join(
        line[1:] if line.startswith("#  ") else line for line in lines.splitlines()
    )
    path = tmp_path / "redaction.yaml"
    path.write_text(uncommented)
    redactor = load_redaction(path)
    assert redactor.steps


def test_the_shipped_config_loads() -> None:
    assert load_redaction().steps


# --------------------------------------------------------------------------- the pipeline


def raw(*messages: bytes) -> RawBatch:
    n = len(messages)
    return RawBatch("t", 0, list(range(n)), [0] * n, [None] * n, list(messages))


def test_the_pipeline_stores_and_counts_only_redacted_text() -> None:
    event = {
        "schema_version": 1, "event_id": "e1", "ts": "2026-11-20T09:00:00Z", "kind": "escalation",
        "agent_id": "hr-1", "session_id": "s1", "reason": "member jane@example.com disputes",
    }  # fmt: skip
    bad = b'{"kind": "escalation", "note": "card 4111 1111 1111 1111"}'
    settings = LandingSettings(max_message_bytes=1 << 20, redactor=load_redaction())
    state = PartitionState.rebuilt(settings, pl.DataFrame(schema=events().schema))
    landed = land_batch(raw(json.dumps(event).encode(), bad), state, settings, lambda f: f)
    assert landed.events["reason"].to_list() == ["member [REDACTED:email] disputes"]
    stored_raw = landed.dead_letters["raw"][0].decode()
    assert "4111" not in stored_raw and "[REDACTED:payment_card]" in stored_raw
    deltas = {
        (d.spec.name, labels): value
        for d in metric_deltas([landed])
        if isinstance(d, CounterDelta) and d.spec.name == "agentwatch_redactions_total"
        for labels, value in d.rows
    }
    assert deltas == {
        ("agentwatch_redactions_total", ("email", "reason")): 1.0,
        ("agentwatch_redactions_total", ("payment_card", "dead_letters.raw")): 1.0,
    }


def test_a_dead_letter_that_is_not_utf8_is_kept_without_its_raw_bytes() -> None:
    settings = LandingSettings(max_message_bytes=1 << 20, redactor=load_redaction())
    state = PartitionState.rebuilt(settings, pl.DataFrame(schema=events().schema))
    landed = land_batch(raw(b"\xff\xfenot even text", b"{}"), state, settings, lambda f: f)
    assert landed.dead_letters.height == 2
    assert landed.dead_letters["raw"].to_list()[0] is None
    assert landed.dead_letters["raw"].to_list()[1] == b"{}"


_TEXTS = [t for hits, misses in CORPUS.values() for t in (*hits, *misses)] + [
    "nothing to see here",
    "",
]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a1", "helpdesk-1"]), st.sampled_from(_TEXTS) | st.none()),
        min_size=1,
        max_size=12,
    )
)
def test_a_batch_is_redacted_as_each_of_its_rows_alone(rows: list[tuple[str, str | None]]) -> None:
    """Only the rows some pattern matches are searched rule by rule; the others must
    come out as they went in, wherever they sit in the batch."""
    redactor = Redactor(config(fields={"reason": ["*"]}, agents={"helpdesk-1": {"off": ["phone"]}}))
    frame = events(*({"agent_id": a, "kind": "escalation", "reason": t} for a, t in rows))
    together = redactor.events(frame)
    alone = [redactor.events(frame.slice(i, 1)) for i in range(frame.height)]
    assert together.frame.to_dicts() == [r.frame.to_dicts()[0] for r in alone]
    assert together.counts["count"].sum() == sum(r.counts["count"].sum() for r in alone)


def test_redaction_off_leaves_the_text() -> None:
    redactor = Redactor(RedactionConfig(enabled=False))
    assert redact("jane@example.com", redactor)[0] == "jane@example.com"
