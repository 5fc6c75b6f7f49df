"""Agent-side emitter (SDK), the event contract and the simulated fleet."""

from agentwatch.ingest.contract.control import Keyring
from agentwatch.ingest.sdk.control import AgentHalted, ControlFollower
from agentwatch.ingest.sdk.tracer import Tracer

__all__ = ["AgentHalted", "ControlFollower", "Keyring", "Tracer"]
