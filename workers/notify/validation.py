"""Checks a notification before it is queued: unknown channels and bad addresses are
refused at submission, not left to fail in a worker. No I/O (no DNS)."""

from __future__ import annotations

import re

from workers.core.settings import Settings
from workers.notify.targets import TargetPolicy, TargetRefused, check_literal

WEBHOOK = "webhook"
EMAIL = "email"
IN_APP = "in_app"
CHANNELS = (WEBHOOK, EMAIL, IN_APP)

_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
_USER_ID = re.compile(r"^[\w.:@-]{1,200}$")


class NotificationInvalid(ValueError):
    """A notification that cannot be sent; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def webhook_policy(settings: Settings) -> TargetPolicy:
    return TargetPolicy.from_settings(
        settings.allow_private_webhook_targets, settings.webhook_allowed_networks
    )


def validate_notification(channel: str, recipient: str, settings: Settings) -> None:
    """Raise NotificationInvalid unless `recipient` is a valid address on `channel`.

    webhook: an http(s) URL whose host is not a forbidden literal address (names are
    resolved and checked again at delivery); email: an address, with SMTP configured;
    in_app: a user id.
    """
    if channel not in CHANNELS:
        raise NotificationInvalid("channel", f"unknown channel {channel!r}; one of {CHANNELS}")
    if not recipient:
        raise NotificationInvalid("recipient", "recipient is required")
    if channel == WEBHOOK:
        if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
            raise NotificationInvalid("channel", "webhooks are not configured (WEBHOOK_SECRET)")
        try:
            check_literal(recipient, webhook_policy(settings))
        except TargetRefused as exc:
            raise NotificationInvalid("recipient", str(exc)) from None
    elif channel == EMAIL:
        if not _EMAIL.match(recipient):
            raise NotificationInvalid("recipient", f"not an email address: {recipient!r}")
        if not settings.smtp_host:
            raise NotificationInvalid("channel", "email is not configured (SMTP_HOST)")
    elif not _USER_ID.match(recipient):
        raise NotificationInvalid("recipient", f"not a user id: {recipient!r}")
