"""``breaker status`` says a breaker is confirmed once its agent's halt is in the store."""

from __future__ import annotations

import json
from pathlib import Path

from agentwatch.alerts.response.incident import confirmed_ids
from agentwatch.ingest.sdk.control import BREAKER_POLICY
from agentwatch.processors.store.location import METADATA_FILE
from tests.view_helpers import Row, event, land, session


def halt(control_id: str, outcome: str = "blocked", policy_id: str = BREAKER_POLICY) -> Row:
    attributes = json.dumps({"control_id": control_id, "call_kind": "tool_call"})
    return event("policy_check", "s1", 2, policy_id=policy_id, outcome=outcome,
                 attributes=attributes)  # fmt: skip


def stored(tmp_path: Path, *rows: Row) -> Path:
    land(tmp_path, [*session("s1", 0, 30), *rows]).close()
    return tmp_path / METADATA_FILE


def test_a_breaker_block_naming_the_message_confirms_it(tmp_path: Path) -> None:
    db = stored(tmp_path, halt("m1"))
    assert confirmed_ids(db, ["m1", "m2"]) == {"m1"}


def test_a_probe_or_another_policy_blocking_confirms_nothing(tmp_path: Path) -> None:
    db = stored(tmp_path, halt("m1", outcome="pass"), halt("m2", policy_id="pii"))
    assert confirmed_ids(db, ["m1", "m2"]) == set()


def test_without_a_store_confirmation_is_unknown(tmp_path: Path) -> None:
    assert confirmed_ids(tmp_path / METADATA_FILE, ["m1"]) is None
