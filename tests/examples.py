"""The contract's example messages (../shared/contract/examples), the tests' fixtures."""

from __future__ import annotations

import json
from pathlib import Path

CONTRACT_DIR = Path(__file__).resolve().parents[2] / "shared" / "contract"


def valid_lines() -> list[bytes]:
    return (CONTRACT_DIR / "examples" / "valid.jsonl").read_bytes().splitlines()


def invalid_examples() -> list[tuple[str, bytes]]:
    cases = json.loads((CONTRACT_DIR / "examples" / "invalid.json").read_text())
    return [(c["why"], c["message"].encode()) for c in cases]
