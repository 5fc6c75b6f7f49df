"""The wire formats agents and agentwatch agree on: trace events and control records."""
