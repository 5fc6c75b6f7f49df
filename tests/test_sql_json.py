"""``agentwatch sql --format json`` writes JSON that any parser reads, losing nothing it
can keep: NaN and ±Infinity (which JSON has not) are null, BLOBs are base64."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentwatch.processors.query.sql import write_rows
from bench.traffic import Fleet, Profile, generate, write_store

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
BLOB = b"\xff\x00a\x80"


def strict_json(text: str) -> Any:
    """``text`` read as JSON.parse reads it: NaN, Infinity and -Infinity are errors."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def as_json(columns: list[str], row: tuple[Any, ...]) -> Any:
    out = io.StringIO()
    write_rows(columns, [row], "json", out)
    return strict_json(out.getvalue())


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    events = generate(Fleet({"hr-assistant": Profile(sessions_per_hour=5.0)}), START, 1)
    return write_store(events, tmp_path_factory.mktemp("lake"))


def test_nan_and_infinities_are_null() -> None:
    row = (float("nan"), float("inf"), float("-inf"), 1.5)
    assert as_json(["nan", "inf", "minus_inf", "finite"], row) == [
        {"nan": None, "inf": None, "minus_inf": None, "finite": 1.5}
    ]


def test_nan_inside_a_list_a_struct_or_a_map_is_null() -> None:
    row = ([1.0, float("nan")], {"x": float("inf")}, {1: float("-inf")})
    assert as_json(["l", "s", "m"], row) == [{"l": [1.0, None], "s": {"x": None}, "m": {"1": None}}]


def test_a_blob_is_base64_of_its_exact_bytes() -> None:
    [value] = as_json(["b"], (BLOB,))
    assert base64.b64decode(value["b"], validate=True) == BLOB


def test_the_command_writes_strict_json_for_floats_that_are_not_numbers(
    db: Path, tmp_path: Path
) -> None:
    sql = (
        "SELECT 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, '-inf'::FLOAT AS minus_inf, "
        "'\\xFF\\x00a\\x80'::BLOB AS blob, count(*) > 0 AS has_events FROM events"
    )
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "sql", "--db", str(db), "--format", "json", sql],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [row] = strict_json(done.stdout)
    assert row == {
        "nan": None,
        "inf": None,
        "minus_inf": None,
        "blob": base64.b64encode(BLOB).decode(),
        "has_events": True,
    }


def test_the_format_help_says_how_json_shows_them() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.cli", "sql", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    text = " ".join(done.stdout.split())
    assert "NaN nor Infinity: they are null" in text
    assert "BLOBs are base64" in text
