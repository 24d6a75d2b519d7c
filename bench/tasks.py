"""Tasks on our Celery app for our workers (`celery ... worker -I bench.tasks -Q bench`): a
no-op, and a long one."""

from __future__ import annotations

import time

from bench.common import QUEUE
from workers.celery_app import celery_app
from workers.runtime.base import BaseTaskWithRetry

__all__ = ["QUEUE", "noop", "sleep"]


# On the base every platform task has: the claim before running, retries.
@celery_app.task(name="bench.noop", base=BaseTaskWithRetry)
def noop() -> float:
    return time.time()


# A long task (an LLM reply's seconds), for the prefetch bench.
@celery_app.task(name="bench.sleep", base=BaseTaskWithRetry)
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()
