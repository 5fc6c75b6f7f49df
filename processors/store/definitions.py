"""What counts as an error, a violation, a block and a contained session: written once.

Each definition is data, conditions on the ``events`` columns (``sessions`` for
containment), and every form of it is derived from that data: the SQL predicate (the
views, the rollups, the rule metrics, the drift signals, the demo report, the incident
driver), the polars expression (the exporter, the session tracker) and, over a series
whose labels carry its column, the PromQL label matcher (the rule export, the
dashboards). So every number agrees, however it is computed. ``tests/test_definitions.py``
runs the forms over the same rows.

A policy check's ``outcome`` is ``pass``, ``violation`` (found, and let through) or
``blocked`` (found, and stopped); a *failed check* is either of the last two. Only
policy checks have an outcome, so no definition on it needs their kind. A *blocked
action* is a policy block or a security control's block (a security event with action
``blocked``): what ``agentwatch_blocked_actions_total`` and the dashboards' "Blocked
actions" count. A row a predicate leaves unknown (NULL) never counts.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # polars is imported when an expression is built: `agentwatch sql` needs none
    import polars as pl


@dataclass(frozen=True)
class Is:
    """``column`` equals ``value`` (a boolean column: is true, or is false)."""

    column: str
    value: str | bool

    def sql(self) -> str:
        if isinstance(self.value, bool):
            return self.column if self.value else f"NOT {self.column}"
        return f"{self.column} = '{self.value}'"

    def polars(self) -> pl.Expr:
        import polars as pl

        column = pl.col(self.column)
        if isinstance(self.value, bool):
            return column if self.value else ~column
        return column == self.value


@dataclass(frozen=True)
class Definition:
    """The rows that meet every condition of at least one of ``alternatives``."""

    name: str
    alternatives: tuple[tuple[Is, ...], ...]

    def __or__(self, other: Definition) -> Definition:
        return Definition(f"{self.name} or {other.name}", self.alternatives + other.alternatives)

    @property
    def sql(self) -> str:
        """The SQL predicate (NULL where a column it reads is NULL and decides it)."""
        parts = [" AND ".join(c.sql() for c in conditions) for conditions in self.alternatives]
        if len(parts) == 1:
            return parts[0]
        return "(" + " OR ".join(f"({p})" if " AND " in p else p for p in parts) + ")"

    def polars(self) -> pl.Expr:
        """The polars expression: true or false, never null (an unknown row does not count)."""
        import polars as pl

        return pl.any_horizontal(
            pl.all_horizontal(c.polars() for c in conditions) for conditions in self.alternatives
        ).fill_null(False)

    def holds(self, row: Mapping[str, object]) -> bool:
        """Whether one record (an event read one at a time, off the hot path) is counted."""
        return any(
            all(row.get(c.column) == c.value for c in conditions)
            for conditions in self.alternatives
        )

    def matcher(self, labels: Collection[str]) -> str:
        """The PromQL label matcher selecting these rows of a series with ``labels``.

        Only a definition on one text column, which the series carries as a label, has
        one (a matcher cannot or two labels together): the others have series of their
        own, such as ``agentwatch_errors_total``.
        """
        columns = {c.column for conditions in self.alternatives for c in conditions}
        values = [c.value for conditions in self.alternatives for c in conditions]
        column = next(iter(columns)) if len(columns) == 1 else None
        if (
            column is None
            or column not in labels
            or any(len(conditions) != 1 for conditions in self.alternatives)
            or not all(isinstance(v, str) and v.isidentifier() for v in values)
        ):
            raise ValueError(f"{self.name} is no label matcher over labels {sorted(labels)}")
        if len(values) == 1:
            return f"{column}={json.dumps(values[0])}"
        return f"{column}=~{json.dumps('|'.join(map(str, values)))}"


IS_ERROR: Final = Definition("error", ((Is("status", "error"),), (Is("kind", "error"),)))
"""An event that failed (``status`` error) or reports a failure (kind ``error``)."""

IS_VIOLATION: Final = Definition("violation", ((Is("outcome", "violation"),),))
"""A policy check that found a violation and let the action go ahead."""

IS_BLOCKED: Final = Definition("blocked", ((Is("outcome", "blocked"),),))
"""A policy check that found a violation and stopped the action."""

IS_FAILED_CHECK: Final = IS_VIOLATION | IS_BLOCKED
"""A policy check that did not pass: a violation, blocked or not."""

IS_SECURITY_BLOCK: Final = Definition(
    "security block", ((Is("kind", "security"), Is("action", "blocked")),)
)
"""A security event whose control stopped the action."""

IS_BLOCKED_ACTION: Final = IS_BLOCKED | IS_SECURITY_BLOCK
"""An action stopped by a policy check or by a security control."""

IS_CONTAINED: Final = Definition(
    "contained", ((Is("resolution", "resolved"), Is("escalated", False)),)
)
"""A session the agent resolved itself, without escalating to a person."""

ERROR: Final = IS_ERROR.sql
VIOLATION: Final = IS_VIOLATION.sql
BLOCKED: Final = IS_BLOCKED.sql
FAILED_CHECK: Final = IS_FAILED_CHECK.sql
SECURITY_BLOCK: Final = IS_SECURITY_BLOCK.sql
BLOCKED_ACTION: Final = IS_BLOCKED_ACTION.sql
CONTAINED: Final = IS_CONTAINED.sql

DEFINITIONS: Final = (
    IS_ERROR, IS_VIOLATION, IS_BLOCKED, IS_FAILED_CHECK, IS_SECURITY_BLOCK, IS_BLOCKED_ACTION,
    IS_CONTAINED,
)  # fmt: skip
"""Every definition, for the tests that hold their forms to the same rows."""


__all__ = [
    "BLOCKED",
    "BLOCKED_ACTION",
    "CONTAINED",
    "DEFINITIONS",
    "ERROR",
    "FAILED_CHECK",
    "IS_BLOCKED",
    "IS_BLOCKED_ACTION",
    "IS_CONTAINED",
    "IS_ERROR",
    "IS_FAILED_CHECK",
    "IS_SECURITY_BLOCK",
    "IS_VIOLATION",
    "SECURITY_BLOCK",
    "VIOLATION",
    "Definition",
    "Is",
]
