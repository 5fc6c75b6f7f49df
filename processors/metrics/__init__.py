"""Prometheus metrics computed from landed batches."""
