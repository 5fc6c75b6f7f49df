"""What counts as an error, a violation, a block and a contained session: written once.

The SQL views, the alert rules' metrics, the drift signals, the demo report and the
incident driver all count with these predicates over the ``events`` columns (and
``sessions`` for containment), so they agree on every number. A policy check's
``outcome`` is ``pass``, ``violation`` (found, and let through) or ``blocked`` (found,
and stopped); a *failed check* is either of the last two.
"""

from __future__ import annotations

from typing import Final

ERROR: Final = "(status = 'error' OR kind = 'error')"
"""An event that failed (``status`` error) or reports a failure (kind ``error``)."""

VIOLATION: Final = "outcome = 'violation'"
"""A policy check that found a violation and let the action go ahead."""

BLOCKED: Final = "outcome = 'blocked'"
"""A policy check that found a violation and stopped the action."""

FAILED_CHECK: Final = f"({VIOLATION} OR {BLOCKED})"
"""A policy check that did not pass: a violation, blocked or not."""

CONTAINED: Final = "resolution = 'resolved' AND NOT escalated"
"""A session the agent resolved itself, without escalating to a person."""


__all__ = ["BLOCKED", "CONTAINED", "ERROR", "FAILED_CHECK", "VIOLATION"]
