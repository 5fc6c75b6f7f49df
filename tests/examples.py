"""The contract's example messages, the tests' fixtures.

A copy lives in tests/fixtures/contract so the repository tests itself; when the shared
contract folder sits beside the repository, a test checks the copy is still the same.
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "contract"
SHARED_CONTRACT_DIR = Path(__file__).resolve().parents[2] / "shared" / "contract"


def valid_lines() -> list[bytes]:
    return (FIXTURES / "valid.jsonl").read_bytes().splitlines()


def invalid_examples() -> list[tuple[str, bytes]]:
    cases = json.loads((FIXTURES / "invalid.json").read_text())
    return [(c["why"], c["message"].encode()) for c in cases]


def contract_page() -> str:
    return (FIXTURES / "EVENTS.md").read_text()
