"""Interop with Prometheus and Alertmanager: exported rules and the webhook receiver."""
