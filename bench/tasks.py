"""A no-op task on our Celery app, for our workers: `celery ... worker -I bench.tasks -Q bench`."""

from __future__ import annotations

import time

from bench.common import QUEUE
from workers.celery_app import celery_app
from workers.runtime.base import BaseTaskWithRetry

__all__ = ["QUEUE", "noop"]


# On the base every platform task has: the claim before running, retries.
@celery_app.task(name="bench.noop", base=BaseTaskWithRetry)
def noop() -> float:
    return time.time()
