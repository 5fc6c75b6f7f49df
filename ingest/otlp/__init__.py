"""OpenTelemetry in: OTLP traces from any GenAI instrumentation become contract events."""
