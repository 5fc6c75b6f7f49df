"""Responses to alerts: runbooks, circuit breakers on the control topic, confirmations."""
