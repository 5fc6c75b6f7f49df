"""Analysts' views over ``events``: sessions and windowed metrics (being written)."""

from __future__ import annotations


def view_statements() -> list[str]:
    """CREATE VIEW statements, run after ``events`` and ``dead_letters`` exist."""
    return []
