"""Housekeeping run by Celery Beat: pruning expired records and the health report."""

from __future__ import annotations

import logging
import time
from typing import Any

import workers.runtime.failure_stats  # noqa: F401 - connects the per-minute failure counter
from workers.celery_app import celery_app
from workers.core import queues
from workers.core.settings import Settings, get_settings
from workers.notify.validation import NotificationInvalid, validate_notification
from workers.runtime import registry
from workers.runtime.base import BaseTaskWithRetry
from workers.runtime.clients import redis_client, task_index
from workers.runtime.health import health_report
from workers.runtime.recovery import recover_lost

logger = logging.getLogger(__name__)


def cleanup(client: Any, now: float, dead_after: float) -> dict[str, Any]:
    """Prune task records past their retention (with their indexes, counts and chunk
    lists) and forget workers silent for `dead_after` seconds. Result keys expire in
    Redis on their own (`result_expires`)."""
    removed_records = task_index().prune(now=now)
    removed_workers = registry.prune_dead(client, now - dead_after)
    return {
        "removed_task_records": removed_records,
        "removed_workers": removed_workers,
        "at": now,
    }


def send_alert(settings: Settings, report: dict[str, Any]) -> str | None:
    """Queue an ops notification for an unhealthy report; the task id, or None."""
    channel, recipient = settings.ops_alert_channel, settings.ops_alert_recipient
    if report["healthy"] or not channel or not recipient:
        return None
    try:
        validate_notification(channel, recipient, settings)
    except NotificationInvalid as exc:
        logger.error("ops alert channel misconfigured (%s): %s", exc.field, exc.message)
        return None
    result = celery_app.send_task(
        queues.SEND_NOTIFICATION,
        kwargs={
            "channel": channel,
            "recipient": recipient,
            "subject": f"CLAW.AI health: {len(report['problems'])} problem(s)",
            "message": "\n".join(report["problems"]),
            "data": {"health_report": report},
        },
    )
    return result.id


@celery_app.task(name=queues.CLEANUP_EXPIRED_RESULTS, base=BaseTaskWithRetry)
def cleanup_expired_results() -> dict[str, Any]:
    """Remove expired task records and long-dead workers; report what went."""
    return cleanup(redis_client(), time.time(), dead_after=get_settings().dead_worker_after)


@celery_app.task(name=queues.CHECK_TASK_HEALTH, base=BaseTaskWithRetry)
def check_task_health() -> dict[str, Any]:
    """Write the health report; alert the ops channel when something is wrong."""
    settings = get_settings()
    report = health_report(redis_client(), settings, time.time())
    report["alert_task_id"] = send_alert(settings, report)
    return report


@celery_app.task(name=queues.RECOVER_LOST_TASKS, base=BaseTaskWithRetry)
def recover_lost_tasks() -> dict[str, Any]:
    """Republish accepted tasks whose message vanished (see workers.runtime.recovery)."""
    settings = get_settings()
    recovered = recover_lost(
        celery_app, redis_client(), settings.task_recovery_grace,
        settings.broker_visibility_timeout,
    )  # fmt: skip
    return {"recovered": recovered}
