"""Agent-side emitter (SDK), the event contract and the simulated fleet.

The SDK's names are imported when first used, so a command that needs only the
contract (most of the CLI) does not load the tracer, the emitter and the follower.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentwatch.ingest.contract.control import Keyring
    from agentwatch.ingest.sdk.control import AgentHalted, ControlFollower
    from agentwatch.ingest.sdk.tracer import Tracer

__all__ = ["AgentHalted", "ControlFollower", "Keyring", "Tracer"]

_HOMES = {
    "AgentHalted": "agentwatch.ingest.sdk.control",
    "ControlFollower": "agentwatch.ingest.sdk.control",
    "Keyring": "agentwatch.ingest.contract.control",
    "Tracer": "agentwatch.ingest.sdk.tracer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
