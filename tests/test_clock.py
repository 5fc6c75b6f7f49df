"""One clock: every module that decides by time reads agentwatch/clock.py's, so a test or a
replay can stand in for it everywhere at once."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agentwatch", "ingest", "processors", "alerts", "dashboards")
# A definition of what time it is, or of the type of a function that says it.
DEFINITION = re.compile(r"^(def _?utc_now\(|Clock\s*(: TypeAlias)?\s*=)", re.MULTILINE)


def test_only_the_clock_module_defines_the_clock() -> None:
    defined = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if DEFINITION.search(path.read_text(encoding="utf-8"))
    ]
    assert defined == ["agentwatch/clock.py"]
