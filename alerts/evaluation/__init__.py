"""Rule evaluation: measurements in, alert transitions out, and their Prometheus view."""
