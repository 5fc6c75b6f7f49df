"""The agent-side SDK: the tracer, its background emitter and the breaker follower."""
