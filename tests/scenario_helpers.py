"""What the scenario tests share: the instant a simulated fleet starts at, and the shipped
scenarios."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC).timestamp()
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
