"""The shipped JSON Schema agrees with the contract and with the processor's validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentwatch.ingest.contract.events import EVENT_TYPES, KINDS, SCHEMA_FILE, schema_text
from tests.conftest import in_ci
from tests.examples import (
    FIXTURES,
    SHARED_CONTRACT_DIR,
    contract_page,
    invalid_examples,
    valid_lines,
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_the_shipped_schema_file_is_generated_from_the_contract_types() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "regenerate it: agentwatch contract schema --out ingest/contract/event_schema.json"
    )


def test_every_kind_of_the_contract_page_has_a_type() -> None:
    page = contract_page()
    for kind in KINDS:
        assert f"| `{kind}` |" in page
    assert sorted(str(t.__struct_config__.tag) for t in EVENT_TYPES) == sorted(KINDS)


@pytest.mark.parametrize("name", ["EVENTS.md", "examples/valid.jsonl", "examples/invalid.json"])
def test_the_fixture_copy_matches_the_shared_contract(name: str) -> None:
    shared = SHARED_CONTRACT_DIR / name
    if not shared.exists():
        if in_ci():
            pytest.fail(f"CI=true but the shared contract is missing: {shared}")
        pytest.skip("the shared contract folder is not beside this checkout")
    assert (FIXTURES / Path(name).name).read_bytes() == shared.read_bytes()


@pytest.mark.parametrize("line", valid_lines(), ids=lambda b: json.loads(b)["event_id"])
def test_the_schema_accepts_every_valid_example(
    validator: jsonschema.Draft202012Validator, line: bytes
) -> None:
    assert list(validator.iter_errors(json.loads(line))) == []


def _json_messages() -> list[tuple[str, Any]]:
    out = []
    for why, message in invalid_examples():
        try:
            out.append((why, json.loads(message)))
        except json.JSONDecodeError:
            continue
    return out


@pytest.mark.parametrize(("why", "message"), _json_messages(), ids=lambda x: str(x)[:40])
def test_the_schema_rejects_every_invalid_example(
    validator: jsonschema.Draft202012Validator, why: str, message: Any
) -> None:
    assert not validator.is_valid(message), why
