"""The processor's decoder: the contract's examples, and the edges of bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest

from agentwatch.processors.landing.decode import RawBatch, decode_batch, validate
from agentwatch.processors.store.tables import DEAD_LETTERS_SCHEMA, EVENTS_SCHEMA
from tests.examples import invalid_examples, valid_lines

EXPECTED_CODE = {
    "not JSON": "not_json",
    "not an object": "not_object",
    "missing required field event_id": "missing_field",
    "missing required field for kind llm_call: model": "missing_field",
    "unknown kind": "unknown_kind",
    "wrong type: input_tokens is a string": "wrong_type",
    "negative output_tokens": "negative_value",
    "ts does not parse": "bad_timestamp",
    "unknown policy outcome": "unknown_value",
    "unknown resolution": "unknown_value",
    "schema_version unknown": "unsupported_schema_version",
    "empty agent_id": "empty_value",
}


def batch_of(values: list[bytes | None], partition: int = 0) -> RawBatch:
    n = len(values)
    return RawBatch(
        topic="agent-events",
        partition=partition,
        offsets=list(range(100, 100 + n)),
        timestamps_ms=[1_763_629_200_000 + i for i in range(n)],
        keys=[b"k"] * n,
        values=values,
    )


@pytest.mark.parametrize("line", valid_lines(), ids=lambda b: json.loads(b)["event_id"])
def test_every_valid_example_is_accepted(line: bytes) -> None:
    assert validate(line, 256 * 1024) is None


@pytest.mark.parametrize(("why", "message"), invalid_examples(), ids=lambda x: str(x)[:40])
def test_every_invalid_example_is_rejected_with_its_reason(why: str, message: bytes) -> None:
    verdict = validate(message, 256 * 1024)
    assert verdict is not None
    code, reason = verdict
    assert code == EXPECTED_CODE[why]
    assert reason.startswith(code)


def test_the_invalid_examples_are_all_known_to_this_test() -> None:
    assert {why for why, _ in invalid_examples()} == set(EXPECTED_CODE)


def test_reasons_name_the_offending_field() -> None:
    reasons = {why: validate(m, 256 * 1024) for why, m in invalid_examples()}
    assert "`event_id`" in reasons["missing required field event_id"][1]  # type: ignore[index]
    assert "`model`" in reasons["missing required field for kind llm_call: model"][1]  # type: ignore[index]
    assert "$.output_tokens" in reasons["negative output_tokens"][1]  # type: ignore[index]


def test_a_mixed_batch_splits_into_events_and_dead_letters_in_offset_order() -> None:
    valid = valid_lines()
    invalid = [m for _, m in invalid_examples()]
    values: list[bytes | None] = [valid[0], invalid[0], valid[1], invalid[1], valid[2]]
    decoded = decode_batch(batch_of(values))
    assert decoded.events["_offset"].to_list() == [100, 102, 104]
    assert decoded.dead_letters["_offset"].to_list() == [101, 103]
    assert decoded.dead_letters["raw"].to_list() == [invalid[0], invalid[1]]
    assert decoded.events.schema == pl.Schema(EVENTS_SCHEMA)
    assert decoded.dead_letters.schema == pl.Schema(DEAD_LETTERS_SCHEMA)


def test_all_valid_examples_decode_to_their_field_values() -> None:
    decoded = decode_batch(batch_of(list(valid_lines())))
    assert decoded.dead_letters.is_empty()
    first_llm = decoded.events.filter(pl.col("event_id") == "ex-0002").row(0, named=True)
    assert first_llm["model"] == "gpt-4o-mini"
    assert first_llm["input_tokens"] == 1180
    assert first_llm["latency_ms"] == pytest.approx(812.4)
    assert first_llm["ts"].isoformat() == "2026-11-20T09:00:00.850000+00:00"


def test_timestamps_with_offsets_are_normalised_to_utc() -> None:
    decoded = decode_batch(batch_of(list(valid_lines())))
    row = decoded.events.filter(pl.col("event_id") == "ex-0008").row(0, named=True)
    assert row["ts"].isoformat() == "2026-11-20T08:01:00+00:00"


def test_missing_environment_and_status_take_the_contract_defaults() -> None:
    event = json.loads(valid_lines()[0])
    del event["environment"]
    decoded = decode_batch(batch_of([json.dumps(event).encode()]))
    assert decoded.events.row(0, named=True)["environment"] == "prod"
    assert decoded.events.row(0, named=True)["status"] == "ok"


def test_attributes_are_kept_as_json_text() -> None:
    event = json.loads(valid_lines()[0]) | {"attributes": {"ticket": "INC-7", "n": [1, 2]}}
    decoded = decode_batch(batch_of([json.dumps(event).encode()]))
    assert json.loads(decoded.events["attributes"][0]) == {"ticket": "INC-7", "n": [1, 2]}


def test_pretty_printed_json_is_accepted() -> None:
    event = json.loads(valid_lines()[1])
    decoded = decode_batch(batch_of([json.dumps(event, indent=2).encode()]))
    assert decoded.events.height == 1
    assert decoded.events["model"][0] == "gpt-4o-mini"


def test_unknown_extra_fields_are_accepted() -> None:
    event = json.loads(valid_lines()[0]) | {"gateway_region": "eu-west-1"}
    assert decode_batch(batch_of([json.dumps(event).encode()])).events.height == 1


def test_oversized_message_is_a_dead_letter_with_its_size() -> None:
    event = json.loads(valid_lines()[0]) | {"attributes": {"blob": "x" * 2000}}
    raw = json.dumps(event).encode()
    decoded = decode_batch(batch_of([raw]), max_bytes=1024)
    assert decoded.events.is_empty()
    row = decoded.dead_letters.row(0, named=True)
    assert row["reason_code"] == "too_large"
    assert row["size_bytes"] == len(raw)
    assert row["raw"] == raw


def test_invalid_utf8_is_a_dead_letter() -> None:
    decoded = decode_batch(batch_of([b'{"kind": "\xff"}']))
    assert decoded.dead_letters["reason_code"].to_list() == ["not_utf8"]


def test_empty_value_is_a_dead_letter() -> None:
    decoded = decode_batch(batch_of([None]))
    assert decoded.dead_letters["reason_code"].to_list() == ["empty_message"]
    assert decoded.dead_letters["raw"].to_list() == [b""]


def test_naive_timestamp_without_offset_is_rejected() -> None:
    event = json.loads(valid_lines()[0]) | {"ts": "2026-11-20T09:00:00"}
    assert validate(json.dumps(event).encode(), 1 << 20) is not None


def test_boolean_is_not_an_integer() -> None:
    event = json.loads(valid_lines()[1]) | {"input_tokens": True}
    verdict = validate(json.dumps(event).encode(), 1 << 20)
    assert verdict is not None and verdict[0] == "wrong_type"


def test_an_empty_batch_gives_empty_frames() -> None:
    decoded = decode_batch(batch_of([]))
    assert decoded.events.is_empty() and decoded.dead_letters.is_empty()


def _of_kind(kind: str) -> dict[str, object]:
    return next(e for e in map(json.loads, valid_lines()) if e["kind"] == kind)


# A field the contract defines on one kind, sent with a bad value on another kind.
CROSS_KIND = [
    ("session_start", "input_tokens", -5, "negative_value"),
    ("llm_call", "resolution", "nonsense", "unknown_value"),
    ("llm_call", "severity", "urgent", "unknown_value"),
    ("tool_call", "severity", "urgent", "unknown_value"),
    ("session_end", "outcome", "maybe", "unknown_value"),
    ("feedback", "action", "ignored", "unknown_value"),
    ("tool_call", "cost_usd", -0.5, "negative_value"),
    ("escalation", "time_to_first_token_ms", -1, "negative_value"),
    ("session_start", "output_tokens", "many", "wrong_type"),
    ("error", "score", "high", "wrong_type"),
    ("policy_check", "model", 7, "wrong_type"),
    ("security", "tool_name", ["a"], "wrong_type"),
    ("session_end", "channel", {"web": 1}, "wrong_type"),
    ("llm_call", "intent", 3.5, "wrong_type"),
]


@pytest.mark.parametrize(("kind", "field", "value", "code"), CROSS_KIND)
def test_a_contract_field_is_checked_on_every_kind(
    kind: str, field: str, value: object, code: str
) -> None:
    event = _of_kind(kind) | {field: value}
    decoded = decode_batch(batch_of([json.dumps(event).encode()]))
    assert decoded.events.is_empty()
    assert decoded.dead_letters["reason_code"].to_list() == [code]
    assert f"$.{field}" in decoded.dead_letters["reason"][0]


def test_a_valid_contract_field_on_another_kind_lands_in_its_column() -> None:
    event = _of_kind("security") | {"outcome": "blocked", "tool_name": "kb.search"}
    decoded = decode_batch(batch_of([json.dumps(event).encode()]))
    row = decoded.events.row(0, named=True)
    assert (row["outcome"], row["tool_name"]) == ("blocked", "kb.search")


def test_every_typed_column_is_a_field_the_contract_checks() -> None:
    from agentwatch.ingest.contract.events import contract_fields
    from agentwatch.processors.store.tables import CONTRACT_FIELDS

    assert set(CONTRACT_FIELDS) <= set(contract_fields()) | {"kind"}


# Edges the column checks (ts text, raw attributes, 64-bit integers) hand to the contract
# decoder: each dead letter carries exactly the verdict ``validate`` gives the message.
COLUMN_EDGES = {
    "leap second": {"ts": "2026-11-20T09:00:60Z"},
    "naive timestamp": {"ts": "2026-11-20T09:00:00"},
    "impossible date": {"ts": "2026-02-30T09:00:00Z"},
    "ts is a number": {"ts": 1_763_629_200},
    "attributes is a string": {"attributes": "ticket"},
    "attributes is a list": {"attributes": [1, 2]},
    "attributes is a number": {"attributes": 7},
}


@pytest.mark.parametrize("edge", sorted(COLUMN_EDGES))
def test_a_message_the_column_checks_doubt_gets_the_contract_decoders_verdict(edge: str) -> None:
    raw = json.dumps(json.loads(valid_lines()[0]) | COLUMN_EDGES[edge]).encode()
    decoded = decode_batch(batch_of([valid_lines()[1], raw]))
    assert decoded.events["_offset"].to_list() == [100]
    letter = decoded.dead_letters.row(0, named=True)
    assert (letter["reason_code"], letter["reason"]) == validate(raw, 256 * 1024)


def test_invalid_utf8_inside_attributes_is_a_dead_letter() -> None:
    raw = json.dumps(json.loads(valid_lines()[0]) | {"attributes": {"note": "X"}}).encode()
    raw = raw.replace(b'"X"', b'"\xff"')
    decoded = decode_batch(batch_of([raw]))
    assert decoded.dead_letters["reason_code"].to_list() == ["not_utf8"]


def test_an_integer_over_64_bits_is_a_dead_letter_and_its_batch_still_lands() -> None:
    event = json.loads(valid_lines()[1]) | {"input_tokens": 2**63}
    decoded = decode_batch(batch_of([valid_lines()[1], json.dumps(event).encode()]))
    assert decoded.events["_offset"].to_list() == [100]
    assert decoded.dead_letters["reason_code"].to_list() == ["unreadable"]
    assert "`input_tokens`" in decoded.dead_letters["reason"][0]


def test_a_timestamp_form_only_the_contract_decoder_reads_still_lands() -> None:
    event = json.loads(valid_lines()[0]) | {"ts": "2026-11-20 09:00:00.5+01:00"}
    raw = json.dumps(event).encode()
    assert validate(raw, 256 * 1024) is None
    decoded = decode_batch(batch_of([raw]))
    assert decoded.events["ts"][0].isoformat() == "2026-11-20T08:00:00.500000+00:00"


def test_null_attributes_are_a_null_column_value() -> None:
    event = json.loads(valid_lines()[0]) | {"attributes": None}
    decoded = decode_batch(batch_of([json.dumps(event).encode()]))
    assert decoded.events["attributes"].to_list() == [None]
