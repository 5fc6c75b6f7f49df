"""Agent-side emitter (SDK), the event contract and the simulated fleet."""

from agentwatch.ingest.control import AgentHalted, ControlFollower
from agentwatch.ingest.tracer import Tracer

__all__ = ["AgentHalted", "ControlFollower", "Tracer"]
