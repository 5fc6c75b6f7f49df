"""Agent-side emitter (SDK), the event contract and the simulated fleet."""
