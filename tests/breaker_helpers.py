"""What the breaker tests share: their start time and control messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agentwatch.ingest.contract.control import ControlMessage, new_message_id

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def msg(state: str | None = "open", *, tool: str | None = None, **kw: Any) -> ControlMessage:
    fields: dict[str, Any] = {
        "id": new_message_id(),
        "type": "breaker",
        "agent_id": "hr-assistant",
        "at": T0,
        "actor": "rule:PolicyBurst",
        "reason": "violations",
        "tool": tool,
        "state": state,
        "cooldown_s": 60.0,
    }
    fields.update(kw)
    return ControlMessage(**fields)
