"""Notifications: route, group, inhibit, silence, dedup and deliver alerts to receivers."""
