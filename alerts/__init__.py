"""Alert rules, notifications, runbooks and circuit breakers."""
