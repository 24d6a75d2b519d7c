"""Notifications. The webhook, email and in-app channels arrive with issue #5."""

from __future__ import annotations

from typing import Any

from workers import queues
from workers.base import BaseTaskWithRetry, PermanentError
from workers.celery_app import celery_app


@celery_app.task(name=queues.SEND_NOTIFICATION, base=BaseTaskWithRetry)
def send_notification(channel: str, recipient: str, message: str, **_: Any) -> dict[str, Any]:
    raise PermanentError("notification channels are not implemented yet (issue #5)")
