"""Notifications: webhook (signed JSON POST), email (SMTP) and in-app (inbox + live feed)."""

from __future__ import annotations

from typing import Any

from workers.celery_app import celery_app
from workers.core import queues
from workers.core.settings import Settings, get_settings
from workers.notify import inbox
from workers.notify.email import send_email
from workers.notify.validation import (
    EMAIL,
    IN_APP,
    WEBHOOK,
    NotificationInvalid,
    validate_notification,
    webhook_policy,
)
from workers.notify.webhook import post_json
from workers.runtime.base import BaseTaskWithRetry, PermanentError
from workers.runtime.clients import redis_client


def deliver(
    settings: Settings,
    *,
    channel: str,
    recipient: str,
    message: str,
    subject: str | None = None,
    data: dict[str, Any] | None = None,
    delivery_id: str | None = None,
) -> dict[str, Any]:
    """Send one notification on its channel; returns what the channel reported."""
    try:
        validate_notification(channel, recipient, settings)
    except NotificationInvalid as exc:
        # Normally caught at submission; a task sent by name from elsewhere fails clearly.
        raise PermanentError(f"invalid notification ({exc.field}): {exc.message}") from None
    subject = subject or "CLAW.AI notification"
    out: dict[str, Any] = {"channel": channel, "recipient": recipient, "delivered": True}
    if channel == WEBHOOK:
        assert settings.webhook_secret is not None  # checked by validate_notification
        payload = {"id": delivery_id, "subject": subject, "message": message, "data": data or {}}
        out.update(
            post_json(
                recipient, payload, secret=settings.webhook_secret.get_secret_value(),
                timeout=settings.webhook_timeout, policy=webhook_policy(settings),
                delivery_id=delivery_id,
            )
        )  # fmt: skip
    elif channel == EMAIL:
        out.update(send_email(settings, recipient, subject, message, message_id=delivery_id))
    elif channel == IN_APP:
        item = {"subject": subject, "message": message, "data": data or {}}
        stored = inbox.deliver(redis_client(), recipient, item, settings.inbox_max, delivery_id)
        out["duplicate"] = not stored
    return out


@celery_app.task(name=queues.SEND_NOTIFICATION, base=BaseTaskWithRetry, bind=True)
def send_notification(
    self: Any,
    channel: str,
    recipient: str,
    message: str,
    subject: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send `message` to `recipient` on `channel` (webhook, email or in_app)."""
    return deliver(
        get_settings(), channel=channel, recipient=recipient, message=message,
        subject=subject, data=data, delivery_id=self.request.id,
    )  # fmt: skip
