"""Notification channels: webhook, email and in-app, plus their validation."""
