"""Housekeeping run by Celery Beat: pruning and the health report."""

from __future__ import annotations

import json
import time
from typing import Any

from workers import queues, registry
from workers.base import BaseTaskWithRetry
from workers.celery_app import celery_app
from workers.queue_depth import queue_depths
from workers.signals import redis_client

HEALTH_REPORT_KEY = "claw:health:report"


def cleanup(client: Any, now: float, dead_after: float) -> dict[str, Any]:
    """Forget workers that stopped heartbeating long ago. Result keys expire in Redis."""
    removed = registry.prune_dead(client, now - dead_after)
    return {"removed_workers": removed, "at": now}


def health_report(client: Any, now: float) -> dict[str, Any]:
    live = client.zrangebyscore(registry.WORKERS_SEEN, registry.live_since(now), "+inf")
    consumed: set[str] = set()
    for raw in client.hmget(registry.WORKERS_HASH, live) if live else []:
        if raw:
            consumed.update(json.loads(raw).get("queues", []))
    depths = queue_depths(client)
    unconsumed = sorted(q for q, depth in depths.items() if depth and q not in consumed)
    report = {
        "checked_at": now,
        "live_workers": sorted(live),
        "queue_depths": depths,
        "queues_without_consumer": unconsumed,
        "healthy": bool(live) and not unconsumed,
    }
    client.set(HEALTH_REPORT_KEY, json.dumps(report))
    return report


@celery_app.task(name=queues.CLEANUP_EXPIRED_RESULTS, base=BaseTaskWithRetry)
def cleanup_expired_results() -> dict[str, Any]:
    return cleanup(redis_client(), time.time(), dead_after=24 * 3600)


@celery_app.task(name=queues.CHECK_TASK_HEALTH, base=BaseTaskWithRetry)
def check_task_health() -> dict[str, Any]:
    return health_report(redis_client(), time.time())
